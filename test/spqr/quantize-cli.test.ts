import { spawnSync } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { openCheckpoint } from "../../converters/open.js";
import type { PackedSpqr } from "../../converters/checkpoint.js";
import { paperBitsPerWeight } from "../../formats/spqr/types.js";
import { CLI, SHARED_DIR, sharedModel, tempDir } from "../helpers/paths.js";

/**
 * `lmpack quantize --method spqr` end to end on tinystories-656K (embedding-proxy Hessians):
 * every decoder linear becomes a SpQR layer with about 1–3 % outliers and reports its Hessian
 * error; the HF output and the .lmpack output hold the same layers (the container converts to a
 * byte-identical HF file); the run is deterministic; wrong targets and options are refused.
 */
const test = suite("spqr: quantize CLI");

function lmpack(cwd: string, ...args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", cwd, env: { ...process.env, NO_COLOR: "1", LMPACK_SHARED: SHARED_DIR } });
}

test("quantize → hf-spqr and → .lmpack agree byte for byte; layers report errors and outliers", async () => {
  const work = await tempDir();
  try {
    const model = sharedModel("tinystories-656K");
    const hf = lmpack(work.path, "quantize", model, "--method", "spqr", "--hessians", "embedding-proxy", "--to", "hf-spqr", "--out", "q", "--json");
    assert.is(hf.status, 0, hf.stderr);
    const report = JSON.parse(hf.stdout) as { layers: { name: string; outlierShare: number; bitsPerWeight: number; relativeOutputError: number }[] };
    assert.is(report.layers.length, 14);
    for (const l of report.layers) {
      assert.ok(l.outlierShare > 0.005 && l.outlierShare < 0.03, `${l.name}: ${l.outlierShare}`);
      assert.ok(l.relativeOutputError > 0 && l.relativeOutputError < 0.05, `${l.name}: output error ${l.relativeOutputError}`);
    }
    const checkpoint = await openCheckpoint(join(work.path, "q"));
    const layers = checkpoint.tensors.filter((t) => t.packed?.representation === "spqr");
    assert.is(layers.length, 14);
    for (const t of layers) {
      const p = t.packed as PackedSpqr;
      const r = report.layers.find((l) => l.name === t.name)!;
      assert.is(p.outlierCount, Math.round(r.outlierShare * p.outFeatures * p.inFeatures), t.name);
      assert.ok(Math.abs(paperBitsPerWeight({ ...p }) - r.bitsPerWeight) < 1e-12, t.name);
    }
    await checkpoint.close();
    for (const args of [["--to", "lmpack", "--out", "q.lmpack"]]) assert.is(lmpack(work.path, "quantize", model, "--method", "spqr", "--hessians", "embedding-proxy", ...args).status, 0);
    assert.is(lmpack(work.path, "convert", "q.lmpack", "--to", "hf-spqr", "--out", "back").status, 0);
    const [a, b] = await Promise.all([readFile(join(work.path, "q", "model.safetensors")), readFile(join(work.path, "back", "model.safetensors"))]);
    assert.ok(a.equals(b), "quantize --to lmpack then convert --to hf-spqr gives the same file as quantize --to hf-spqr");
  } finally {
    await work.cleanup();
  }
});

test("refusals: no Hessians, a 4-bit request, an integer target", async () => {
  const work = await tempDir();
  try {
    const model = sharedModel("tinystories-656K");
    for (const args of [["--to", "hf-spqr"], ["--hessians", "embedding-proxy", "--bits", "4", "--to", "hf-spqr"], ["--hessians", "embedding-proxy", "--to", "hf-gptq"]]) {
      const r = lmpack(work.path, "quantize", model, "--method", "spqr", ...args, "--out", "x");
      assert.is(r.status, 1, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, /BAD_ARGUMENT/);
    }
  } finally {
    await work.cleanup();
  }
});

test.run();
