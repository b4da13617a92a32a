import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { ConversionError } from "../../formats/errors.js";
import { exportLmpack } from "../../converters/lmpack/export.js";
import { decodeTrailer, encodeTrailer, TRAILER_BYTES } from "../../converters/lmpack/layout.js";
import { pb } from "../../converters/lmpack/proto.js";
import { openCheckpoint } from "../../converters/open.js";
import { FormatError } from "../../formats/errors.js";
import { packHfSpqr, unpackHfSpqr } from "../../formats/spqr/hf-layout.js";
import { SPQR_DEFAULTS } from "../../formats/spqr/types.js";
import type { PackedArray } from "../../formats/packed-array.js";
import { SHARED_DIR, tempDir } from "../helpers/paths.js";
import { writeHfDir, type ArraySpec } from "../helpers/packed-checkpoint.js";
import { mulberry32 } from "../helpers/prng.js";
import { readAllArrays } from "../helpers/safetensors-arrays.js";

/**
 * Hostile SpQR layers are refused with a typed FormatError whose code is the documented one and
 * whose fields and message name the file, the tensor and the exact byte offset of the fault:
 * (a) unpackHfSpqr on mutated copies of the golden 64x128 CSR and PTCSR layers, one row per
 * fault (offsets, columns, the permutation, word counts, second-order bytes, dtypes), plus a
 * 32784-column layer for the signed-short column limit and a seeded bit-flip fuzz (every flip is
 * refused or round-trips exactly); (b) the same faults and config faults through openCheckpoint
 * on a rewritten copy of tinystories-656K-spqr; (c) a .lmpack whose spqr blobs are wrong.
 */
const VECTORS = join(SHARED_DIR, "vectors", "spqr");
const SPQR = join(SHARED_DIR, "checkpoints", "tinystories-656K-spqr");
const ROLES = ["dense_weights", "row_offsets", "col_vals", "in_perm"] as const;
type Role = (typeof ROLES)[number];
type Layer = Record<Role, PackedArray>;
const test = suite("spqr: hostile layers");

let work: Awaited<ReturnType<typeof tempDir>>;
const golden: Partial<Record<"csr" | "ptcsr", Layer>> = {};
test.before(async () => {
  work = await tempDir("lmpack-spqr-bad-");
  for (const storage of ["csr", "ptcsr"] as const) {
    const { arrays } = await readAllArrays(join(VECTORS, `spqr-64x128-engine-${storage}.safetensors`));
    // Distinctive names, so that "names the tensor" cannot pass by accident.
    golden[storage] = Object.fromEntries(ROLES.map((r) => [r, { ...arrays.get(r)!, name: `golden.${storage}.${r}` }])) as Layer;
  }
});
test.after(() => work.cleanup());

const [M, N] = [64, 128];
const copyLayer = (l: Layer): Layer => Object.fromEntries(ROLES.map((r) => [r, { ...l[r], shape: [...l[r].shape], bytes: l[r].bytes.slice() }])) as Layer;
const i32 = (a: { bytes: Uint8Array }) => new Int32Array(a.bytes.buffer, a.bytes.byteOffset, a.bytes.byteLength / 4);
const u32 = (a: { bytes: Uint8Array }) => new Uint32Array(a.bytes.buffer, a.bytes.byteOffset, a.bytes.byteLength / 4);
const u16 = (a: { bytes: Uint8Array }) => new Uint16Array(a.bytes.buffer, a.bytes.byteOffset, a.bytes.byteLength / 2);
/** Replaces an array's elements (4 bytes each unless told): the shape follows. */
const resize = (a: PackedArray, elements: number, bytesPer = 4) => {
  const bytes = new Uint8Array(elements * bytesPer);
  bytes.set(a.bytes.subarray(0, Math.min(a.bytes.length, bytes.length)));
  Object.assign(a, { bytes, shape: [elements] });
};
/** First row (CSR) with at least `min` outliers. */
const rowWith = (offsets: Int32Array, min: number) => offsets.findIndex((o, r) => r < offsets.length - 1 && offsets[r + 1]! - o >= min);

/** Expects a FormatError with `code` that names `file`, `tensor` and `byteOffset` in its fields and message. */
function assertRefused(error: unknown, code: string, where: { file?: string; tensor?: string; byteOffset?: number }): void {
  assert.instance(error, FormatError, `expected a FormatError, got ${String(error)}`);
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
  }
}
const unpack = (l: Layer) => unpackHfSpqr({ denseWeights: l.dense_weights, rowOffsets: l.row_offsets, colVals: l.col_vals, inPerm: l.in_perm }, M, N);
function unpackError(l: Layer): unknown {
  try {
    unpack(l);
  } catch (error) {
    return error;
  }
  return undefined;
}

/** Each case mutates a copy of a golden layer and returns the array and byte (from its start) the error must name. */
const cases: { name: string; storage: "csr" | "ptcsr"; code: string; mutate: (l: Layer) => [Role, number] }[] = [
  { name: "row_offsets decreasing", storage: "csr", code: "PACKED_VALUE_INVALID", mutate: (l) => { const o = i32(l.row_offsets); const r = rowWith(o, 1) + 2; o[r] = o[r - 1]! - 1; return ["row_offsets", 4 * r]; } },
  { name: "last row offset past col_vals", storage: "csr", code: "PACKED_SHAPE_MISMATCH", mutate: (l) => { i32(l.row_offsets)[M]! += 1; return ["row_offsets", 4 * M]; } },
  { name: "last row offset short of col_vals (one extra entry)", storage: "csr", code: "PACKED_SHAPE_MISMATCH", mutate: (l) => { resize(l.col_vals, l.col_vals.shape[0]! + 1); return ["row_offsets", 4 * M]; } },
  { name: "row_offsets[0] = 1", storage: "csr", code: "PACKED_VALUE_INVALID", mutate: (l) => { i32(l.row_offsets)[0] = 1; return ["row_offsets", 0]; } },
  { name: "outlier column = in_features", storage: "csr", code: "PACKED_VALUE_INVALID", mutate: (l) => { const c = u32(l.col_vals); c[60] = (c[60]! & 0xffff0000) | N; return ["col_vals", 4 * 60]; } },
  { name: "outlier column 32768 (negative as int16)", storage: "csr", code: "PACKED_VALUE_INVALID", mutate: (l) => { const c = u32(l.col_vals); c[124] = (c[124]! & 0xffff0000) | 0x8000; return ["col_vals", 4 * 124]; } },
  { name: "in_perm with a duplicate", storage: "csr", code: "PACKED_VALUE_INVALID", mutate: (l) => { const p = u16(l.in_perm); p[77] = p[12]!; return ["in_perm", 2 * 77]; } },
  { name: "in_perm entry = in_features", storage: "csr", code: "PACKED_VALUE_INVALID", mutate: (l) => { u16(l.in_perm)[31] = N; return ["in_perm", 2 * 31]; } },
  { name: "in_perm entry 0xffff", storage: "ptcsr", code: "PACKED_VALUE_INVALID", mutate: (l) => { u16(l.in_perm)[0] = 0xffff; return ["in_perm", 0]; } },
  { name: "dense_weights one word short", storage: "csr", code: "PACKED_SHAPE_MISMATCH", mutate: (l) => { resize(l.dense_weights, 511, 8); return ["dense_weights", 0]; } },
  { name: "dense_weights one word long", storage: "ptcsr", code: "PACKED_SHAPE_MISMATCH", mutate: (l) => { resize(l.dense_weights, 513, 8); return ["dense_weights", 0]; } },
  { name: "in_perm one pair short", storage: "csr", code: "PACKED_SHAPE_MISMATCH", mutate: (l) => { resize(l.in_perm, N / 2 - 1); return ["in_perm", 0]; } },
  { name: "row_offsets of length m (neither m+1 nor m/16+1)", storage: "csr", code: "PACKED_SHAPE_MISMATCH", mutate: (l) => { resize(l.row_offsets, M); return ["row_offsets", 0]; } },
  { name: "row_offsets of length m/16+2", storage: "ptcsr", code: "PACKED_SHAPE_MISMATCH", mutate: (l) => { resize(l.row_offsets, M / 16 + 2); return ["row_offsets", 0]; } },
  // Tile (1, 2), rows 4 and 5: bits 54–61 of each word hold the same byte of the tile's second-order word.
  { name: "second-order bytes differing between tile rows 4 and 5", storage: "csr", code: "PACKED_VALUE_INVALID", mutate: (l) => { const w = (1 * (N / 16) + 2) * 16 + 5; u32(l.dense_weights)[2 * w + 1]! ^= 1 << 25; return ["dense_weights", 8 * w]; } },
  { name: "col_vals stored as F32", storage: "csr", code: "PACKED_DTYPE_MISMATCH", mutate: (l) => { l.col_vals.dtype = "F32"; return ["col_vals", 0]; } },
  { name: "col_vals stored as I16 pairs", storage: "ptcsr", code: "PACKED_DTYPE_MISMATCH", mutate: (l) => { Object.assign(l.col_vals, { dtype: "I16", shape: [2 * l.col_vals.shape[0]!] }); return ["col_vals", 0]; } },
  { name: "row_offsets stored as U32", storage: "csr", code: "PACKED_DTYPE_MISMATCH", mutate: (l) => { l.row_offsets.dtype = "U32"; return ["row_offsets", 0]; } },
  { name: "dense_weights stored as F64", storage: "csr", code: "PACKED_DTYPE_MISMATCH", mutate: (l) => { l.dense_weights.dtype = "F64"; return ["dense_weights", 0]; } },
  { name: "PTCSR block size 17 (not a multiple of 16)", storage: "ptcsr", code: "PACKED_VALUE_INVALID", mutate: (l) => { i32(l.row_offsets)[1]! += 1; return ["row_offsets", 4]; } },
  { name: "PTCSR last offset 16 past col_vals", storage: "ptcsr", code: "PACKED_SHAPE_MISMATCH", mutate: (l) => { i32(l.row_offsets)[M / 16]! += 16; return ["row_offsets", 4 * (M / 16)]; } },
  { name: "PTCSR offsets decreasing", storage: "ptcsr", code: "PACKED_VALUE_INVALID", mutate: (l) => { const o = i32(l.row_offsets); o[2] = o[1]! - 16; return ["row_offsets", 8]; } },
  {
    name: "PTCSR entry after its row's terminating zero", storage: "ptcsr", code: "PACKED_VALUE_INVALID",
    mutate: (l) => {
      // A row with at least two outliers: zero its first slot, so its second follows the terminator.
      const csr = unpack(golden.ptcsr!).outliers.rowOffsets;
      const r = rowWith(csr, 2);
      const [block, j] = [Math.floor(r / 16), r % 16];
      const at = i32(l.row_offsets)[block]! + j;
      u32(l.col_vals)[at] = 0;
      return ["col_vals", 4 * (at + 16)];
    },
  },
  { name: "PTCSR outlier column = in_features", storage: "ptcsr", code: "PACKED_VALUE_INVALID", mutate: (l) => { const c = u32(l.col_vals); const at = c.findIndex((e) => e !== 0); c[at] = (c[at]! & 0xffff0000) | N; return ["col_vals", 4 * at]; } },
];

for (const c of cases) {
  test(`unpack ${c.storage}: ${c.name} → ${c.code}`, () => {
    const layer = copyLayer(golden[c.storage]!);
    const [role, byte] = c.mutate(layer);
    const g = golden[c.storage]![role];
    assertRefused(unpackError(layer), c.code, { file: g.file!, tensor: g.name, byteOffset: g.byteOffset! + byte });
  });
}

test("the unmutated golden layers unpack (each case fails for its fault alone)", () => {
  for (const storage of ["csr", "ptcsr"] as const) assert.is(unpack(copyLayer(golden[storage]!)).outlierStorage, storage);
});

test("in_features 32784: an outlier at column 32767 is read, one at 32768 (negative for the kernel) is refused by the reader and the packer", () => {
  const [m, n] = [16, 32784];
  const groups = n / 16;
  const tensor = (column: number) => ({
    params: SPQR_DEFAULTS, outFeatures: m, inFeatures: n, perm: Uint16Array.from({ length: n }, (_, i) => n - 1 - i),
    codes: new Uint8Array(m * n), scaleCodes: new Uint8Array(groups * m), zeroCodes: new Uint8Array(groups * m),
    scaleScale: new Uint16Array(groups), scaleZero: new Uint16Array(groups), zeroScale: new Uint16Array(groups), zeroZero: new Uint16Array(groups),
    outliers: { rowOffsets: Int32Array.from({ length: m + 1 }, (_, r) => (r >= 4 ? 1 : 0)), cols: Uint16Array.of(column), values: Uint16Array.of(0x3c00) },
  });
  assert.throws(() => packHfSpqr(tensor(32768)), (e: unknown) => e instanceof ConversionError && e.code === "NOT_REPRESENTABLE");
  const layer = (column: number) => {
    const packed = packHfSpqr(tensor(32767));
    // A file written by something else: the column field patched past int16.
    new Uint32Array(packed.colVals.buffer, packed.colVals.byteOffset, 1)[0] = (0x3c00 << 16) | column;
    const array = (role: string, dtype: "I64" | "I32", bytes: Uint8Array): PackedArray => ({ name: `wide.${role}`, dtype, shape: [bytes.length / (dtype === "I64" ? 8 : 4)], bytes, file: "wide.safetensors", byteOffset: 1000 });
    return () => unpackHfSpqr({ denseWeights: array("dense_weights", "I64", packed.denseWeights), rowOffsets: array("row_offsets", "I32", packed.rowOffsets), colVals: array("col_vals", "I32", packed.colVals), inPerm: array("in_perm", "I32", packed.inPerm) }, m, n);
  };
  assert.equal([...layer(32767)().outliers.cols], [32767]);
  let error: unknown;
  try {
    layer(32768)();
  } catch (e) {
    error = e;
  }
  assertRefused(error, "PACKED_VALUE_INVALID", { file: "wide.safetensors", tensor: "wide.col_vals", byteOffset: 1000 });
});

test("seeded fuzz: 400 single-bit flips of the CSR layer are refused with a FormatError or read back exactly", () => {
  const rng = mulberry32(0x5b9e);
  const counts = { refused: 0, accepted: 0 };
  for (let trial = 0; trial < 400; trial++) {
    const layer = copyLayer(golden.csr!);
    const role = ROLES[Math.floor(rng() * ROLES.length)]!;
    const byte = Math.floor(rng() * layer[role].bytes.length);
    const bit = Math.floor(rng() * 8);
    layer[role].bytes[byte]! ^= 1 << bit;
    let t;
    try {
      t = unpack(layer);
    } catch (error) {
      assert.instance(error, FormatError, `${role} byte ${byte} bit ${bit}: ${String(error)}`);
      counts.refused++;
      continue;
    }
    counts.accepted++;
    // Bits 62–63 of a dense word are unused: the repack clears them. Everything else must come back as read.
    const unused = role === "dense_weights" && byte % 8 === 7 && bit >= 6;
    const packed = packHfSpqr(t);
    const back = { dense_weights: packed.denseWeights, row_offsets: packed.rowOffsets, col_vals: packed.colVals, in_perm: packed.inPerm }[role];
    const expected = unused ? golden.csr![role].bytes : layer[role].bytes;
    assert.is(back.findIndex((b, i) => b !== expected[i]), -1, `${role} byte ${byte} bit ${bit}: accepted but not read back as stored`);
  }
  assert.ok(counts.refused > 0 && counts.accepted > 0, JSON.stringify(counts));
  console.log(`  bit flips: ${counts.refused} refused, ${counts.accepted} read back exactly`);
});

// ---------------------------------------------------------------------------------------------
// (b) Through openCheckpoint, on a rewritten copy of the checkpoint

const MODULE = "model.layers.1.mlp.down_proj"; // [128, 384]: dense_weights 3072, row_offsets 129, col_vals 503, in_perm 192
type Arrays = Map<string, ArraySpec>;
const fileCases: { name: string; code: string; mutate?: (a: Arrays) => void; quant?: (q: Record<string, unknown>) => void; tensor?: Role; at?: number; inConfig?: boolean }[] = [
  { name: "row_offsets decreasing", code: "PACKED_VALUE_INVALID", tensor: "row_offsets", at: 4 * 50, mutate: (a) => { const o = i32(a.get(`${MODULE}.row_offsets`)!); o[50] = o[49]! - 1; } },
  { name: "in_perm with a duplicate", code: "PACKED_VALUE_INVALID", tensor: "in_perm", at: 2 * 300, mutate: (a) => { const p = u16(a.get(`${MODULE}.in_perm`)!); p[300] = p[7]!; } },
  { name: "second-order bytes differing in a tile", code: "PACKED_VALUE_INVALID", tensor: "dense_weights", at: 8 * 1001, mutate: (a) => { u32(a.get(`${MODULE}.dense_weights`)!)[2 * 1001 + 1]! ^= 1 << 29; } },
  { name: "outlier column = in_features", code: "PACKED_VALUE_INVALID", tensor: "col_vals", at: 4 * 502, mutate: (a) => { const c = u32(a.get(`${MODULE}.col_vals`)!); c[502] = (c[502]! & 0xffff0000) | 384; } },
  { name: "col_vals stored as F32", code: "PACKED_DTYPE_MISMATCH", tensor: "col_vals", at: 0, mutate: (a) => (a.get(`${MODULE}.col_vals`)!.dtype = "F32") },
  { name: "dense_weights one word short (shapes updated)", code: "PACKED_SHAPE_MISMATCH", tensor: "dense_weights", at: 0, mutate: (a) => resize(a.get(`${MODULE}.dense_weights`) as PackedArray, 3071, 8), quant: (q) => (shapesOf(q)[`${MODULE}.dense_weights.shape`] = 3071) },
  { name: "row_offsets of length 128 (shapes updated)", code: "PACKED_SHAPE_MISMATCH", tensor: "row_offsets", at: 0, mutate: (a) => resize(a.get(`${MODULE}.row_offsets`) as PackedArray, 128), quant: (q) => (shapesOf(q)[`${MODULE}.row_offsets.shape`] = 128) },
  { name: "col_vals missing", code: "TENSOR_MISSING", tensor: "col_vals", mutate: (a) => a.delete(`${MODULE}.col_vals`) },
  { name: "modules_to_not_convert lists a packed layer", code: "QUANT_CONFIG_INVALID", tensor: "dense_weights", quant: (q) => (q["modules_to_not_convert"] as string[]).push(`${MODULE}.weight`) },
  { name: "config shapes disagreeing with col_vals", code: "QUANT_CONFIG_INVALID", tensor: "col_vals", inConfig: true, quant: (q) => (shapesOf(q)[`${MODULE}.col_vals.shape`] = 502) },
  { name: "bits 4", code: "QUANT_CONFIG_INVALID", inConfig: true, quant: (q) => (q["bits"] = 4) },
  { name: "beta1 8", code: "QUANT_CONFIG_INVALID", inConfig: true, quant: (q) => (q["beta1"] = 8) },
];
const shapesOf = (q: Record<string, unknown>) => q["shapes"] as Record<string, number>;

async function openAndLoad(source: string): Promise<unknown> {
  try {
    const checkpoint = await openCheckpoint(source);
    try {
      for (const t of checkpoint.tensors) await t.packed?.load();
    } finally {
      await checkpoint.close();
    }
  } catch (error) {
    return error;
  }
  return undefined;
}

async function rewrittenCopy(name: string, mutate?: (a: Arrays) => void, quant?: (q: Record<string, unknown>) => void): Promise<string> {
  const { arrays } = await readAllArrays(join(SPQR, "model.safetensors"));
  const copy: Arrays = new Map([...arrays].map(([k, a]) => [k, { name: k, dtype: a.dtype, shape: [...a.shape], bytes: a.bytes.slice() }]));
  mutate?.(copy);
  const config = JSON.parse(await readFile(join(SPQR, "config.json"), "utf8")) as Record<string, unknown>;
  const q = structuredClone(config["quantization_config"]) as Record<string, unknown>;
  quant?.(q);
  return writeHfDir(join(work.path, name.replace(/\W+/g, "-")), { ...config, quantization_config: q }, [...copy.values()]);
}

for (const c of fileCases) {
  test(`checkpoint copy: ${c.name} → ${c.code}`, async () => {
    const dir = await rewrittenCopy(c.name, c.mutate, c.quant);
    const weights = join(dir, "model.safetensors");
    const tensor = c.tensor === undefined ? undefined : `${MODULE}.${c.tensor}`;
    // The absolute byte offset in the rewritten file: where the tensor's data starts, plus the fault's place.
    const start = c.at === undefined ? undefined : (await readAllArrays(weights)).arrays.get(tensor!)!.byteOffset!;
    assertRefused(await openAndLoad(dir), c.code, { file: c.inConfig || c.tensor === undefined ? join(dir, "config.json") : weights, ...(tensor === undefined ? {} : { tensor }), ...(start === undefined ? {} : { byteOffset: start + c.at! }) });
  });
}

test("the unmodified rewritten copy opens and loads", async () => {
  assert.is(await openAndLoad(await rewrittenCopy("intact")), undefined);
});

// ---------------------------------------------------------------------------------------------
// (c) A .lmpack whose spqr blobs or message are wrong (header re-encoded with a valid CRC)

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
const blobOf = (h: any, role: Role) => layerOf(h).blobs.find((b: any) => b.role === role);
const DTYPE = { I64: 14, F32: 12 };

const containerCases: { name: string; code: string; edit: (h: unknown) => void; blob?: Role; tensor?: string }[] = [
  { name: "dense_weights blob as I64", code: "CONTAINER_BLOB_INVALID", blob: "dense_weights", edit: (h) => (blobOf(h, "dense_weights").dtype = DTYPE.I64) },
  { name: "col_vals blob as F32", code: "CONTAINER_BLOB_INVALID", blob: "col_vals", edit: (h) => (blobOf(h, "col_vals").dtype = DTYPE.F32) },
  { name: "in_perm blob of 191 entries", code: "CONTAINER_BLOB_INVALID", blob: "in_perm", edit: (h) => Object.assign(blobOf(h, "in_perm"), { shape: [191], byteLength: 764 }) },
  { name: "no row_offsets blob", code: "CONTAINER_BLOB_INVALID", edit: (h) => (layerOf(h).blobs = layerOf(h).blobs.filter((b: { role: string }) => b.role !== "row_offsets")) },
  { name: "a spqr message with bits 4", code: "CONTAINER_HEADER_INVALID", edit: (h) => (layerOf(h).spqr.bits = 4) },
  // Passes the container's checks (row_offsets has no fixed length there; checksum dropped); the unpacker refuses it on load.
  { name: "row_offsets blob of 128 entries", code: "PACKED_SHAPE_MISMATCH", blob: "row_offsets", tensor: `${MODULE}.weight (row_offsets)`, edit: (h) => Object.assign(blobOf(h, "row_offsets"), { shape: [128], byteLength: 512, checksumAlgorithm: 0, checksum: new Uint8Array(0) }) },
];

let container: Uint8Array | undefined;
async function spqrContainer(): Promise<Uint8Array> {
  if (container !== undefined) return container;
  const path = join(work.path, "spqr.lmpack");
  const checkpoint = await openCheckpoint(SPQR);
  await exportLmpack(checkpoint, path);
  await checkpoint.close();
  container = new Uint8Array(await readFile(path));
  assert.is(await openAndLoad(path), undefined, "the unmodified .lmpack loads");
  return container;
}

for (const c of containerCases) {
  test(`.lmpack with ${c.name} → ${c.code}`, async () => {
    const original = await spqrContainer();
    const path = join(work.path, `${c.name.replace(/\W+/g, "-")}.lmpack`);
    await writeFile(path, withHeader(original, c.edit));
    const trailer = decodeTrailer(original.subarray(original.length - TRAILER_BYTES), original.length, "x");
    const header = pb.Header.decode(original.subarray(trailer.headerOffset, trailer.headerOffset + trailer.headerLength));
    const byteOffset = c.blob === undefined ? undefined : Number(blobOf(header, c.blob).byteOffset);
    assertRefused(await openAndLoad(path), c.code, { file: path, tensor: c.tensor ?? `${MODULE}.weight`, ...(byteOffset === undefined ? {} : { byteOffset }) });
  });
}

test.run();
