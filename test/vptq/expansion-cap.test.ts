import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { ggufCheckpoint } from "../../converters/gguf/import.js";
import { GgufFile } from "../../converters/gguf/reader.js";
import { ggufBytes } from "../../converters/gguf/writer.js";
import { BufferSource } from "../../converters/io/random-access.js";
import { MAX_WEIGHTS_PER_BLOB_BYTE } from "../../converters/lmpack/reader.js";
import { openCheckpoint } from "../../converters/open.js";
import type { Checkpoint } from "../../converters/checkpoint.js";
import { buildVptqLayerConfig } from "../../converters/vptq/hf-config.js";
import { dtypeBytes } from "../../formats/dtype.js";
import { FormatError, UsageError } from "../../formats/errors.js";
import { VPTQ_MAX_WEIGHTS, VPTQ_MAX_WEIGHTS_PER_STORED_BYTE, vptqArraySpecs, vptqStoredBytes } from "../../formats/vptq/hf-layout.js";
import type { VptqParams } from "../../formats/vptq/types.js";
import { tempDir } from "../helpers/paths.js";
import { tinyConfig, writeHfDir, type ArraySpec } from "../helpers/packed-checkpoint.js";

/**
 * A VPTQ layer may not dequantize to more weights than its stored arrays can plausibly encode
 * (64 per byte, as the .lmpack container demands) nor to more than 2^31 weights: hostile configs
 * against a ~17 KB file are refused when the checkpoint is opened, before any array is read or
 * any weight allocated, through the HF-VPTQ importer and GGUF --keep-packed alike. Each hostile
 * file's arrays match the shapes its config calls for (where they can be small), so nothing but
 * the cap stands between it and the allocation; a legitimate layer built the same way reads.
 */
const test = suite("vptq: expansion cap");
const MODULE = "model.layers.0.mlp.down_proj";
const FAST_MS = 1000;

const params = (over: Partial<VptqParams>): VptqParams => ({ vectorLen: 8, numCentroids: 256, numResCentroids: 0, groupNum: 1, groupSize: 64, outlierSize: 0, outlierVectorLen: 0, outlierNumCentroids: 0, enableNorm: false, enablePerm: false, ...over });
/** Zero-filled arrays of exactly the shapes `p` calls for (zero indices and codebooks are valid). */
const arraysFor = (p: VptqParams, out: number, inFeatures: number): ArraySpec[] =>
  [...vptqArraySpecs(p, out, inFeatures, "F16")].map(([suffix, s]) => ({ name: `${MODULE}.${suffix}`, dtype: s.dtype, shape: s.shape, bytes: new Uint8Array(s.shape.reduce((a, b) => a * b, 1) * dtypeBytes(s.dtype)) }));

const LEGIT = { p: params({}), out: 64, in: 64 };
// One 1-bit index per 4096-row vector: 16.9 KB of arrays for 16 Mi weights (~990 per byte).
const SPARSE = { p: params({ vectorLen: 4096, numCentroids: 2, groupSize: 4096 }), out: 4096, in: 4096 };
const TINY_ARRAYS = arraysFor(SPARSE.p, SPARSE.out, SPARSE.in);

interface Case {
  name: string;
  p: VptqParams;
  out: number;
  in: number;
  /** FormatError code at open, and whether the config (not the arrays) is to blame. */
  code: string;
  /** Expected figure in the UsageError cause (`expected`), when the cap refuses. */
  limit?: string;
}
const cases: Case[] = [
  { name: "one 1-bit index per 4096-row vector (17 KB → 16 Mi weights)", ...SPARSE, code: "QUANT_CONFIG_INVALID", limit: `<= ${vptqStoredBytes(SPARSE.p, SPARSE.out, SPARSE.in) * 64} weights` },
  { name: "out_features 2^40 × in_features 65536", p: params({ vectorLen: 2 ** 40, numCentroids: 2, groupSize: 65536 }), out: 2 ** 40, in: 65536, code: "QUANT_CONFIG_INVALID", limit: `<= ${2 ** 31} weights` },
  { name: "out_features 2^20 × in_features 4096, vector length 8", p: params({ groupSize: 4096 }), out: 2 ** 20, in: 4096, code: "QUANT_CONFIG_INVALID", limit: `<= ${2 ** 31} weights` },
  { name: "num_centroids 2^24", p: params({ numCentroids: 2 ** 24 }), out: 64, in: 64, code: "QUANT_CONFIG_INVALID" },
  { name: "65536 centroids of 2^45-long vectors (arrays past 2^53 bytes)", p: params({ numCentroids: 65536, vectorLen: 2 ** 45 }), out: 64, in: 64, code: "QUANT_CONFIG_INVALID" },
  // Under both caps: the arrays it calls for (a 2 GiB codebook) are not in the 17 KB file.
  { name: "65536 centroids of 2^14-long vectors against a 17 KB file", p: params({ numCentroids: 65536, vectorLen: 2 ** 14 }), out: 64, in: 64, code: "PACKED_SHAPE_MISMATCH" },
];

let work: Awaited<ReturnType<typeof tempDir>>;
test.before(async () => {
  work = await tempDir("lmpack-vptq-cap-");
});
test.after(() => work.cleanup());

async function hfDir(name: string, p: VptqParams, out: number, inFeatures: number, arrays: ArraySpec[]): Promise<string> {
  const quant = { quant_method: "vptq", config_for_layers: { [MODULE]: buildVptqLayerConfig(p, inFeatures, out, false) } };
  return writeHfDir(join(work.path, name.replace(/\W+/g, "-")), tinyConfig(quant), arrays);
}

/** Opens, then reads every packed tensor (the dense read dequantizes); the error, or undefined. */
async function openAndRead(open: () => Promise<Checkpoint>): Promise<{ error: unknown; ms: number; opened: boolean }> {
  const start = performance.now();
  let opened = false;
  try {
    const checkpoint = await open();
    opened = true;
    try {
      for (const t of checkpoint.tensors) if (t.packed !== undefined) await t.read();
    } finally {
      await checkpoint.close();
    }
  } catch (error) {
    return { error, ms: performance.now() - start, opened };
  }
  return { error: undefined, ms: performance.now() - start, opened };
}

test("the per-byte cap is the container's", () => {
  assert.is(VPTQ_MAX_WEIGHTS_PER_STORED_BYTE, MAX_WEIGHTS_PER_BLOB_BYTE);
  assert.is(VPTQ_MAX_WEIGHTS, 2 ** 31);
});

test("HF-VPTQ: a legitimate layer built the same way opens and reads", async () => {
  const dir = await hfDir("legit", LEGIT.p, LEGIT.out, LEGIT.in, arraysFor(LEGIT.p, LEGIT.out, LEGIT.in));
  const r = await openAndRead(() => openCheckpoint(dir));
  assert.is(r.error, undefined, String(r.error));
});

for (const c of cases) {
  test(`HF-VPTQ: ${c.name} → ${c.code} at open, in < ${FAST_MS} ms`, async () => {
    const dir = await hfDir(c.name, c.p, c.out, c.in, TINY_ARRAYS);
    const r = await openAndRead(() => openCheckpoint(dir));
    assert.instance(r.error, FormatError, String(r.error));
    const e = r.error as FormatError;
    assert.is(e.code, c.code, e.message);
    assert.not.ok(r.opened, "refused only when read: the allocation was reached");
    assert.ok(r.ms < FAST_MS, `${r.ms} ms`);
    if (c.code === "QUANT_CONFIG_INVALID") {
      assert.is(e.file, join(dir, "config.json"));
      assert.is(e.tensor, MODULE);
      assert.instance(e.cause, UsageError);
    } else {
      assert.is(e.tensor, `${MODULE}.centroids.weight`);
    }
    if (c.limit !== undefined) {
      assert.is((e.cause as UsageError).expected, c.limit);
      assert.ok(String((e.cause as UsageError).actual).startsWith(`${c.out * c.in} weights`), String((e.cause as UsageError).actual));
      assert.ok(e.message.includes(String(c.out * c.in)), `message gives the figures: ${e.message}`);
    }
  });
}

// GGUF --keep-packed: the layer's arrays as raw GGUF tensors plus the JSON description key.
const GGUF_NAME = "blk.0.ffn_down.weight";
const STORAGE: Record<string, number> = { I32: 26, I16: 25, F16: 1 };

function keptGguf(p: VptqParams, out: number, inFeatures: number): Uint8Array {
  const specs = [...vptqArraySpecs(p, out, inFeatures, "F16")];
  const message = { outFeatures: out, inFeatures, ...p, sourceLayout: "hf-vptq" };
  const description = { representation: "vptq", name: `${MODULE}.weight`, shape: [out, inFeatures], message, arrays: specs.map(([role, s]) => ({ role, dtype: s.dtype, shape: s.shape })) };
  const metadata = new Map([[`lmpack.packed.${GGUF_NAME}`, { type: 8 as const, value: JSON.stringify(description) }]]);
  const tensors = specs.map(([role, s]) => ({ name: `${GGUF_NAME}.lmpack.${role}`, type: STORAGE[s.dtype]!, shape: s.shape, bytes: new Uint8Array(s.shape.reduce((a, b) => a * b, 1) * dtypeBytes(s.dtype)) }));
  return ggufBytes(metadata, tensors);
}
const openGguf = (bytes: Uint8Array) => async () => ggufCheckpoint(await GgufFile.fromSource(new BufferSource(bytes, "kept.gguf")));

test("GGUF --keep-packed: a legitimate kept layer opens and reads", async () => {
  const r = await openAndRead(openGguf(keptGguf(LEGIT.p, LEGIT.out, LEGIT.in)));
  assert.is(r.error, undefined, String(r.error));
});

test(`GGUF --keep-packed: the 17 KB layer of 16 Mi weights → CONTAINER_HEADER_INVALID at open, in < ${FAST_MS} ms`, async () => {
  const bytes = keptGguf(SPARSE.p, SPARSE.out, SPARSE.in);
  assert.ok(bytes.length < 20_000, `${bytes.length} bytes`);
  const r = await openAndRead(openGguf(bytes));
  assert.instance(r.error, FormatError, String(r.error));
  const e = r.error as FormatError;
  assert.is(e.code, "CONTAINER_HEADER_INVALID", e.message);
  assert.is(e.tensor, `${MODULE}.weight`);
  assert.not.ok(r.opened);
  assert.ok(r.ms < FAST_MS, `${r.ms} ms`);
  assert.ok(e.message.includes(String(SPARSE.out * SPARSE.in)), e.message);
});

test.run();
