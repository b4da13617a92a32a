import { copyFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { exportLmpack } from "../../converters/lmpack/export.js";
import { exportOnnxDecoder } from "../../converters/onnx/export-decoder.js";
import { openCheckpoint } from "../../converters/open.js";
import { SafetensorsFile } from "../../converters/safetensors/reader.js";
import { FIXTURE_MODEL, SHARED_DIR, sharedModel, tempDir } from "../helpers/paths.js";
import { expectClean, lmpackCli, patchBytes, tensorAt, u32le } from "./plant.js";

/**
 * Every clean checkpoint validates clean, --deep included: the shared quantized checkpoints
 * (also against their base model), the shared GGUF files, the shared dense models, and an
 * .lmpack and ONNX exports made here with lmpack's CLI and library. Then the CLI contract:
 * exit 0 and a VALID verdict when clean, exit 2 with the findings (table or --json) when not.
 */
const test = suite("validate: clean checkpoints and the CLI");

let work: Awaited<ReturnType<typeof tempDir>>;
test.before(async () => {
  work = await tempDir("lmpack-validate-clean-");
});
test.after(() => work.cleanup());

const QUANTIZED = ["fp6", "gptq-4bit", "spqr", "vptq"].map((k) => join(SHARED_DIR, "checkpoints", `tinystories-656K-${k}`));
const BASE = sharedModel("tinystories-656K");

test("the shared quantized checkpoints, with --deep and against their base model", async () => {
  for (const dir of QUANTIZED) {
    const report = await expectClean(dir, { deep: true, base: BASE });
    assert.is(report.layout, "hf-safetensors");
    assert.is(report.tensorsChecked, 20, dir);
  }
});

test("the shared GGUF files and their dequantized safetensors, with --deep", async () => {
  const dir = join(SHARED_DIR, "checkpoints", "gguf");
  const files = (await readdir(dir)).filter((n) => n.endsWith(".gguf") || n.endsWith(".safetensors"));
  assert.is(files.length, 4);
  for (const name of files) await expectClean(join(dir, name), { deep: true });
  await expectClean(join(dir, "tinystories-656K-q8_0.gguf"), { base: BASE });
});

test("the shared dense models (HF folders and the GGUF v1 of stories260K), with --deep", async () => {
  for (const name of ["docs-llama-16m", "lmpack-fixture-2m", "tinystories-656K"]) await expectClean(sharedModel(name), { deep: true });
  await expectClean(join(sharedModel("stories260K"), "stories260K-f32.gguf"), { deep: true });
});

test("an .lmpack made with the CLI and one of each packed representation made with the library", async () => {
  const fixture = join(work.path, "fixture.lmpack");
  const r = lmpackCli("convert", FIXTURE_MODEL, "--to", "lmpack", "--out", fixture);
  assert.is(r.code, 0, r.stderr);
  assert.is((await expectClean(fixture, { deep: true })).layout, "lmpack");
  for (const dir of QUANTIZED) {
    const out = join(work.path, `${dir.split("-").pop()}.lmpack`);
    const checkpoint = await openCheckpoint(dir);
    await exportLmpack(checkpoint, out);
    await checkpoint.close();
    await expectClean(out, { deep: true, base: BASE });
  }
});

test("ONNX exports: the decoder with MatMulNBits through the CLI, per-layer models, and external data through the library", async () => {
  const gptq = QUANTIZED[1]!;
  const decoder = join(work.path, "onnx-gptq");
  const perLayer = join(work.path, "onnx-gptq-layers");
  for (const args of [["--out", decoder], ["--per-layer", "--out", perLayer]]) {
    const r = lmpackCli("convert", gptq, "--to", "onnx", ...args);
    assert.is(r.code, 0, r.stderr);
  }
  assert.is((await expectClean(decoder, { deep: true })).layout, "onnx");
  assert.ok((await expectClean(perLayer, { deep: true })).tensorsChecked >= 28);
  const vptq = await openCheckpoint(QUANTIZED[3]!);
  const external = join(work.path, "onnx-vptq-external");
  await exportOnnxDecoder(vptq, external, { externalData: "always" });
  await vptq.close();
  await expectClean(external, { deep: true });
});

test("CLI: exit 0 and a VALID verdict on a clean checkpoint; --json {ok, findings, packedBitsPerWeight}", async () => {
  const gptq = QUANTIZED[1]!;
  // The true storage cost, from the header: every packed array's bytes over the layers' weights (N from qweight, K from g_idx).
  const header = await SafetensorsFile.open(join(gptq, "model.safetensors"));
  const parts = header.tensors.filter((t) => /\.(qweight|qzeros|scales|g_idx)$/.test(t.name));
  const weights = header.tensors.filter((t) => t.name.endsWith(".qweight")).reduce((sum, q) => sum + q.shape[1]! * header.tensor(q.name.replace(/qweight$/, "g_idx")).shape[0]!, 0);
  const expectedBits = (8 * parts.reduce((sum, t) => sum + t.byteLength, 0)) / weights;
  await header.close();
  const text = lmpackCli("validate", gptq, "--deep");
  assert.is(text.code, 0, text.stderr);
  assert.match(text.stdout, new RegExp(`^verdict: VALID \\(hf-safetensors, 20 tensors, packed linears ${expectedBits.toFixed(3)} bits/weight stored, deep\\)$`, "m"));
  const json = lmpackCli("validate", gptq, "--json");
  assert.is(json.code, 0, json.stderr);
  const body = JSON.parse(json.stdout) as { ok: boolean; findings: unknown[]; packedBitsPerWeight: number };
  assert.is(body.ok, true);
  assert.equal(body.findings, []);
  assert.ok(Math.abs(body.packedBitsPerWeight - expectedBits) < 1e-12, `${body.packedBitsPerWeight} vs ${expectedBits}`);
});

test("CLI: exit 2 with every finding, as a table and as --json, naming file, tensor and byte", async () => {
  const path = join(work.path, "two-nans.safetensors");
  await copyFile(join(BASE, "model.safetensors"), path);
  const names = ["model.layers.0.mlp.up_proj.weight", "model.layers.1.self_attn.o_proj.weight"];
  const at = await Promise.all(names.map(async (n) => (await tensorAt(path, n)).byteOffset + 4 * 10));
  for (const offset of at) await patchBytes(path, offset, u32le(0x7f800000));
  const structural = lmpackCli("validate", path);
  assert.is(structural.code, 0, "NaN is a --deep finding");
  const text = lmpackCli("validate", path, "--deep");
  assert.is(text.code, 2, text.stderr);
  for (const [i, name] of names.entries()) assert.match(text.stdout, new RegExp(`ERROR\\s+NONFINITE_VALUE\\s+${path}\\s+${name.replace(/\./g, "\\.")}\\s+${at[i]}\\s`));
  assert.match(text.stdout, /^verdict: INVALID \(2 errors; safetensors, 20 tensors, deep\)$/m);
  const json = lmpackCli("validate", path, "--deep", "--json");
  assert.is(json.code, 2);
  const body = JSON.parse(json.stdout) as { ok: boolean; findings: { code: string; file: string; tensor: string; byteOffset: number }[] };
  assert.is(body.ok, false);
  assert.equal(body.findings.map((f) => [f.code, f.file, f.tensor, f.byteOffset]), names.map((n, i) => ["NONFINITE_VALUE", path, n, at[i]]));
});

test("CLI: a missing path is a finding (exit 2), an unknown option a usage error (exit 1)", () => {
  const missing = lmpackCli("validate", join(work.path, "nope"), "--json");
  assert.is(missing.code, 2);
  assert.is((JSON.parse(missing.stdout) as { findings: { code: string }[] }).findings[0]!.code, "NOT_FOUND");
  assert.is(lmpackCli("validate", BASE, "--deeep").code, 1);
});

test.run();
