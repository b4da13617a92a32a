import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { openCheckpoint } from "../../converters/open.js";
import { isLmpackError, type LmpackError } from "../../formats/errors.js";
import { SHARED_DIR, tempDir } from "../helpers/paths.js";
import { tinyConfig, writeHfDir, type ArraySpec } from "../helpers/packed-checkpoint.js";
import { readAllArrays } from "../helpers/safetensors-arrays.js";

/**
 * Malformed packed layers are refused with a typed error naming the file and tensor (and the
 * byte offset for bad values), never a crash: one row per way a GPTQ/AWQ layer can be wrong.
 */
const VECTORS = join(SHARED_DIR, "vectors", "gptq");
const MODULE = "model.layers.0.self_attn.q_proj";
const GPTQ = { quant_method: "gptq", bits: 4, group_size: 32, sym: false, checkpoint_format: "gptq" };
const AWQ = { quant_method: "awq", bits: 4, group_size: 32, zero_point: true, version: "gemm" };
const test = suite("int-group: malformed packed layers");

let work: Awaited<ReturnType<typeof tempDir>>;
test.before(async () => {
  work = await tempDir();
});
test.after(() => work.cleanup());

type Arrays = Map<string, ArraySpec>;
const edit = (arrays: Arrays, part: string, change: Partial<ArraySpec>) => arrays.set(part, { ...arrays.get(part)!, ...change });
const int32Bytes = (values: number[]) => new Uint8Array(Int32Array.from(values).buffer);

interface Case {
  name: string;
  golden: "gptq_v1_b4_g32_asym" | "awq_b4_g32_asym";
  config: Record<string, unknown>;
  mutate: (arrays: Arrays) => void;
  code: string;
  tensor?: string;
  byteOffsetInData?: number;
}

const cases: Case[] = [
  { name: "qweight has one row too few", golden: "gptq_v1_b4_g32_asym", config: GPTQ, mutate: (a) => edit(a, "qweight", { shape: [15, 64], bytes: a.get("qweight")!.bytes.subarray(0, 15 * 64 * 4) }), code: "PACKED_SHAPE_MISMATCH", tensor: "qweight" },
  { name: "config says 3 bits, qweight holds 4-bit rows (bits × in / 32 mismatch)", golden: "gptq_v1_b4_g32_asym", config: { ...GPTQ, bits: 3 }, mutate: () => undefined, code: "PACKED_SHAPE_MISMATCH", tensor: "qweight" },
  { name: "scales of the wrong shape", golden: "gptq_v1_b4_g32_asym", config: GPTQ, mutate: (a) => edit(a, "scales", { shape: [4, 32], bytes: a.get("scales")!.bytes.subarray(0, 4 * 32 * 2) }), code: "PACKED_SHAPE_MISMATCH", tensor: "scales" },
  { name: "scales stored as I32", golden: "gptq_v1_b4_g32_asym", config: GPTQ, mutate: (a) => edit(a, "scales", { dtype: "I32", bytes: new Uint8Array(4 * 64 * 4) }), code: "PACKED_DTYPE_MISMATCH", tensor: "scales" },
  { name: "qweight stored as F32", golden: "gptq_v1_b4_g32_asym", config: GPTQ, mutate: (a) => edit(a, "qweight", { dtype: "F32" }), code: "PACKED_DTYPE_MISMATCH", tensor: "qweight" },
  { name: "qzeros of the wrong shape", golden: "gptq_v1_b4_g32_asym", config: GPTQ, mutate: (a) => edit(a, "qzeros", { shape: [8, 4] }), code: "PACKED_SHAPE_MISMATCH", tensor: "qzeros" },
  { name: "g_idx entry past the last group", golden: "gptq_v1_b4_g32_asym", config: GPTQ, mutate: (a) => edit(a, "g_idx", { bytes: int32Bytes(Array.from({ length: 128 }, (_, k) => (k === 5 ? 4 : k >> 5))) }), code: "PACKED_VALUE_INVALID", tensor: "g_idx", byteOffsetInData: 20 },
  { name: "negative g_idx entry", golden: "gptq_v1_b4_g32_asym", config: GPTQ, mutate: (a) => edit(a, "g_idx", { bytes: int32Bytes(Array.from({ length: 128 }, (_, k) => (k === 100 ? -1 : k >> 5))) }), code: "PACKED_VALUE_INVALID", tensor: "g_idx", byteOffsetInData: 400 },
  { name: "g_idx of the wrong length", golden: "gptq_v1_b4_g32_asym", config: GPTQ, mutate: (a) => edit(a, "g_idx", { shape: [64], bytes: a.get("g_idx")!.bytes.subarray(0, 256) }), code: "PACKED_SHAPE_MISMATCH", tensor: "qweight" },
  { name: "qzeros missing", golden: "gptq_v1_b4_g32_asym", config: GPTQ, mutate: (a) => a.delete("qzeros"), code: "TENSOR_MISSING", tensor: "qzeros" },
  { name: "bits 5 in the config", golden: "gptq_v1_b4_g32_asym", config: { ...GPTQ, bits: 5 }, mutate: () => undefined, code: "QUANT_CONFIG_INVALID" },
  { name: "unknown checkpoint_format", golden: "gptq_v1_b4_g32_asym", config: { ...GPTQ, checkpoint_format: "marlin" }, mutate: () => undefined, code: "QUANT_CONFIG_INVALID" },
  { name: "unknown auto-round packing_format", golden: "gptq_v1_b4_g32_asym", config: { quant_method: "auto-round", bits: 4, group_size: 32, packing_format: "auto_round:llm_compressor" }, mutate: () => undefined, code: "QUANT_CONFIG_INVALID" },
  { name: "AWQ scales narrower than qweight's columns", golden: "awq_b4_g32_asym", config: AWQ, mutate: (a) => edit(a, "scales", { shape: [4, 32], bytes: a.get("scales")!.bytes.subarray(0, 256) }), code: "PACKED_SHAPE_MISMATCH", tensor: "scales" },
  { name: "AWQ in_features not a multiple of group_size", golden: "awq_b4_g32_asym", config: { ...AWQ, group_size: 48 }, mutate: () => undefined, code: "PACKED_SHAPE_MISMATCH", tensor: "qweight" },
  { name: "AWQ gemv layout", golden: "awq_b4_g32_asym", config: { ...AWQ, version: "gemv" }, mutate: () => undefined, code: "QUANT_CONFIG_INVALID" },
];

for (const c of cases) {
  test(c.name, async () => {
    const { arrays: golden } = await readAllArrays(join(VECTORS, `${c.golden}.safetensors`));
    const arrays: Arrays = new Map();
    for (const part of ["qweight", "qzeros", "scales", "g_idx"]) {
      const a = golden.get(part);
      if (a !== undefined) arrays.set(part, { name: `${MODULE}.${part}`, dtype: a.dtype, shape: a.shape, bytes: a.bytes.slice() });
    }
    c.mutate(arrays);
    const dir = await writeHfDir(join(work.path, c.name.replace(/\W+/g, "-")), tinyConfig(c.config), [...arrays.values()]);
    let error: unknown;
    try {
      const checkpoint = await openCheckpoint(dir);
      try {
        for (const t of checkpoint.tensors) await t.packed?.load();
      } finally {
        await checkpoint.close();
      }
    } catch (e) {
      error = e;
    }
    assert.ok(isLmpackError(error), `expected a typed error, got ${String(error)}`);
    const e = error as LmpackError;
    assert.is(e.code, c.code, e.message);
    assert.ok(e.file !== undefined && e.file.startsWith(dir), `names the file: ${e.message}`);
    if (c.tensor !== undefined) assert.is(e.tensor, `${MODULE}.${c.tensor}`, e.message);
    if (c.byteOffsetInData !== undefined) {
      // Offsets are absolute in the file: the tensor's data offset plus the element's.
      assert.type(e.byteOffset, "number");
      assert.is((e.byteOffset as number) % 4, 0);
      assert.ok((e.byteOffset as number) > c.byteOffsetInData, e.message);
    }
  });
}

test.run();
