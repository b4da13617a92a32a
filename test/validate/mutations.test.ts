import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { exportLmpack } from "../../converters/lmpack/export.js";
import { exportOnnxLayers } from "../../converters/onnx/export-per-layer.js";
import { openCheckpoint } from "../../converters/open.js";
import { validatePath } from "../../converters/validate/index.js";
import { mulberry32 } from "../helpers/prng.js";
import { SHARED_DIR, sharedModel, tempDir } from "../helpers/paths.js";

/**
 * Seeded mutations of the structural part of one file per layout: whatever the bytes,
 * `validatePath --deep` returns a report (it never throws), every finding is typed (no
 * READER_CRASH: no reader fell over with an untyped error), and every finding names the mutant.
 *
 *   LMPACK_FUZZ_SEED=<u32> LMPACK_VALIDATE_MUTANTS=<n per layout> (default 12)
 */
const test = suite("validate: seeded mutations never crash the validator");

const SEED = Number(process.env["LMPACK_FUZZ_SEED"] ?? 20251123);
const MUTANTS = Number(process.env["LMPACK_VALIDATE_MUTANTS"] ?? 12);

let work: Awaited<ReturnType<typeof tempDir>>;
const originals = new Map<string, { path: string; headerBytes: number }>();
test.before(async () => {
  work = await tempDir("lmpack-validate-mutants-");
  const vptq = await openCheckpoint(join(SHARED_DIR, "checkpoints", "tinystories-656K-vptq"));
  const lmpack = join(work.path, "vptq.lmpack");
  await exportLmpack(vptq, lmpack);
  await vptq.close();
  const gptq = await openCheckpoint(join(SHARED_DIR, "checkpoints", "tinystories-656K-gptq-4bit"));
  await exportOnnxLayers(gptq, join(work.path, "layers"));
  await gptq.close();
  const safetensors = join(sharedModel("tinystories-656K"), "model.safetensors");
  // Mutations land in the part of each file that structure lives in: headers, infos, trailers.
  originals.set("safetensors", { path: safetensors, headerBytes: 8 + Number((await readFile(safetensors)).readBigUInt64LE(0)) });
  originals.set("gguf", { path: join(SHARED_DIR, "checkpoints", "gguf", "tinystories-656K-q8_0.gguf"), headerBytes: 64 * 1024 });
  originals.set("lmpack", { path: lmpack, headerBytes: -16 * 1024 });
  originals.set("onnx", { path: join(work.path, "layers", "model.layers.0.mlp.up_proj.onnx"), headerBytes: 4096 });
});
test.after(() => work.cleanup());

for (const layout of ["safetensors", "gguf", "lmpack", "onnx"]) {
  test(`${layout}: ${MUTANTS} mutants, each validated without a crash`, async () => {
    const { path, headerBytes } = originals.get(layout)!;
    const clean = await readFile(path);
    const rng = mulberry32(SEED ^ layout.length);
    const extension = path.slice(path.lastIndexOf("."));
    for (let i = 0; i < MUTANTS; i++) {
      const bytes = Buffer.from(clean);
      // Negative: a window at the end of the file (the lmpack header and trailer live there).
      const window = Math.min(Math.abs(headerBytes), bytes.length);
      const start = headerBytes < 0 ? bytes.length - window : 0;
      const flips = 1 + Math.floor(rng() * 4);
      for (let f = 0; f < flips; f++) bytes[start + Math.floor(rng() * window)] = Math.floor(rng() * 256);
      const mutant = join(work.path, `${layout}-${i}${extension}`);
      await writeFile(mutant, bytes);
      const report = await validatePath(mutant, { deep: true });
      const crashes = report.findings.filter((f) => f.code === "READER_CRASH");
      assert.equal(crashes, [], `mutant ${i} of ${layout} (seed ${SEED})`);
      for (const f of report.findings) assert.ok(f.file.startsWith(work.path), `finding names a file of the checkpoint: ${JSON.stringify(f)}`);
    }
  });
}

test.run();
