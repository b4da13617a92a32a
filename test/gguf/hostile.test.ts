import { suite } from "uvu";
import * as assert from "uvu/assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { FormatError, type FormatErrorCode } from "../../formats/errors.js";
import { BufferSource } from "../../converters/io/random-access.js";
import { GgufFile } from "../../converters/gguf/reader.js";
import { ggufBytes } from "../../converters/gguf/writer.js";
import { GgufType, type GgufArray, type GgufValue } from "../../converters/gguf/layout.js";
import { SHARED_DIR } from "../helpers/paths.js";
import { mulberry32, type Rng } from "../helpers/prng.js";

/**
 * Hostile GGUF files, one table row per planted defect, each built with a tiny byte builder
 * (or by patching the shared F16 file) and each refused with its own FormatError code and the
 * byte offset of the defect. Then a seeded mutation fuzz: every mutant parses or is refused
 * with a FormatError, within the file's own size.
 *
 *   LMPACK_FUZZ_SEED=<u32> LMPACK_GGUF_FUZZ_ITERATIONS=<n> LMPACK_FUZZ_VERBOSE=1 (prints the outcome counts)
 */

const NAME = "case.gguf";
const enc = new TextEncoder();

/** Byte builder; `mark` records where a labelled field starts, so a row can name the defect's offset. */
class Bytes {
  private readonly out: number[] = [];
  readonly marks = new Map<string, number>();
  constructor(readonly wide: boolean) {}
  get length(): number {
    return this.out.length;
  }
  mark(label: string): this {
    this.marks.set(label, this.out.length);
    return this;
  }
  raw(bytes: ArrayLike<number>): this {
    for (let i = 0; i < bytes.length; i++) this.out.push(bytes[i]!);
    return this;
  }
  u32(v: number): this {
    return this.raw([v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24]);
  }
  u64(v: number | bigint): this {
    const b = BigInt.asUintN(64, BigInt(v));
    return this.raw(Array.from({ length: 8 }, (_, i) => Number((b >> BigInt(8 * i)) & 0xffn)));
  }
  /** A count or length: u32 in v1, u64 after. */
  len(v: number | bigint): this {
    return this.wide ? this.u64(v) : this.u32(Number(v));
  }
  str(s: string | ArrayLike<number>, length?: number | bigint): this {
    const b = typeof s === "string" ? enc.encode(s) : s;
    return this.len(length ?? b.length).raw(b);
  }
  bytes(): Uint8Array {
    return Uint8Array.from(this.out);
  }
}

type Writer = (b: Bytes) => void;
interface Kv { key: string | number[]; type: number; value: Writer; keyLength?: number | bigint }
interface Info { name: string | number[]; ne: (number | bigint)[]; type: number; offset: number | bigint; nDims?: number }
interface Spec { magic?: number[]; version?: number; tensorCount?: bigint; kvCount?: bigint; kvs: Kv[]; infos: Info[]; alignment?: number; dataBytes?: number; cut?: number | { at: string; plus: number } }

const u32v = (v: number): Writer => (b) => b.u32(v);
const strv = (s: string | number[], length?: number | bigint): Writer => (b) => b.str(s, length);
/** An array value; `label` marks its header. */
const arrv = (itemType: number, count: number | bigint, items: Writer, label?: string): Writer => (b) => {
  if (label !== undefined) b.mark(label);
  b.u32(itemType).len(count);
  items(b);
};

function build(spec: Spec): { bytes: Uint8Array; marks: Map<string, number> } {
  const version = spec.version ?? 3;
  const b = new Bytes(version !== 1);
  b.raw(spec.magic ?? [0x47, 0x47, 0x55, 0x46]).u32(version);
  b.mark("tensorCount").len(spec.tensorCount ?? BigInt(spec.infos.length));
  b.mark("kvCount").len(spec.kvCount ?? BigInt(spec.kvs.length));
  spec.kvs.forEach((kv, i) => {
    b.mark(`kv${i}`).str(kv.key, kv.keyLength).mark(`kv${i}.type`).u32(kv.type).mark(`kv${i}.value`);
    kv.value(b);
  });
  spec.infos.forEach((t, i) => {
    b.mark(`info${i}`).str(t.name).mark(`info${i}.ndims`).u32(t.nDims ?? t.ne.length);
    for (const d of t.ne) b.len(d);
    b.mark(`info${i}.type`).u32(t.type).mark(`info${i}.offset`).u64(t.offset);
  });
  const alignment = spec.alignment ?? 32;
  while (b.length % alignment !== 0) b.raw([0]);
  b.raw(new Uint8Array(spec.dataBytes ?? 64));
  const bytes = b.bytes();
  const cut = spec.cut === undefined ? bytes.length : typeof spec.cut === "number" ? spec.cut : b.marks.get(spec.cut.at)! + spec.cut.plus;
  return { bytes: bytes.subarray(0, cut), marks: b.marks };
}

/** The valid base: a few KVs, an F32 [2, 4] tensor at 0 and an F16 [8] tensor at 32. */
function base(over: Partial<Spec> = {}): Spec {
  return {
    kvs: [
      { key: "general.architecture", type: GgufType.STRING, value: strv("llama") },
      { key: "a.u32", type: GgufType.UINT32, value: u32v(7) },
      { key: "a.arr", type: GgufType.ARRAY, value: arrv(GgufType.INT32, 3, (b) => b.u32(1).u32(2).u32(3)) },
    ],
    infos: [
      { name: "w", ne: [4, 2], type: 0, offset: 0 },
      { name: "v", ne: [8], type: 1, offset: 32 },
    ],
    ...over,
  };
}

const withKv = (kv: Kv, over: Partial<Spec> = {}): Spec => base({ kvs: [kv], ...over });
const withInfo = (i: number, info: Partial<Info>): Spec => {
  const spec = base();
  spec.infos[i] = { ...spec.infos[i]!, ...info };
  return spec;
};
/** n arrays nested inside each other around one INT32; the innermost array header is marked "deepest". */
const nested = (n: number): Writer => (n === 1 ? arrv(GgufType.INT32, 1, (b) => b.u32(5), "deepest") : arrv(GgufType.ARRAY, 1, nested(n - 1)));

interface Row {
  name: string;
  spec: Spec;
  code: FormatErrorCode;
  /** Label of the marked field (or a number) the error must name as its byte offset. */
  at: string | number;
  /** Extra bytes past the mark (e.g. into a string). */
  plus?: number;
  /** Key or tensor the error must name. */
  names?: string;
}

const rows: Row[] = [
  { name: "bad magic", spec: base({ magic: [0x47, 0x47, 0x55, 0x47] }), code: "GGUF_BAD_MAGIC", at: 0 },
  { name: "unsupported version 4", spec: base({ version: 4 }), code: "GGUF_BAD_VERSION", at: 4 },
  { name: "big-endian version", spec: base({ version: 0x03000000 }), code: "GGUF_BAD_VERSION", at: 4 },
  { name: "file shorter than magic and version", spec: { ...base(), cut: 6 }, code: "GGUF_TRUNCATED", at: 0 },
  { name: "huge KV count", spec: base({ kvCount: 1n << 40n }), code: "GGUF_COUNT_TOO_LARGE", at: "kvCount" },
  { name: "KV count under the cap but more than the file holds", spec: base({ kvCount: 60_000n }), code: "GGUF_COUNT_TOO_LARGE", at: "kvCount" },
  { name: "huge tensor count", spec: base({ tensorCount: 1n << 62n }), code: "GGUF_COUNT_TOO_LARGE", at: "tensorCount" },
  { name: "v1: KV count 2^32 - 1", spec: base({ version: 1, kvCount: 0xffffffffn }), code: "GGUF_COUNT_TOO_LARGE", at: "kvCount" },
  { name: "key length past EOF", spec: withKv({ key: "k", keyLength: 5000, type: 4, value: u32v(1) }), code: "GGUF_TRUNCATED", at: "kv0", plus: 8, names: undefined },
  { name: "v1: string value length past EOF", spec: withKv({ key: "k", type: GgufType.STRING, value: strv("abc", 4000) }, { version: 1 }), code: "GGUF_TRUNCATED", at: "kv0.value", plus: 4, names: "k" },
  { name: "string value length past EOF", spec: withKv({ key: "k", type: GgufType.STRING, value: strv("abc", 4000) }), code: "GGUF_TRUNCATED", at: "kv0.value", plus: 8, names: "k" },
  { name: "string value over the cap", spec: withKv({ key: "k", type: GgufType.STRING, value: strv("abc", 1n << 40n) }), code: "GGUF_STRING_TOO_LONG", at: "kv0.value", names: "k" },
  { name: "key over the cap", spec: withKv({ key: "k", keyLength: 1n << 20n, type: 4, value: u32v(1) }), code: "GGUF_STRING_TOO_LONG", at: "kv0" },
  { name: "array count past EOF", spec: withKv({ key: "k", type: GgufType.ARRAY, value: arrv(GgufType.INT32, 1000, (b) => b.u32(1)) }), code: "GGUF_TRUNCATED", at: "kv0.value", plus: 4, names: "k" },
  { name: "string array count past EOF", spec: withKv({ key: "k", type: GgufType.ARRAY, value: arrv(GgufType.STRING, 100, (b) => b.str("x")) }), code: "GGUF_TRUNCATED", at: "kv0.value", plus: 4, names: "k" },
  { name: "array count over the cap", spec: withKv({ key: "k", type: GgufType.ARRAY, value: arrv(GgufType.UINT8, 1n << 40n, () => undefined) }), code: "GGUF_ARRAY_TOO_LONG", at: "kv0.value", plus: 4, names: "k" },
  { name: "arrays nested past the depth cap", spec: withKv({ key: "k", type: GgufType.ARRAY, value: nested(5) }), code: "GGUF_TOO_DEEP", at: "deepest", names: "k" },
  { name: "unknown value type", spec: withKv({ key: "k", type: 13, value: u32v(0) }), code: "GGUF_VALUE_TYPE_INVALID", at: "kv0.type", names: "k" },
  { name: "unknown array item type", spec: withKv({ key: "k", type: GgufType.ARRAY, value: arrv(99, 0, () => undefined) }), code: "GGUF_VALUE_TYPE_INVALID", at: "kv0.value", names: "k" },
  { name: "BOOL = 2", spec: withKv({ key: "k", type: GgufType.BOOL, value: (b) => b.raw([2]) }), code: "GGUF_BOOL_INVALID", at: "kv0.value", names: "k" },
  { name: "BOOL array item = 2", spec: withKv({ key: "k", type: GgufType.ARRAY, value: arrv(GgufType.BOOL, 2, (b) => b.raw([1, 2])) }), code: "GGUF_BOOL_INVALID", at: "kv0.value", plus: 12 + 1, names: "k" },
  { name: "invalid UTF-8 in a string value", spec: withKv({ key: "k", type: GgufType.STRING, value: strv([0x63, 0x61, 0x66, 0xff]) }), code: "HEADER_INVALID_UTF8", at: "kv0.value", plus: 8 + 3, names: "k" },
  { name: "UTF-16 surrogate in a key", spec: withKv({ key: [0x61, 0xed, 0xa0, 0x80], type: 4, value: u32v(1) }), code: "HEADER_INVALID_UTF8", at: "kv0", plus: 8 + 1 },
  { name: "overlong UTF-8 in a tensor name", spec: withInfo(0, { name: [0xc0, 0x80] }), code: "HEADER_INVALID_UTF8", at: "info0", plus: 8 },
  { name: "duplicate key", spec: base({ kvs: [{ key: "k", type: 4, value: u32v(1) }, { key: "k", type: 4, value: u32v(2) }] }), code: "DUPLICATE_KEY", at: "kv1", names: "k" },
  { name: "alignment not a power of two", spec: withKv({ key: "general.alignment", type: GgufType.UINT32, value: u32v(48) }), code: "GGUF_ALIGNMENT_INVALID", at: "kv0", names: "general.alignment" },
  { name: "alignment zero", spec: withKv({ key: "general.alignment", type: GgufType.UINT32, value: u32v(0) }), code: "GGUF_ALIGNMENT_INVALID", at: "kv0", names: "general.alignment" },
  { name: "alignment not UINT32", spec: withKv({ key: "general.alignment", type: GgufType.UINT64, value: (b) => b.u64(32) }), code: "GGUF_ALIGNMENT_INVALID", at: "kv0", names: "general.alignment" },
  { name: "tensor name of 64 bytes", spec: withInfo(0, { name: "n".repeat(64) }), code: "GGUF_NAME_TOO_LONG", at: "info0" },
  { name: "duplicate tensor name", spec: withInfo(1, { name: "w" }), code: "TENSOR_DUPLICATE", at: "info1", names: "w" },
  { name: "n_dims 5", spec: withInfo(0, { ne: [1, 1, 1, 1, 8] }), code: "SHAPE_INVALID", at: "info0.ndims", names: "w" },
  { name: "dims whose product overflows", spec: withInfo(0, { ne: [1n << 32n, 1n << 32n, 1n << 32n] }), code: "SHAPE_OVERFLOW", at: "info0", names: "w" },
  { name: "one dim past 2^53", spec: withInfo(0, { ne: [1n << 60n, 0] }), code: "SHAPE_OVERFLOW", at: "info0", names: "w" },
  { name: "negative dim", spec: withInfo(0, { ne: [4, -1n] }), code: "SHAPE_INVALID", at: "info0", names: "w" },
  { name: "ne[0] not a multiple of the Q8_0 block", spec: withInfo(0, { ne: [33], type: 8 }), code: "GGUF_ROW_NOT_BLOCKS", at: "info0", names: "w" },
  { name: "unknown ggml type id", spec: withInfo(0, { type: 99 }), code: "UNKNOWN_DTYPE", at: "info0.type", names: "w" },
  { name: "removed ggml type Q4_2", spec: withInfo(0, { type: 4 }), code: "UNKNOWN_DTYPE", at: "info0.type", names: "w" },
  { name: "tensor offset misaligned", spec: withInfo(1, { offset: 36 }), code: "GGUF_OFFSET_MISALIGNED", at: "info1.offset", names: "v" },
  { name: "tensor data past EOF", spec: withInfo(1, { offset: 1024 }), code: "OFFSET_PAST_EOF", at: "info1", names: "v" },
  { name: "tensor offset near 2^64", spec: withInfo(1, { offset: (1n << 64n) - 32n }), code: "OFFSET_PAST_EOF", at: "info1.offset", names: "v" },
  { name: "overlapping tensors", spec: withInfo(1, { offset: 0 }), code: "OFFSETS_OVERLAP", at: "info1", names: "v" },
  { name: "file cut inside the tensor infos", spec: { ...base(), cut: { at: "info1", plus: 8 + 1 + 2 } }, code: "GGUF_TRUNCATED", at: "info1", plus: 8 + 1, names: "v" },
];

function refusal(bytes: Uint8Array): Promise<unknown> {
  return GgufFile.fromSource(new BufferSource(bytes, NAME)).then(
    () => undefined,
    (error: unknown) => error,
  );
}

const hostile = suite("gguf hostile files");

hostile("the base specs parse (v1, v2, v3; arrays nested to the cap)", async () => {
  for (const version of [1, 2, 3]) {
    const spec = base({ version });
    spec.kvs.push({ key: "deep", type: GgufType.ARRAY, value: nested(4) });
    const file = await GgufFile.fromSource(new BufferSource(build(spec).bytes, NAME));
    assert.equal(file.tensors.map((t) => [t.name, t.shape, t.byteLength]), [["w", [2, 4], 32], ["v", [8], 16]]);
    assert.is(file.metadata.string("general.architecture"), "llama");
  }
});

for (const row of rows) {
  hostile(row.name, async () => {
    const { bytes, marks } = build(row.spec);
    const error = await refusal(bytes);
    if (!(error instanceof FormatError)) return assert.unreachable(`expected FormatError ${row.code}, got ${String(error)}`);
    const at = (typeof row.at === "number" ? row.at : marks.get(row.at)!) + (row.plus ?? 0);
    assert.is(error.code, row.code, error.message);
    assert.is(error.file, NAME);
    assert.is(error.byteOffset, at, error.message);
    assert.ok(error.message.includes(`at byte ${at}`), error.message);
    if (row.names !== undefined) assert.is(error.tensor, row.names, error.message);
  });
}

// ---------------------------------------------------------------------------------------------
// The shared F16 file (gguf-py output), patched in place.

const F16_PATH = join(SHARED_DIR, "checkpoints", "gguf", "tinystories-656K-f16.gguf");

async function patchedF16(patch: (bytes: Uint8Array, file: GgufFile) => { bytes: Uint8Array; at: number }): Promise<{ error: unknown; at: number }> {
  const original = new Uint8Array(readFileSync(F16_PATH));
  const file = await GgufFile.fromSource(new BufferSource(original, NAME));
  const { bytes, at } = patch(original.slice(), file);
  return { error: await refusal(bytes), at };
}

const real: { name: string; code: FormatErrorCode; names?: string; patch: (bytes: Uint8Array, file: GgufFile) => { bytes: Uint8Array; at: number } }[] = [
  {
    name: "version 4", code: "GGUF_BAD_VERSION",
    patch: (b) => ((b[4] = 4), { bytes: b, at: 4 }),
  },
  {
    name: "first tensor's type id 99", code: "UNKNOWN_DTYPE", names: "token_embd.weight",
    patch: (b, f) => {
      const t = f.tensors[0]!;
      const at = t.infoByteOffset + 8 + t.name.length + 4 + 8 * t.ne.length;
      b[at] = 99;
      return { bytes: b, at };
    },
  },
  {
    name: "add_bos_token = 2", code: "GGUF_BOOL_INVALID", names: "tokenizer.ggml.add_bos_token",
    patch: (b, f) => {
      const key = "tokenizer.ggml.add_bos_token";
      const at = f.header.kvOffsets.get(key)! + 8 + key.length + 4;
      b[at] = 2;
      return { bytes: b, at };
    },
  },
  {
    name: "last 100 bytes cut off", code: "OFFSET_PAST_EOF", names: "output_norm.weight",
    patch: (b, f) => ({ bytes: b.subarray(0, b.length - 100), at: f.tensor("output_norm.weight").infoByteOffset }),
  },
];

for (const row of real) {
  hostile(`shared F16 file: ${row.name}`, async () => {
    const { error, at } = await patchedF16(row.patch);
    if (!(error instanceof FormatError)) return assert.unreachable(`expected FormatError ${row.code}, got ${String(error)}`);
    assert.is(error.code, row.code, error.message);
    assert.is(error.byteOffset, at, error.message);
    if (row.names !== undefined) assert.is(error.tensor, row.names);
  });
}

// ---------------------------------------------------------------------------------------------
// Seeded mutation fuzz.

const SEED = Number(process.env["LMPACK_FUZZ_SEED"] ?? 0x66756a7a) >>> 0;
const ITERATIONS = Number(process.env["LMPACK_GGUF_FUZZ_ITERATIONS"] ?? 2_000);
/** A parse of these small inputs takes milliseconds; anything near this is a runaway loop. */
const MAX_PARSE_MS = 2_000;

const int = (rng: Rng, n: number): number => Math.floor(rng() * n);
/** Values a corrupted length or count field likes to take: boundaries of every width. */
const INTERESTING = [0n, 1n, 2n, 31n, 32n, 33n, 63n, 64n, 0x7fn, 0xffn, 0xffffn, 0x7fffffffn, 0xffffffffn, 1n << 32n, 1n << 53n, 1n << 63n, (1n << 64n) - 1n];

/** The PRNG stream of one iteration, independent of all the others (so one iteration reproduces alone). */
function iterationRng(iteration: number): Rng {
  return mulberry32(SEED ^ Math.imul(iteration + 1, 0x9e3779b9));
}

async function fuzzSeeds(): Promise<{ name: string; bytes: Uint8Array }[]> {
  const deep = base();
  deep.kvs.push({ key: "deep", type: GgufType.ARRAY, value: nested(4) }, { key: "b", type: GgufType.BOOL, value: (b) => b.raw([1]) });
  // The F16 file's real KVs (tokenizer arrays included) over its four smallest tensors, plus a Q8_0 one.
  const f16 = await GgufFile.fromSource(new BufferSource(new Uint8Array(readFileSync(F16_PATH)), "f16"));
  const norms = f16.tensors.filter((t) => t.ne.length === 1).slice(0, 4);
  const tensors = await Promise.all(norms.map(async (t) => ({ name: t.name, type: t.type, shape: t.shape, bytes: await f16.read(t.name) })));
  const q8 = new Uint8Array(2 * 34).fill(0x11);
  tensors.push({ name: "q8", type: 8, shape: [2, 32], bytes: q8 });
  return [
    { name: "deep", bytes: build(deep).bytes },
    { name: "v1", bytes: build(base({ version: 1 })).bytes },
    { name: "real-kvs", bytes: ggufBytes(f16.header.metadata, tensors) },
  ];
}

function mutate(rng: Rng, seed: Uint8Array): Uint8Array {
  let bytes = seed.slice();
  for (let k = 1 + int(rng, 3); k > 0 && bytes.length > 0; k--) {
    // Half the edits land in the first 512 bytes, where the counts, lengths and infos of the small seeds live.
    const pos = rng() < 0.5 ? int(rng, Math.min(bytes.length, 512)) : int(rng, bytes.length);
    const kind = int(rng, 4);
    if (kind === 0) bytes[pos] = int(rng, 256);
    else if (kind === 1) bytes[pos]! ^= 1 << int(rng, 8);
    else if (kind === 2) bytes = bytes.slice(0, int(rng, bytes.length));
    else {
      const width = rng() < 0.5 ? 4 : 8;
      const value = BigInt.asUintN(64, INTERESTING[int(rng, INTERESTING.length)]! + BigInt(int(rng, 3) - 1));
      for (let j = 0; j < width && pos + j < bytes.length; j++) bytes[pos + j] = Number((value >> BigInt(8 * j)) & 0xffn);
    }
  }
  return bytes;
}

/** Bytes the parsed metadata holds: it can never exceed the file that backs it. */
function footprint(v: GgufValue): number {
  if (v.type === GgufType.STRING) return enc.encode(v.value).length;
  if (v.type !== GgufType.ARRAY) return 1;
  if (v.itemType === GgufType.STRING) return (v.items as string[]).reduce((n, s) => n + enc.encode(s).length, 0);
  if (v.itemType === GgufType.ARRAY) return (v.items as GgufArray[]).reduce((n, a) => n + footprint(a), 0);
  if (v.itemType === GgufType.BOOL) return v.items.length;
  return (v.items as Exclude<GgufArray["items"], unknown[]>).byteLength;
}

const fuzz = suite("gguf fuzz");

fuzz(`${ITERATIONS} mutants: parse or FormatError, bounded by the file (seed ${SEED})`, async () => {
  const seedFiles = await fuzzSeeds();
  const outcomes = new Map<string, number>();
  for (let i = 0; i < ITERATIONS; i++) {
    const rng = iterationRng(i);
    const seed = seedFiles[int(rng, seedFiles.length)]!;
    const bytes = mutate(rng, seed.bytes);
    const source = new BufferSource(bytes, "fuzz.gguf");
    const started = performance.now();
    const where = `LMPACK_FUZZ_SEED=${SEED} iteration ${i} (seed file ${seed.name})`;
    let outcome = "parsed";
    try {
      const file = await GgufFile.fromSource(source);
      let held = 0;
      for (const v of file.header.metadata.values()) held += footprint(v);
      assert.ok(held <= bytes.length, `${where}: metadata holds ${held} bytes from a ${bytes.length}-byte file`);
      for (const t of file.tensors) {
        const raw = await file.read(t.name);
        t.codec.dequantize(raw, t.nElements / t.codec.blockSize, new Float32Array(t.nElements));
      }
    } catch (error) {
      if (!(error instanceof FormatError)) throw new Error(`${where}: not a FormatError: ${String((error as Error)?.stack ?? error)}`);
      outcome = error.code;
    }
    assert.ok(source.maxReadLength <= bytes.length, `${where}: read ${source.maxReadLength} bytes at once from ${bytes.length}`);
    assert.ok(performance.now() - started < MAX_PARSE_MS, `${where}: parse took ${performance.now() - started} ms`);
    outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
  }
  if (process.env["LMPACK_FUZZ_VERBOSE"] !== undefined) console.log(Object.fromEntries(outcomes));
  // Not vacuous: some mutants survive, and many distinct refusals are reached.
  assert.ok((outcomes.get("parsed") ?? 0) > 0, JSON.stringify([...outcomes]));
  assert.ok(outcomes.size >= 8, JSON.stringify([...outcomes]));
});

hostile.run();
fuzz.run();
