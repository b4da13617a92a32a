import { spawnSync } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { openCheckpoint } from "../../converters/open.js";
import type { PackedVptq } from "../../converters/checkpoint.js";
import { CLI, SHARED_DIR, sharedModel, tempDir } from "../helpers/paths.js";

/**
 * `lmpack quantize --method vptq` end to end on tinystories-656K (embedding-proxy Hessians):
 * every decoder linear becomes a VPTQ layer with the asked codebooks and reports its error and
 * bits; the run is deterministic (two runs, and the .lmpack route, give the same HF file);
 * index widths the CUDA kernels reject are refused for --to hf-vptq but kept in .lmpack.
 */
const test = suite("vptq: quantize CLI");

function lmpack(cwd: string, ...args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", cwd, env: { ...process.env, NO_COLOR: "1", LMPACK_SHARED: SHARED_DIR } });
}

const VQ = ["--method", "vptq", "--hessians", "embedding-proxy", "--vector-len", "8", "--centroids", "256", "--res-centroids", "16", "--kmeans-iters", "20"];

test("quantize → hf-vptq twice and → .lmpack → hf-vptq give the same file; layers carry the asked codebooks", async () => {
  const work = await tempDir();
  try {
    const model = sharedModel("tinystories-656K");
    const first = lmpack(work.path, "quantize", model, ...VQ, "--to", "hf-vptq", "--out", "a", "--json");
    assert.is(first.status, 0, first.stderr);
    const report = JSON.parse(first.stdout) as { layers: { name: string; relativeOutputError: number; indexBitsPerWeight: number }[] };
    assert.is(report.layers.length, 14);
    for (const l of report.layers) {
      assert.ok(l.relativeOutputError > 0 && l.relativeOutputError < 0.5, `${l.name}: ${l.relativeOutputError}`);
      assert.ok(Math.abs(l.indexBitsPerWeight - 1.5) < 1e-9, `${l.name}: (8 + 4) / 8 index bits`);
    }
    assert.is(lmpack(work.path, "quantize", model, ...VQ, "--to", "hf-vptq", "--out", "b").status, 0);
    assert.is(lmpack(work.path, "quantize", model, ...VQ, "--to", "lmpack", "--out", "c.lmpack").status, 0);
    assert.is(lmpack(work.path, "convert", "c.lmpack", "--to", "hf-vptq", "--out", "c").status, 0);
    const [a, b, c] = await Promise.all(["a", "b", "c"].map((d) => readFile(join(work.path, d, "model.safetensors"))));
    assert.ok(a!.equals(b!), "same seed, same bytes");
    assert.ok(a!.equals(c!), "the .lmpack route gives the same file");
    const checkpoint = await openCheckpoint(join(work.path, "a"));
    const layers = checkpoint.tensors.filter((t) => t.packed?.representation === "vptq");
    assert.is(layers.length, 14);
    for (const t of layers) {
      const p = (t.packed as PackedVptq).params;
      assert.equal([p.vectorLen, p.numCentroids, p.numResCentroids, p.enableNorm, p.enablePerm], [8, 256, 16, true, true], t.name);
    }
    await checkpoint.close();
  } finally {
    await work.cleanup();
  }
});

test("9-bit main indices: refused for hf-vptq (the CUDA kernels lack them), kept in .lmpack", async () => {
  const work = await tempDir();
  try {
    const model = sharedModel("tinystories-656K");
    const args = ["--method", "vptq", "--hessians", "embedding-proxy", "--vector-len", "8", "--centroids", "512", "--kmeans-iters", "5"];
    const refused = lmpack(work.path, "quantize", model, ...args, "--to", "hf-vptq", "--out", "x");
    assert.is(refused.status, 1, refused.stderr);
    assert.match(refused.stderr, /BAD_ARGUMENT.*9-bit main indices/);
    assert.is(lmpack(work.path, "quantize", model, ...args, "--to", "lmpack", "--out", "x.lmpack").status, 0);
    const without = lmpack(work.path, "quantize", model, "--method", "vptq", "--to", "hf-vptq", "--out", "y");
    assert.is(without.status, 1);
    assert.match(without.stderr, /needs --hessians/);
  } finally {
    await work.cleanup();
  }
});

test.run();
