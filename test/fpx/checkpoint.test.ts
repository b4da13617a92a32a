import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { quantizeFpxCheckpoint } from "../../converters/fpx/quantize-checkpoint.js";
import type { Checkpoint, PackedFpx } from "../../converters/checkpoint.js";
import { openCheckpoint } from "../../converters/open.js";
import { exportSafetensors } from "../../converters/safetensors/export.js";
import { convertFloatBytes } from "../../formats/dense/convert.js";
import { fpxFormat } from "../../formats/fpx/format.js";
import { quantizeFpx } from "../../formats/fpx/quantize.js";
import { dequantizeFpx } from "../../formats/fpx/reference.js";
import type { CodesFrom } from "../../formats/fpx/types.js";
import type { PackedArray } from "../../formats/packed-array.js";
import { CLI, SHARED_DIR, sharedModel, tempDir } from "../helpers/paths.js";
import { writeHfDir, type ArraySpec } from "../helpers/packed-checkpoint.js";
import { mulberry32 } from "../helpers/prng.js";
import { readAllArrays } from "../helpers/safetensors-arrays.js";

/**
 * FP6 checkpoints end to end against ../shared/checkpoints/tinystories-656K-fp6 (torchao's bytes):
 * dense export equals reference-dense; `quantize --codes-from f32-scale` reproduces the checkpoint
 * tensor for tensor and its config; the default stored-scale codes are never worse per element;
 * hf-fp6 ↔ lmpack ↔ hf-fp6 and checkpoint → hf-fp6 are lossless; inspect reports the FP6 summary;
 * impossible targets and formats are refused; linears off the 64x64 tile are kept in f16.
 * Every tensor comparison is on raw bytes and names the first differing byte.
 */
const FP6 = join(SHARED_DIR, "checkpoints", "tinystories-656K-fp6");
const SOURCE = sharedModel("tinystories-656K");
const E3M2 = fpxFormat(3, 2);
const test = suite("fpx: checkpoints, CLI and round trips");

let work: Awaited<ReturnType<typeof tempDir>>;
test.before(async () => {
  work = await tempDir("lmpack-fpx-");
});
test.after(() => work.cleanup());

function lmpack(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", cwd: work.path, env: { ...process.env, NO_COLOR: "1" } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

type Tensors = Map<string, PackedArray>;
const tensorsOf = async (path: string): Promise<Tensors> => (await readAllArrays(path)).arrays;
const readJson = async (path: string) => JSON.parse(await readFile(path, "utf8")) as Record<string, unknown>;

/** Same dtype, shape and bytes; the message names the first differing byte. */
function assertSameTensor(actual: PackedArray | undefined, expected: PackedArray, what: string): void {
  assert.ok(actual !== undefined, `${what}: ${expected.name} is missing`);
  assert.is(actual!.dtype, expected.dtype, `${what}: ${expected.name} dtype`);
  assert.equal(actual!.shape, expected.shape, `${what}: ${expected.name} shape`);
  assertSameBytes(actual!.bytes, expected.bytes, `${what}: ${expected.name}`);
}

function assertSameBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  assert.is(actual.length, expected.length, `${what}: byte length`);
  const at = actual.findIndex((b, i) => b !== expected[i]);
  assert.is(at, -1, `${what}: first differing byte at ${at}`);
}

/** Every tensor of `expected` appears byte-identical in `actual`, and nothing else does. */
function assertSameTensorSet(actual: Tensors, expected: Tensors, what: string): void {
  assert.equal([...actual.keys()].sort(), [...expected.keys()].sort(), `${what}: tensor names`);
  for (const t of expected.values()) assertSameTensor(actual.get(t.name), t, what);
}

const once = <T>(make: () => Promise<T>): (() => Promise<T>) => {
  let made: Promise<T> | undefined;
  return () => (made ??= make());
};

/** `quantize --codes-from f32-scale --to hf-fp6` of the fp32 source (shared by later tests). */
const torchaoCompatible = once(async () => {
  const out = join(work.path, "f32-scale");
  const r = lmpack("quantize", SOURCE, "--method", "fp6", "--codes-from", "f32-scale", "--to", "hf-fp6", "--out", out, "--json");
  assert.is(r.status, 0, r.stderr);
  return out;
});

test("checkpoint → dense f32: 14 layers equal reference-dense, 6 others pass through, no quantization_config", async () => {
  const out = join(work.path, "dense");
  const checkpoint = await openCheckpoint(FP6);
  await exportSafetensors(checkpoint, out, { dtype: "F32" });
  await checkpoint.close();
  const [dense, reference, stored] = await Promise.all([join(out, "model.safetensors"), join(FP6, "reference-dense.safetensors"), join(FP6, "model.safetensors")].map(tensorsOf));
  assert.is(reference!.size, 14);
  for (const t of reference!.values()) assertSameTensor(dense!.get(t.name), t, "dense vs reference-dense");
  const passthrough = [...dense!.keys()].filter((name) => !reference!.has(name));
  assert.is(passthrough.length, 6);
  for (const name of passthrough) assertSameTensor(dense!.get(name), stored!.get(name)!, "dense vs checkpoint");
  assert.is(dense!.size, 20);
  const config = await readJson(join(out, "config.json"));
  assert.is(config["quantization_config"], undefined, "a dense export drops quantization_config");
});

test("quantize --codes-from f32-scale --to hf-fp6 reproduces all 34 checkpoint tensors and its config", async () => {
  const out = await torchaoCompatible();
  const [mine, golden] = await Promise.all([tensorsOf(join(out, "model.safetensors")), tensorsOf(join(FP6, "model.safetensors"))]);
  assert.is(golden.size, 34);
  assertSameTensorSet(mine, golden, "f32-scale vs checkpoint");
  assert.equal(await readJson(join(out, "config.json")), await readJson(join(FP6, "config.json")));
});

test("default stored-scale codes: per element never farther from W than torchao's, per layer no larger squared error", async () => {
  const source = await openCheckpoint(SOURCE);
  const dequantized = async (codesFrom: CodesFrom) => {
    const layers = new Map<string, Float32Array>();
    for (const t of quantizeFpxCheckpoint(source, { format: E3M2, codesFrom }).checkpoint.tensors) {
      if (t.packed !== undefined) layers.set(t.name, dequantizeFpx(await (t.packed as PackedFpx).load()));
    }
    return layers;
  };
  const [stored, reference] = [await dequantized("stored-scale"), await dequantized("f32-scale")];
  assert.is(stored.size, 14);
  let strictlyBetter = 0;
  for (const [name, deqStored] of stored) {
    const entry = source.tensors.find((t) => t.name === name)!;
    assert.is(entry.dtype, "F32");
    const w = new Float32Array((await entry.read()).slice().buffer);
    const deqF32 = reference.get(name)!;
    let [sseStored, sseF32] = [0, 0];
    for (let i = 0; i < w.length; i++) {
      const [eStored, eF32] = [Math.abs(w[i]! - deqStored[i]!), Math.abs(w[i]! - deqF32[i]!)];
      if (eStored > eF32) assert.unreachable(`${name}[${i}]: stored-scale error ${eStored} > f32-scale error ${eF32} (w = ${w[i]})`);
      if (eStored < eF32) strictlyBetter++;
      sseStored += eStored * eStored;
      sseF32 += eF32 * eF32;
    }
    assert.ok(sseStored <= sseF32, `${name}: squared error ${sseStored} > ${sseF32}`);
  }
  await source.close();
  assert.ok(strictlyBetter > 0, "stored-scale should beat torchao's rounding somewhere in the model");
  console.log(`  stored-scale strictly closer than f32-scale on ${strictlyBetter} of 393216 weights`);
});

test("hf-fp6 → .lmpack → hf-fp6 keeps every tensor; the .lmpack densifies to reference-dense", async () => {
  const first = await torchaoCompatible();
  const container = join(work.path, "trip.lmpack");
  const back = join(work.path, "trip-hf-fp6");
  const dense = join(work.path, "trip-dense");
  for (const args of [[first, "--to", "lmpack", "--out", container], [container, "--to", "hf-fp6", "--out", back], [container, "--to", "safetensors", "--dtype", "f32", "--out", dense]]) {
    const r = lmpack("convert", ...args);
    assert.is(r.status, 0, `convert ${args.join(" ")}: ${r.stderr}`);
  }
  assertSameTensorSet(await tensorsOf(join(back, "model.safetensors")), await tensorsOf(join(first, "model.safetensors")), "hf-fp6 → lmpack → hf-fp6");
  const [mine, reference] = await Promise.all([tensorsOf(join(dense, "model.safetensors")), tensorsOf(join(FP6, "reference-dense.safetensors"))]);
  for (const t of reference.values()) assertSameTensor(mine.get(t.name), t, "lmpack → dense vs reference-dense");
});

test("checkpoint → hf-fp6 (to its own layout) keeps every tensor byte-identical", async () => {
  const out = join(work.path, "self");
  const r = lmpack("convert", FP6, "--to", "hf-fp6", "--out", out);
  assert.is(r.status, 0, r.stderr);
  assertSameTensorSet(await tensorsOf(join(out, "model.safetensors")), await tensorsOf(join(FP6, "model.safetensors")), "checkpoint → hf-fp6");
});

test("inspect --json: fp6_tc, e3m2, 14 packed tensors, 6 + 16/in effective bits per weight", async () => {
  const r = lmpack("inspect", FP6, "--json");
  assert.is(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout) as { quantization: { method: string; format: string; bits: number; packedTensors: number; packedParameters: number; effectiveBitsPerWeight: number }; tensors: { name: string; quant?: { format?: string } }[] };
  const q = report.quantization;
  assert.is(q.method, "fp6_tc");
  assert.is(q.format, "e3m2");
  assert.is(q.bits, 6);
  assert.is(q.packedTensors, 14);
  assert.is(q.packedParameters, 393216);
  // Per layer 6 + 16/in (one fp16 scale per row), weighted by parameters (down_proj has in = 384).
  const reference = await tensorsOf(join(FP6, "reference-dense.safetensors"));
  let [bits, params] = [0, 0];
  for (const t of reference.values()) {
    const [out, inFeatures] = t.shape as [number, number];
    bits += (6 + 16 / inFeatures) * out * inFeatures;
    params += out * inFeatures;
  }
  assert.ok(Math.abs(q.effectiveBitsPerWeight - bits / params) < 1e-9, `effective bits ${q.effectiveBitsPerWeight}, expected ${bits / params}`);
  assert.ok(Math.abs(q.effectiveBitsPerWeight - 6.104) < 0.001, `effective bits ${q.effectiveBitsPerWeight}`);
  assert.is(report.tensors.filter((t) => t.quant?.format === "e3m2").length, 14);
});

test("refusals: FP6 layers → hf-gptq, --method fp6 --to hf-gptq, --format e9m9", () => {
  const gptq = join(work.path, "refused-gptq");
  let r = lmpack("convert", FP6, "--to", "hf-gptq", "--out", gptq);
  assert.is(r.status, 2, r.stderr);
  assert.match(r.stderr, /UNSUPPORTED_TARGET/);
  assert.match(r.stderr, /tensor "model\.layers\.\d\.(self_attn|mlp)\.\w+_proj\.weight"/);
  assert.not.ok(existsSync(gptq), "no output after a refusal");
  r = lmpack("quantize", SOURCE, "--method", "fp6", "--to", "hf-gptq", "--out", join(work.path, "refused-q"));
  assert.is(r.status, 1, r.stderr);
  assert.match(r.stderr, /BAD_ARGUMENT/);
  r = lmpack("quantize", SOURCE, "--method", "fp6", "--format", "e9m9", "--to", "hf-fp6", "--out", join(work.path, "refused-e9m9"));
  assert.is(r.status, 1, r.stderr);
  assert.match(r.stderr, /BAD_ARGUMENT.*e9m9/);
  assert.not.ok(existsSync(join(work.path, "refused-q")) || existsSync(join(work.path, "refused-e9m9")));
});

test("linears off the 64x64 tile are kept in f16 and listed; tile-shaped ones are packed", async () => {
  const [hidden, inter, vocab] = [128, 100, 64];
  const rng = mulberry32(656);
  const f32 = (name: string, shape: number[], spread = 0.1): ArraySpec => {
    const values = Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => (rng() - 0.5) * spread);
    return { name, dtype: "F32", shape, bytes: new Uint8Array(values.buffer) };
  };
  const p = "model.layers.0.";
  const arrays = [
    f32("model.embed_tokens.weight", [vocab, hidden]),
    f32(`${p}input_layernorm.weight`, [hidden], 2),
    ...["q", "k", "v", "o"].map((x) => f32(`${p}self_attn.${x}_proj.weight`, [hidden, hidden])),
    f32(`${p}post_attention_layernorm.weight`, [hidden], 2),
    f32(`${p}mlp.gate_proj.weight`, [inter, hidden]),
    f32(`${p}mlp.up_proj.weight`, [inter, hidden]),
    f32(`${p}mlp.down_proj.weight`, [hidden, inter]),
    f32("model.norm.weight", [hidden], 2),
    f32("lm_head.weight", [vocab, hidden]),
  ];
  const config = { architectures: ["LlamaForCausalLM"], model_type: "llama", hidden_size: hidden, intermediate_size: inter, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 2, vocab_size: vocab, tie_word_embeddings: false, torch_dtype: "float32" };
  const src = await writeHfDir(join(work.path, "off-tile-src"), config, arrays);
  const out = join(work.path, "off-tile-fp6");
  const r = lmpack("quantize", src, "--method", "fp6", "--to", "hf-fp6", "--out", out, "--json");
  assert.is(r.status, 0, r.stderr);
  const summary = JSON.parse(r.stdout) as { layers: { name: string }[]; kept: { name: string; shape: number[]; keptDtype: string }[] };
  const offTile = [`${p}mlp.gate_proj.weight`, `${p}mlp.up_proj.weight`, `${p}mlp.down_proj.weight`];
  assert.equal(summary.kept.map((k) => k.name).sort(), [...offTile].sort());
  assert.ok(summary.kept.every((k) => k.keptDtype === "F16"));
  assert.is(summary.layers.length, 4);
  const written = await tensorsOf(join(out, "model.safetensors"));
  for (const a of arrays) {
    const module = a.name.slice(0, -".weight".length);
    if (offTile.includes(a.name)) {
      assertSameTensor(written.get(a.name), { name: a.name, dtype: "F16", shape: a.shape, bytes: convertFloatBytes(a.bytes, "F32", "F16"), file: "", byteOffset: 0 }, "kept layer = f16(source)");
    } else if (/_proj\.weight$/.test(a.name)) {
      assert.not.ok(written.has(a.name), `${a.name} should be stored packed`);
      const expected = quantizeFpx(new Float32Array(a.bytes.slice().buffer), hidden, hidden, { format: E3M2, codesFrom: "stored-scale" });
      assertSameTensor(written.get(`${module}.weight_packed`), { name: `${module}.weight_packed`, dtype: "U8", shape: [hidden, (hidden * 6) / 8], bytes: expected.packed, file: "", byteOffset: 0 }, "packed layer");
      assertSameTensor(written.get(`${module}.weight_scale`), { name: `${module}.weight_scale`, dtype: "F16", shape: [hidden], bytes: new Uint8Array(expected.scales.buffer), file: "", byteOffset: 0 }, "packed layer");
    } else {
      assertSameTensor(written.get(a.name), { ...a, file: "", byteOffset: 0 }, "pass-through");
    }
  }
  assert.is(written.size, arrays.length + 4);
  const quant = (await readJson(join(out, "config.json")))["quantization_config"] as { modules_to_not_convert: string[] };
  for (const name of offTile) assert.ok(quant.modules_to_not_convert.includes(name.slice(0, -".weight".length)), `modules_to_not_convert lacks ${name}`);
  // And the directory reads back: 4 fpx layers, the kept ones dense F16.
  const back: Checkpoint = await openCheckpoint(out);
  assert.is(back.tensors.filter((t) => t.packed?.representation === "fpx").length, 4);
  assert.equal(back.tensors.filter((t) => offTile.includes(t.name)).map((t) => t.dtype), ["F16", "F16", "F16"]);
  await back.close();
});

test.run();
