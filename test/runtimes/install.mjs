#!/usr/bin/env node
// Installs the outside runtimes that judge lmpack's exports into .runtimes/ (git-ignored), once:
// node-llama-cpp with only its prebuilt linux-x64 binary (85 MB instead of 725 MB with the CUDA
// and Vulkan builds; ../shared/ref/gguf-onnx.md §2.2). They are kept out of package.json because
// `npm ci --omit=optional` would also drop TypeScript's native binary. Needs the npm registry the
// first time; afterwards it is a no-op. Run by `npm test` (pretest) and `npm run runtimes`.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const prefix = join(root, ".runtimes");
const PACKAGES = { "node-llama-cpp": "3.22.1", "@node-llama-cpp/linux-x64": "3.22.1" };

const installed = (name, version) => {
  const manifest = join(prefix, "node_modules", name, "package.json");
  return existsSync(manifest) && JSON.parse(readFileSync(manifest, "utf8")).version === version;
};
const missing = Object.entries(PACKAGES).filter(([name, version]) => !installed(name, version));
if (missing.length > 0 && process.platform === "linux" && process.arch === "x64") {
  const npm = process.platform === "win32" ? "npm.cmd" : "npm";
  console.error(`installing ${missing.map(([n, v]) => `${n}@${v}`).join(", ")} into .runtimes/`);
  execFileSync(npm, ["install", "--no-save", "--no-package-lock", "--omit=optional", "--no-audit", "--no-fund", "--prefix", prefix, ...Object.entries(PACKAGES).map(([n, v]) => `${n}@${v}`)], { stdio: ["ignore", "ignore", "inherit"] });
}
