import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { exportLmpack } from "../../converters/lmpack/export.js";
import { decodeTrailer, encodeTrailer, TRAILER_BYTES } from "../../converters/lmpack/layout.js";
import { pb } from "../../converters/lmpack/proto.js";
import { openCheckpoint } from "../../converters/open.js";
import { FormatError, UsageError } from "../../formats/errors.js";
import { packVptq, unpackVptq, VPTQ_SUFFIXES, type VptqSuffix } from "../../formats/vptq/hf-layout.js";
import { dequantizeVptq } from "../../formats/vptq/reference.js";
import type { VptqParams } from "../../formats/vptq/types.js";
import type { PackedArray } from "../../formats/packed-array.js";
import { SHARED_DIR, tempDir } from "../helpers/paths.js";
import { writeHfDir, type ArraySpec } from "../helpers/packed-checkpoint.js";
import { mulberry32 } from "../helpers/prng.js";
import { readAllArrays } from "../helpers/safetensors-arrays.js";
import { vptqParamsOf, type VptqCaseParams } from "../helpers/vptq-golden.js";

/**
 * Hostile VPTQ layers are refused with a typed error naming the file, the tensor and, where a
 * byte is at fault, its exact byte offset, before any value is used (FormatError by code;
 * UsageError BAD_ARGUMENT for inconsistent parameters): (a) unpackVptq on mutated copies of golden
 * layers (outlier indices past their codebook, nonzero row padding bits, wrong packed widths and
 * row counts, non-permutations, codebook shapes, dtypes, parameters, missing arrays) and a seeded
 * bit-flip fuzz (every flip is refused or repacks to exactly the flipped bytes); (b) faults
 * through openCheckpoint on a rewritten tinystories-656K-vptq; (c) a .lmpack with bad vptq blobs.
 */
const VECTORS = join(SHARED_DIR, "vectors", "vptq");
const VPTQ = join(SHARED_DIR, "checkpoints", "tinystories-656K-vptq");
const CASES = { outlier: "v8-k256-16-outlier8-ovl4", padded: "v8-k4096-256", plain: "v8-k256" } as const;
type Kind = keyof typeof CASES;
type Layer = Map<VptqSuffix, PackedArray>;
interface Golden { layer: Layer; params: VptqParams; out: number; in: number }
const test = suite("vptq: hostile layers");

let work: Awaited<ReturnType<typeof tempDir>>;
const golden = {} as Record<Kind, Golden>;
test.before(async () => {
  work = await tempDir("lmpack-vptq-bad-");
  for (const kind of Object.keys(CASES) as Kind[]) {
    const { arrays, metadata } = await readAllArrays(join(VECTORS, `${CASES[kind]}.safetensors`));
    const c = JSON.parse(metadata["params"]!) as VptqCaseParams;
    const params = vptqParamsOf(c);
    // Distinctive names, so that "names the tensor" cannot pass by accident.
    const layer: Layer = new Map(VPTQ_SUFFIXES.filter((s) => arrays.has(s)).map((s) => [s, { ...arrays.get(s)!, name: `golden.${kind}.${s}` }]));
    golden[kind] = { layer, params, out: c.out_features, in: c.in_features };
  }
});
test.after(() => work.cleanup());

const copyLayer = (l: Layer): Layer => new Map([...l].map(([s, a]) => [s, { ...a, shape: [...a.shape], bytes: a.bytes.slice() }]));
const u32 = (a: { bytes: Uint8Array }) => new Uint32Array(a.bytes.buffer, a.bytes.byteOffset, a.bytes.byteLength / 4);
const u16 = (a: { bytes: Uint8Array }) => new Uint16Array(a.bytes.buffer, a.bytes.byteOffset, a.bytes.byteLength / 2);
/** Gives an array a new dtype or shape, its bytes cut or zero-extended to match. */
function reshape(a: PackedArray | ArraySpec, shape: number[], bytesPer = a.bytes.length / a.shape.reduce((x, y) => x * y, 1), dtype = a.dtype): void {
  const bytes = new Uint8Array(shape.reduce((x, y) => x * y, 1) * bytesPer);
  bytes.set(a.bytes.subarray(0, Math.min(a.bytes.length, bytes.length)));
  Object.assign(a, { bytes, shape, dtype });
}

/** Expects `kind` of error with `code`, naming `file`, `tensor` and `byteOffset` in its fields and message. */
function assertRefused(error: unknown, code: string, where: { file?: string; tensor?: string; byteOffset?: number }, kind: typeof FormatError | typeof UsageError = FormatError): void {
  assert.instance(error, kind, `expected a ${kind.name}, got ${String(error)}`);
  const e = error as FormatError;
  assert.is(e.code, code, e.message);
  if (where.file !== undefined) {
    assert.is(e.file, where.file, e.message);
    assert.ok(e.message.startsWith(`${where.file}: `), `message names the file: ${e.message}`);
  }
  if (where.tensor !== undefined) {
    assert.is(e.tensor, where.tensor, e.message);
    assert.ok(e.message.includes(`tensor "${where.tensor}"`), `message names the tensor: ${e.message}`);
  }
  if (where.byteOffset !== undefined) {
    assert.is(Number(e.byteOffset), where.byteOffset, e.message);
    assert.ok(e.message.includes(`at byte ${where.byteOffset}:`), `message names the byte offset: ${e.message}`);
  } else assert.is(e.byteOffset, undefined, `no byte is at fault: ${e.message}`);
}
const unpack = (kind: Kind, l: Layer, p = golden[kind].params) => unpackVptq(l, p, golden[kind].out, golden[kind].in, `golden.${kind}`);
function errorOf(run: () => unknown): unknown {
  try {
    run();
  } catch (error) {
    return error;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// (a) unpackVptq on mutated copies of golden layers

/** Where the error must point: an array and a byte from its start; the array, missing; or the layer's parameters. */
type Fault = [VptqSuffix, number] | ["missing", VptqSuffix] | ["params"];
const cases: { name: string; kind: Kind; code: string; mutate: (l: Layer, p: VptqParams) => Fault }[] = [
  { name: "outlier index = the outlier codebook size (64)", kind: "outlier", code: "PACKED_VALUE_INVALID", mutate: (l) => { u16(l.get("outlier_indices")!)[37] = 64; return ["outlier_indices", 2 * 37]; } },
  { name: "outlier index 0xffff (negative as int16)", kind: "outlier", code: "PACKED_VALUE_INVALID", mutate: (l) => { u16(l.get("outlier_indices")!)[199] = 0xffff; return ["outlier_indices", 2 * 199]; } },
  // 100 entries of 20 bits = 2000 bits in 63 words: bits 16–31 of each row's last word are padding.
  { name: "a padding bit set after the last index of row 5", kind: "padded", code: "PACKED_VALUE_INVALID", mutate: (l) => { u32(l.get("indices")!)[5 * 63 + 62]! |= 1 << 31; return ["indices", 4 * (5 * 63 + 62)]; } },
  { name: "the first padding bit of the last row set", kind: "padded", code: "PACKED_VALUE_INVALID", mutate: (l) => { u32(l.get("indices")!)[31 * 63 + 62]! |= 1 << 16; return ["indices", 4 * (31 * 63 + 62)]; } },
  {
    name: "rows packed with 21-bit indices (k 8192), cut to the 63 words of 20-bit ones", kind: "padded", code: "PACKED_VALUE_INVALID",
    mutate: (l, p) => {
      const wide = packVptq({ ...unpack("padded", golden.padded.layer), params: { ...p, numCentroids: 8192 } }).get("indices")!;
      const words = new Uint32Array(wide.buffer, wide.byteOffset, wide.byteLength / 4);
      u32(l.get("indices")!).set(Uint32Array.from({ length: 32 * 63 }, (_, i) => words[Math.floor(i / 63) * 66 + (i % 63)]!));
      return ["indices", 4 * 62];
    },
  },
  { name: "indices one word short per row (PACKED_SHAPE_MISMATCH)", kind: "padded", code: "PACKED_SHAPE_MISMATCH", mutate: (l) => { reshape(l.get("indices")!, [1, 32, 62]); return ["indices", 0]; } },
  { name: "indices one word long per row", kind: "plain", code: "PACKED_SHAPE_MISMATCH", mutate: (l) => { reshape(l.get("indices")!, [1, 16, 65]); return ["indices", 0]; } },
  { name: "indices with one index row short (num_idx 15)", kind: "plain", code: "PACKED_SHAPE_MISMATCH", mutate: (l) => { reshape(l.get("indices")!, [1, 15, 64]); return ["indices", 0]; } },
  { name: "indices with num_idx 12 (padding rows not stored)", kind: "outlier", code: "PACKED_SHAPE_MISMATCH", mutate: (l) => { reshape(l.get("indices")!, [1, 12, 48]); return ["indices", 0]; } },
  { name: "perm with a duplicate", kind: "plain", code: "PACKED_VALUE_INVALID", mutate: (l) => { const p = u16(l.get("perm")!); p[77] = p[12]!; return ["perm", 2 * 77]; } },
  { name: "perm entry = in_features", kind: "plain", code: "PACKED_VALUE_INVALID", mutate: (l) => { u16(l.get("perm")!)[31] = 256; return ["perm", 2 * 31]; } },
  { name: "perm entry 0xffff", kind: "outlier", code: "PACKED_VALUE_INVALID", mutate: (l) => { u16(l.get("perm")!)[0] = 0xffff; return ["perm", 0]; } },
  { name: "centroids.weight one value shorter than k·vl", kind: "plain", code: "PACKED_SHAPE_MISMATCH", mutate: (l) => { reshape(l.get("centroids.weight")!, [1, 2047]); return ["centroids.weight", 0]; } },
  { name: "centroids.weight one vector longer than k·vl", kind: "outlier", code: "PACKED_SHAPE_MISMATCH", mutate: (l) => { reshape(l.get("centroids.weight")!, [1, 2056]); return ["centroids.weight", 0]; } },
  { name: "centroids.weight as [k·vl] (no group axis)", kind: "plain", code: "PACKED_SHAPE_MISMATCH", mutate: (l) => { reshape(l.get("centroids.weight")!, [2048]); return ["centroids.weight", 0]; } },
  { name: "res_centroids.weight one value short", kind: "outlier", code: "PACKED_SHAPE_MISMATCH", mutate: (l) => { reshape(l.get("res_centroids.weight")!, [1, 127]); return ["res_centroids.weight", 0]; } },
  { name: "res_centroids.weight sized for k_res 512", kind: "padded", code: "PACKED_SHAPE_MISMATCH", mutate: (l) => { reshape(l.get("res_centroids.weight")!, [1, 4096]); return ["res_centroids.weight", 0]; } },
  { name: "outlier_centroids.weight one value short", kind: "outlier", code: "PACKED_SHAPE_MISMATCH", mutate: (l) => { reshape(l.get("outlier_centroids.weight")!, [1, 255]); return ["outlier_centroids.weight", 0]; } },
  { name: "outlier_indices with a row short", kind: "outlier", code: "PACKED_SHAPE_MISMATCH", mutate: (l) => { reshape(l.get("outlier_indices")!, [1, 24, 8]); return ["outlier_indices", 0]; } },
  { name: "weight_scale one column short", kind: "plain", code: "PACKED_SHAPE_MISMATCH", mutate: (l) => { reshape(l.get("weight_scale")!, [255]); return ["weight_scale", 0]; } },
  { name: "indices stored as I16", kind: "outlier", code: "PACKED_DTYPE_MISMATCH", mutate: (l) => { reshape(l.get("indices")!, [1, 13, 96], 2, "I16"); return ["indices", 0]; } },
  { name: "indices stored as U32", kind: "plain", code: "PACKED_DTYPE_MISMATCH", mutate: (l) => { l.get("indices")!.dtype = "U32"; return ["indices", 0]; } },
  { name: "perm stored as I32", kind: "plain", code: "PACKED_DTYPE_MISMATCH", mutate: (l) => { reshape(l.get("perm")!, [256], 4, "I32"); return ["perm", 0]; } },
  { name: "centroids.weight stored as F32", kind: "plain", code: "PACKED_DTYPE_MISMATCH", mutate: (l) => { reshape(l.get("centroids.weight")!, [1, 2048], 4, "F32"); return ["centroids.weight", 0]; } },
  { name: "weight_scale BF16 beside F16 codebooks", kind: "outlier", code: "PACKED_DTYPE_MISMATCH", mutate: (l) => { l.get("weight_scale")!.dtype = "BF16"; return ["weight_scale", 0]; } },
  { name: "outlier_indices stored as I32", kind: "outlier", code: "PACKED_DTYPE_MISMATCH", mutate: (l) => { reshape(l.get("outlier_indices")!, [1, 25, 8], 4, "I32"); return ["outlier_indices", 0]; } },
  { name: "no perm although enable_perm", kind: "plain", code: "TENSOR_MISSING", mutate: (l) => { l.delete("perm"); return ["missing", "perm"]; } },
  { name: "no res_centroids.weight although k_res 256", kind: "padded", code: "TENSOR_MISSING", mutate: (l) => { l.delete("res_centroids.weight"); return ["missing", "res_centroids.weight"]; } },
  { name: "no outlier_indices although outlier_size 8", kind: "outlier", code: "TENSOR_MISSING", mutate: (l) => { l.delete("outlier_indices"); return ["missing", "outlier_indices"]; } },
  { name: "num_centroids 255 (not a power of two)", kind: "plain", code: "BAD_ARGUMENT", mutate: (_, p) => { p.numCentroids = 255; return ["params"]; } },
  { name: "num_res_centroids 12 (not a power of two)", kind: "outlier", code: "BAD_ARGUMENT", mutate: (_, p) => { p.numResCentroids = 12; return ["params"]; } },
  { name: "group_num·group_size + outlier_size ≠ in_features", kind: "outlier", code: "BAD_ARGUMENT", mutate: (_, p) => { p.groupSize = 127; return ["params"]; } },
  { name: "outlier codebook of 48", kind: "outlier", code: "BAD_ARGUMENT", mutate: (_, p) => { p.outlierNumCentroids = 48; return ["params"]; } },
  { name: "vector length 0", kind: "plain", code: "BAD_ARGUMENT", mutate: (_, p) => { p.vectorLen = 0; return ["params"]; } },
];

for (const c of cases) {
  test(`unpack ${c.kind}: ${c.name} → ${c.code}`, () => {
    const layer = copyLayer(golden[c.kind].layer);
    const params = { ...golden[c.kind].params };
    const fault = c.mutate(layer, params);
    const error = errorOf(() => unpack(c.kind, layer, params));
    if (fault[0] === "params") assertRefused(error, c.code, { tensor: `golden.${c.kind}` }, UsageError);
    else if (fault[0] === "missing") assertRefused(error, c.code, { tensor: `golden.${c.kind}.${fault[1]}` });
    else {
      const g = golden[c.kind].layer.get(fault[0])!;
      assertRefused(error, c.code, { file: g.file!, tensor: g.name, byteOffset: g.byteOffset! + fault[1] });
    }
  });
}

test("no centroids.weight → TENSOR_MISSING naming the layer and the array", () => {
  const layer = copyLayer(golden.plain.layer);
  layer.delete("centroids.weight");
  const e = errorOf(() => unpack("plain", layer)) as FormatError;
  assert.instance(e, FormatError, String(e));
  assert.is(e.code, "TENSOR_MISSING", e.message);
  assert.ok(e.tensor?.startsWith("golden.plain") && e.message.includes("centroids.weight"), e.message);
});

test("the unmutated golden layers unpack and dequantize (each case fails for its fault alone)", () => {
  for (const kind of Object.keys(CASES) as Kind[]) assert.is(dequantizeVptq(unpack(kind, copyLayer(golden[kind].layer))).length, golden[kind].out * golden[kind].in);
});

test("seeded fuzz: 500 single-bit flips of two layers are refused with a FormatError or repack to exactly the flipped bytes", () => {
  const rng = mulberry32(0x7e57);
  const counts = { refused: 0, accepted: 0 };
  for (let trial = 0; trial < 500; trial++) {
    const kind: Kind = trial % 2 === 0 ? "outlier" : "padded";
    const layer = copyLayer(golden[kind].layer);
    const suffixes = [...layer.keys()];
    const suffix = suffixes[Math.floor(rng() * suffixes.length)]!;
    const bytes = layer.get(suffix)!.bytes;
    // Half the index flips hit a row's last word, where the padding bits are (16–31 of it in the padded layer).
    const rowBytes = 4 * golden[kind].layer.get("indices")!.shape[2]!;
    const lastWord = suffix === "indices" && rng() < 0.5;
    const byte = lastWord ? Math.floor(rng() * (bytes.length / rowBytes)) * rowBytes + rowBytes - 4 + Math.floor(rng() * 4) : Math.floor(rng() * bytes.length);
    const bit = Math.floor(rng() * 8);
    bytes[byte]! ^= 1 << bit;
    let t;
    try {
      t = unpack(kind, layer);
    } catch (error) {
      assert.instance(error, FormatError, `${kind} ${suffix} byte ${byte} bit ${bit}: ${String(error)}`);
      assert.is((error as FormatError).tensor, `golden.${kind}.${suffix}`, (error as FormatError).message);
      counts.refused++;
      continue;
    }
    counts.accepted++;
    const packed = packVptq(t);
    assert.equal([...packed.keys()].sort(), [...layer.keys()].sort());
    for (const [s, a] of layer) assert.is(packed.get(s)!.findIndex((b, i) => b !== a.bytes[i]), -1, `${kind} ${suffix} byte ${byte} bit ${bit}: ${s} not read back as stored`);
    assert.is(dequantizeVptq(t).length, golden[kind].out * golden[kind].in);
  }
  assert.ok(counts.refused > 0 && counts.accepted > 0, JSON.stringify(counts));
  console.log(`  bit flips: ${counts.refused} refused, ${counts.accepted} read back exactly`);
});

// ---------------------------------------------------------------------------------------------
// (b) Through openCheckpoint, on a rewritten copy of the checkpoint

const MODULE = "model.layers.1.mlp.down_proj"; // [128, 384]: indices [1, 16, 144], perm [384]
type Arrays = Map<string, ArraySpec>;
type Quant = Record<string, Record<string, unknown>>;
const fileCases: { name: string; code: string; tensor?: string; at?: number; inConfig?: boolean; usage?: boolean; mutate?: (a: Arrays) => void; quant?: (layers: Quant) => void }[] = [
  { name: "perm with a duplicate", code: "PACKED_VALUE_INVALID", tensor: "perm", at: 2 * 300, mutate: (a) => { const p = u16(a.get(`${MODULE}.perm`)!); p[300] = p[7]!; } },
  { name: "perm entry = in_features", code: "PACKED_VALUE_INVALID", tensor: "perm", at: 2 * 5, mutate: (a) => { u16(a.get(`${MODULE}.perm`)!)[5] = 384; } },
  { name: "indices one word short per row", code: "PACKED_SHAPE_MISMATCH", tensor: "indices", at: 0, mutate: (a) => reshape(a.get(`${MODULE}.indices`)!, [1, 16, 143]) },
  { name: "centroids.weight one vector short", code: "PACKED_SHAPE_MISMATCH", tensor: "centroids.weight", at: 0, mutate: (a) => reshape(a.get(`${MODULE}.centroids.weight`)!, [1, 2040]) },
  { name: "perm stored as I32", code: "PACKED_DTYPE_MISMATCH", tensor: "perm", at: 0, mutate: (a) => reshape(a.get(`${MODULE}.perm`)!, [384], 4, "I32") },
  { name: "weight_bias missing", code: "TENSOR_MISSING", tensor: "weight_bias", mutate: (a) => a.delete(`${MODULE}.weight_bias`) },
  { name: "res_centroids.weight stored but num_res_centroids -1", code: "QUANT_CONFIG_INVALID", tensor: "res_centroids.weight", inConfig: true, quant: (l) => (l[MODULE]!["num_res_centroids"] = [-1, -1]) },
  { name: "perm stored but enable_perm false", code: "QUANT_CONFIG_INVALID", tensor: "perm", inConfig: true, quant: (l) => (l[MODULE]!["enable_perm"] = false) },
  { name: "num_centroids 255", code: "QUANT_CONFIG_INVALID", inConfig: true, quant: (l) => (l[MODULE]!["num_centroids"] = [-1, 255]) },
  { name: "group_size 383 (group_num·group_size ≠ in_features)", code: "QUANT_CONFIG_INVALID", inConfig: true, quant: (l) => (l[MODULE]!["group_size"] = 383) },
];

async function openAndRead(source: string): Promise<unknown> {
  try {
    const checkpoint = await openCheckpoint(source);
    try {
      // The dense read: unpacking (and its validation) comes before any dequantization.
      for (const t of checkpoint.tensors) if (t.packed !== undefined) await t.read();
    } finally {
      await checkpoint.close();
    }
  } catch (error) {
    return error;
  }
  return undefined;
}

async function rewrittenCopy(name: string, mutate?: (a: Arrays) => void, quant?: (layers: Quant) => void): Promise<string> {
  const { arrays } = await readAllArrays(join(VPTQ, "model.safetensors"));
  const copy: Arrays = new Map([...arrays].map(([k, a]) => [k, { name: k, dtype: a.dtype, shape: [...a.shape], bytes: a.bytes.slice() }]));
  mutate?.(copy);
  const config = JSON.parse(await readFile(join(VPTQ, "config.json"), "utf8")) as Record<string, unknown>;
  const q = structuredClone(config["quantization_config"]) as { config_for_layers: Quant };
  quant?.(q.config_for_layers);
  return writeHfDir(join(work.path, name.replace(/\W+/g, "-")), { ...config, quantization_config: q }, [...copy.values()]);
}

for (const c of fileCases) {
  test(`checkpoint copy: ${c.name} → ${c.code}`, async () => {
    const dir = await rewrittenCopy(c.name, c.mutate, c.quant);
    const weights = join(dir, "model.safetensors");
    const tensor = c.tensor === undefined ? undefined : `${MODULE}.${c.tensor}`;
    const start = c.at === undefined ? undefined : (await readAllArrays(weights)).arrays.get(tensor!)!.byteOffset!;
    const error = await openAndRead(dir);
    assertRefused(error, c.code, { file: c.inConfig ? join(dir, "config.json") : weights, ...(tensor === undefined ? {} : { tensor }), ...(start === undefined ? {} : { byteOffset: start + c.at! }) });
    if (tensor === undefined) assert.ok((error as FormatError).message.includes(MODULE), (error as FormatError).message);
  });
}

test("the unmodified rewritten copy opens and reads", async () => {
  assert.is(await openAndRead(await rewrittenCopy("intact")), undefined);
});

// ---------------------------------------------------------------------------------------------
// (c) A .lmpack whose vptq blobs or message are wrong (header re-encoded with a valid CRC)

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- tests poke invalid values into the decoded message
function withHeader(bytes: Uint8Array, edit: (header: any) => void): Uint8Array {
  const trailer = decodeTrailer(bytes.subarray(bytes.length - TRAILER_BYTES), bytes.length, "x");
  const header = pb.Header.decode(bytes.subarray(trailer.headerOffset, trailer.headerOffset + trailer.headerLength));
  edit(header);
  const encoded = pb.Header.encode(header).finish();
  const out = new Uint8Array(trailer.headerOffset + encoded.length + TRAILER_BYTES);
  out.set(bytes.subarray(0, trailer.headerOffset));
  out.set(encoded, trailer.headerOffset);
  out.set(encodeTrailer(trailer.headerOffset, encoded), trailer.headerOffset + encoded.length);
  return out;
}
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- decoded protobuf messages
const layerOf = (h: any) => h.tensors.find((t: any) => t.name === `${MODULE}.weight`);
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- decoded protobuf messages
const blobOf = (h: any, role: VptqSuffix) => layerOf(h).blobs.find((b: any) => b.role === role);
const DTYPE = { I32: 10, F32: 12 };

const containerCases: { name: string; code: string; edit: (h: unknown) => void; blob?: VptqSuffix }[] = [
  { name: "perm blob as I32 (same bytes)", code: "CONTAINER_BLOB_INVALID", blob: "perm", edit: (h) => Object.assign(blobOf(h, "perm"), { dtype: DTYPE.I32, shape: [192] }) },
  { name: "centroids blob as F32 (same bytes)", code: "CONTAINER_BLOB_INVALID", blob: "centroids.weight", edit: (h) => Object.assign(blobOf(h, "centroids.weight"), { dtype: DTYPE.F32, shape: [1, 1024] }) },
  { name: "indices blob one word short per row", code: "CONTAINER_BLOB_INVALID", blob: "indices", edit: (h) => Object.assign(blobOf(h, "indices"), { shape: [1, 16, 143], byteLength: 16 * 143 * 4 }) },
  { name: "res_centroids blob of a layer without a residual codebook", code: "CONTAINER_BLOB_INVALID", blob: "res_centroids.weight", edit: (h) => (layerOf(h).vptq.numResCentroids = 0) },
  { name: "no weight_scale blob", code: "CONTAINER_BLOB_INVALID", edit: (h) => (layerOf(h).blobs = layerOf(h).blobs.filter((b: { role: string }) => b.role !== "weight_scale")) },
  { name: "a vptq message with num_centroids 255", code: "CONTAINER_HEADER_INVALID", edit: (h) => (layerOf(h).vptq.numCentroids = 255) },
];

let container: Uint8Array | undefined;
async function vptqContainer(): Promise<Uint8Array> {
  if (container !== undefined) return container;
  const path = join(work.path, "vptq.lmpack");
  const checkpoint = await openCheckpoint(VPTQ);
  await exportLmpack(checkpoint, path);
  await checkpoint.close();
  container = new Uint8Array(await readFile(path));
  assert.is(await openAndRead(path), undefined, "the unmodified .lmpack reads");
  return container;
}

for (const c of containerCases) {
  test(`.lmpack with ${c.name} → ${c.code}`, async () => {
    const original = await vptqContainer();
    const path = join(work.path, `${c.name.replace(/\W+/g, "-")}.lmpack`);
    await writeFile(path, withHeader(original, c.edit));
    const trailer = decodeTrailer(original.subarray(original.length - TRAILER_BYTES), original.length, "x");
    const header = pb.Header.decode(original.subarray(trailer.headerOffset, trailer.headerOffset + trailer.headerLength));
    const byteOffset = c.blob === undefined ? undefined : Number(blobOf(header, c.blob).byteOffset);
    assertRefused(await openAndRead(path), c.code, { file: path, tensor: `${MODULE}.weight`, ...(byteOffset === undefined ? {} : { byteOffset }) });
  });
}

test.run();
