#!/usr/bin/env node
// Compiles every kernels/<format>/<format>.cu to dist/kernels/<format>.fatbin with nvcc: SASS for
// sm_80, sm_86, sm_89 and sm_90 (A100, RTX 30xx/A10, RTX 40xx/L4, H100/H200) plus compute_90 PTX,
// which the driver compiles for newer GPUs. Run by `npm run build` after tsc. Without nvcc it
// prints why and leaves the fatbins out (the CPU references need none); with
// LMPACK_REQUIRE_NVCC=1 (CI) a missing nvcc or a compile error fails the build.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = join(root, "dist", "kernels");
const required = process.env.LMPACK_REQUIRE_NVCC === "1";
const ARCHES = ["-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_86,code=sm_86", "-gencode", "arch=compute_89,code=sm_89", "-gencode", "arch=compute_90,code=sm_90", "-gencode", "arch=compute_90,code=compute_90"];

const nvcc = process.env.NVCC ?? "nvcc";
if (spawnSync(nvcc, ["--version"], { encoding: "utf8" }).status !== 0) {
  const message = `kernels: ${nvcc} not found, GPU kernels not built (the CPU references need none)`;
  if (required) {
    console.error(`${message}; LMPACK_REQUIRE_NVCC=1`);
    process.exit(1);
  }
  console.error(message);
  process.exit(0);
}
mkdirSync(out, { recursive: true });
let failed = 0;
for (const format of readdirSync(join(root, "kernels"), { withFileTypes: true }).filter((d) => d.isDirectory() && d.name !== "common" && d.name !== "cuda").map((d) => d.name)) {
  const source = join(root, "kernels", format, `${format}.cu`);
  if (!existsSync(source)) continue;
  const target = join(out, `${format}.fatbin`);
  const run = spawnSync(nvcc, ["-O3", "-std=c++17", "--fatbin", "-Werror", "all-warnings", ...ARCHES, "-o", target, source], { encoding: "utf8" });
  if (run.status !== 0) {
    failed++;
    console.error(`kernels: ${format}.cu failed to compile:\n${run.stderr}`);
  }
}
process.exit(failed === 0 ? 0 : 1);
