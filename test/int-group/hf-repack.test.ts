import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import type { PackedIntGroup } from "../../converters/checkpoint.js";
import { exportHfInt } from "../../converters/int-group/export-hf.js";
import { exportLmpack } from "../../converters/lmpack/export.js";
import { openCheckpoint } from "../../converters/open.js";
import { exportSafetensors } from "../../converters/safetensors/export.js";
import { SafetensorsFile } from "../../converters/safetensors/reader.js";
import { convertFloatBytes } from "../../formats/dense/convert.js";
import { ConversionError } from "../../formats/errors.js";
import { SHARED_DIR, tempDir } from "../helpers/paths.js";
import { renamed, tinyConfig, writeHfDir } from "../helpers/packed-checkpoint.js";
import { readAllArrays } from "../helpers/safetensors-arrays.js";

const GPTQ_CHECKPOINT = join(SHARED_DIR, "checkpoints", "tinystories-656K-gptq-4bit");
const VECTORS = join(SHARED_DIR, "vectors", "gptq");
const MODULE = "model.layers.0.mlp.up_proj";
const test = suite("int-group: HF import, dense export and lossless repack");

let work: Awaited<ReturnType<typeof tempDir>>;
test.before(async () => {
  work = await tempDir();
});
test.after(() => work.cleanup());

async function same(a: string, b: string): Promise<boolean> {
  return Buffer.compare(await readFile(a), await readFile(b)) === 0;
}

test("GPTQ checkpoint → dense f32 equals reference-dense for every quantized layer; other tensors pass through", async () => {
  const out = join(work.path, "dense");
  const checkpoint = await openCheckpoint(GPTQ_CHECKPOINT);
  await exportSafetensors(checkpoint, out, { dtype: "F32" });
  await checkpoint.close();
  const [mine, reference, source] = await Promise.all([join(out, "model.safetensors"), join(GPTQ_CHECKPOINT, "reference-dense.safetensors"), join(GPTQ_CHECKPOINT, "model.safetensors")].map((p) => SafetensorsFile.open(p)));
  assert.is(reference!.tensors.length, 14);
  for (const t of reference!.tensors) assert.ok(Buffer.compare(await mine!.read(t.name), await reference!.read(t.name)) === 0, `${t.name} differs from reference-dense`);
  const passthrough = source!.tensors.filter((t) => !/\.(qweight|qzeros|scales|g_idx)$/.test(t.name));
  assert.is(passthrough.length, 6);
  for (const t of passthrough) assert.ok(Buffer.compare(await mine!.read(t.name), convertFloatBytes(await source!.read(t.name), "F16", "F32")) === 0, t.name);
  assert.is(mine!.tensors.length, 20);
  await Promise.all([mine, reference, source].map((f) => f!.close()));
  const config = JSON.parse(await readFile(join(out, "config.json"), "utf8")) as Record<string, unknown>;
  assert.is(config["quantization_config"], undefined, "a dense export drops quantization_config");
  assert.is(config["torch_dtype"], "float32");
});

test("GPTQ → AWQ → AutoRound → GPTQ, and GPTQ → .lmpack → GPTQ v2 → GPTQ, give back the same model.safetensors bytes", async () => {
  const steps: [string, (src: string, dst: string) => Promise<unknown>][] = [
    ["awq", (s, d) => withCheckpoint(s, (c) => exportHfInt(c, d, { method: "awq" }))],
    ["autoround", (s, d) => withCheckpoint(s, (c) => exportHfInt(c, d, { method: "auto-round" }))],
    ["gptq", (s, d) => withCheckpoint(s, (c) => exportHfInt(c, d, { method: "gptq" }))],
    ["container.lmpack", (s, d) => withCheckpoint(s, (c) => exportLmpack(c, d))],
    ["gptq-v2", (s, d) => withCheckpoint(s, (c) => exportHfInt(c, d, { method: "gptq", gptqFormat: "v2" }))],
    ["gptq-again", (s, d) => withCheckpoint(s, (c) => exportHfInt(c, d, { method: "gptq" }))],
  ];
  let src = GPTQ_CHECKPOINT;
  for (const [name, step] of steps) {
    const dst = join(work.path, `trip-${name}`);
    await step(src, dst);
    src = dst;
  }
  assert.ok(await same(join(work.path, "trip-gptq", "model.safetensors"), join(GPTQ_CHECKPOINT, "model.safetensors")), "via AWQ and AutoRound");
  assert.ok(await same(join(work.path, "trip-gptq-again", "model.safetensors"), join(GPTQ_CHECKPOINT, "model.safetensors")), "via the container and GPTQ v2");
  const v2 = JSON.parse(await readFile(join(work.path, "trip-gptq-v2", "config.json"), "utf8")) as { quantization_config: Record<string, unknown> };
  assert.is(v2.quantization_config["checkpoint_format"], "gptq_v2");
});

async function withCheckpoint<T>(path: string, use: (c: Awaited<ReturnType<typeof openCheckpoint>>) => Promise<T>): Promise<T> {
  const checkpoint = await openCheckpoint(path);
  try {
    return await use(checkpoint);
  } finally {
    await checkpoint.close();
  }
}

/** An HF directory holding one golden case's packed layer under MODULE. */
async function goldenDir(caseName: string, quantizationConfig: Record<string, unknown>, dirName: string): Promise<string> {
  const { arrays } = await readAllArrays(join(VECTORS, `${caseName}.safetensors`));
  return writeHfDir(join(work.path, dirName), tinyConfig(quantizationConfig), renamed(arrays, MODULE, ["qweight", "qzeros", "scales", "g_idx"]));
}

const refusals = [
  { name: "act-order → AWQ", golden: "gptq_v1_b4_g32_asym_descact", config: { quant_method: "gptq", bits: 4, group_size: 32, sym: false, desc_act: true }, method: "awq" as const, code: "NOT_REPRESENTABLE" },
  { name: "3-bit → AWQ", golden: "gptq_v1_b3_g32_sym", config: { quant_method: "gptq", bits: 3, group_size: 32, sym: true }, method: "awq" as const, code: "UNSUPPORTED_TARGET" },
  { name: "zero point 0 → GPTQ v1", golden: "autoround_v2_b4_g32_asym", config: { quant_method: "auto-round", packing_format: "auto_round", bits: 4, group_size: 32, sym: false }, method: "gptq" as const, code: "NOT_REPRESENTABLE" },
  { name: "overflowed v1 zero 16 → AutoRound v2", golden: "gptq_v1_b4_g32_asym_zero0_overflow", config: { quant_method: "gptq", bits: 4, group_size: 32, sym: false }, method: "auto-round" as const, code: "NOT_REPRESENTABLE" },
];

for (const r of refusals) {
  test(`refuses ${r.name}, naming the layer; --allow-requant requantizes and reports the error`, async () => {
    const dir = await goldenDir(r.golden, r.config, `refuse-${r.golden}-${r.method}`);
    const refusal = await withCheckpoint(dir, (c) => exportHfInt(c, join(work.path, `refused-${r.golden}-${r.method}`), { method: r.method })).then(() => undefined, (e: unknown) => e);
    assert.instance(refusal, ConversionError);
    assert.is((refusal as ConversionError).code, r.code);
    assert.is((refusal as ConversionError).tensor, `${MODULE}.weight`);
    const out = join(work.path, `requant-${r.golden}-${r.method}`);
    const reports = await withCheckpoint(dir, (c) => exportHfInt(c, out, { method: r.method, allowRequant: true }));
    assert.is(reports.length, 1);
    assert.is(reports[0]!.action, "requantized");
    // 3-bit sym → 4-bit sym RTN is exact (the 4-bit scale is half the 3-bit one); the others lose a little.
    const error = reports[0]!.relativeRmsError!;
    assert.ok(r.code === "UNSUPPORTED_TARGET" ? error === 0 : error > 0 && error < 0.2, `relative error ${error}`);
    const back = await openCheckpoint(out);
    const packed = back.tensors.find((t) => t.packed !== undefined)!.packed!;
    assert.is(packed.representation, "int-group");
    const tensor = await (packed as PackedIntGroup).load();
    await back.close();
    if (r.method === "gptq") assert.ok(tensor.zeros.every((z) => z >= 1), "v1 zeros are all storable");
    if (r.method === "awq") assert.is(tensor.params.bits, 4);
  });
}

test.run();
