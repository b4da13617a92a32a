import { suite } from "uvu";
import * as assert from "uvu/assert";
import { FormatError, type FormatErrorCode } from "../../formats/errors.js";
import { DTYPES, type DType } from "../../formats/dtype.js";
import { BufferSource } from "../../converters/io/random-access.js";
import { SafetensorsFile } from "../../converters/safetensors/reader.js";
import { parseStrictJson } from "../../converters/safetensors/strict-json.js";
import { buildSafetensors } from "../helpers/build-safetensors.js";

/**
 * Hostile safetensors files, one table row per defect. Every row is built by hand with
 * buildSafetensors() and must be refused with its own FormatError code, naming the file,
 * and the tensor where the defect belongs to one tensor.
 */

const FILE = "case.safetensors";
const enc = new TextEncoder();

/** One `"name": {...}` header entry. Dims and offsets are raw JSON text, so tests can write 2^64-2 exactly. */
function entry(name: string, dtype: string, shape: string, offsets: string): string {
  return `${JSON.stringify(name)}:{"dtype":${JSON.stringify(dtype)},"shape":${shape},"data_offsets":${offsets}}`;
}

function obj(...entries: string[]): string {
  return `{${entries.join(",")}}`;
}

function zeros(n: number): Uint8Array {
  return new Uint8Array(n);
}

/** Header bytes with `bad` spliced in at the position of the marker "@" in `text`. */
function withRawBytes(text: string, bad: number[]): { bytes: Uint8Array; at: number } {
  const at = text.indexOf("@");
  const before = enc.encode(text.slice(0, at));
  const after = enc.encode(text.slice(at + 1));
  const bytes = new Uint8Array(before.length + bad.length + after.length);
  bytes.set(before, 0);
  bytes.set(bad, before.length);
  bytes.set(after, before.length + bad.length);
  return { bytes, at: before.length };
}

interface HostileCase {
  name: string;
  bytes: Uint8Array;
  code: FormatErrorCode;
  /** The tensor the error must name; null: the error must not name one (file-level defect). */
  tensor?: string | null;
  byteOffset?: number;
}

const badUtf8 = withRawBytes(`{"__metadata__":{"note":"caf@"}}`, [0xff]);
const dupHeader = obj(entry("a", "F32", "[1]", "[0,4]"), entry("a", "F32", "[1]", "[0,4]"));
const threeBigDims = "[4294967296,4294967296,4294967296]";

/** One row per FormatError code the header validator can raise; each row has a distinct defect. */
const hostile: HostileCase[] = [
  { name: "file shorter than the 8-byte length prefix", bytes: zeros(5), code: "FILE_TOO_SMALL", tensor: null, byteOffset: 0 },
  { name: "length prefix points past the end of the file", bytes: buildSafetensors({ header: "{}", lengthPrefix: 100n }), code: "HEADER_LENGTH_PAST_EOF", tensor: null, byteOffset: 0 },
  { name: "length prefix over the 100 MB cap (100_000_001)", bytes: buildSafetensors({ header: "{}", lengthPrefix: 100_000_001n }), code: "HEADER_TOO_LARGE", tensor: null, byteOffset: 0 },
  { name: "header with a byte that is not UTF-8 (0xFF)", bytes: buildSafetensors({ headerBytes: badUtf8.bytes }), code: "HEADER_INVALID_UTF8", tensor: null, byteOffset: 8 + badUtf8.at },
  { name: "header JSON with a syntax error", bytes: buildSafetensors({ header: `{"a":}` }), code: "HEADER_INVALID_JSON", tensor: null, byteOffset: 8 + 5 },
  { name: "header JSON is an array, not an object", bytes: buildSafetensors({ header: "[1,2]" }), code: "HEADER_NOT_OBJECT", tensor: null, byteOffset: 8 },
  { name: "header nested deeper than the cap", bytes: buildSafetensors({ header: `{"__metadata__":${"[".repeat(100)}${"]".repeat(100)}}` }), code: "HEADER_TOO_DEEP", tensor: null },
  { name: "duplicate tensor name (JSON.parse would keep the last)", bytes: buildSafetensors({ header: dupHeader, data: zeros(4) }), code: "DUPLICATE_KEY", tensor: "a", byteOffset: 8 + dupHeader.lastIndexOf(`"a":`) },
  { name: "metadata value that is not a string", bytes: buildSafetensors({ header: `{"__metadata__":{"format":"pt","n":1}}` }), code: "METADATA_INVALID", tensor: null },
  { name: "tensor entry without data_offsets", bytes: buildSafetensors({ header: `{"w":{"dtype":"F32","shape":[1]}}`, data: zeros(4) }), code: "TENSOR_INVALID_INFO", tensor: "w" },
  { name: "unknown dtype", bytes: buildSafetensors({ header: obj(entry("w", "F128", "[1]", "[0,16]")), data: zeros(16) }), code: "UNKNOWN_DTYPE", tensor: "w" },
  { name: "negative dim", bytes: buildSafetensors({ header: obj(entry("w", "F32", "[-1]", "[0,4]")), data: zeros(4) }), code: "SHAPE_INVALID", tensor: "w" },
  { name: "dims whose product overflows (2^32 x 2^32 x 2^32)", bytes: buildSafetensors({ header: obj(entry("w", "F32", threeBigDims, "[0,4]")), data: zeros(4) }), code: "SHAPE_OVERFLOW", tensor: "w" },
  { name: "shape x dtype does not equal the offsets' length", bytes: buildSafetensors({ header: obj(entry("w", "F32", "[2,2]", "[0,12]")), data: zeros(12) }), code: "SHAPE_SIZE_MISMATCH", tensor: "w", byteOffset: 8 + obj(entry("w", "F32", "[2,2]", "[0,12]")).length },
  { name: "offsets out of order (end < begin)", bytes: buildSafetensors({ header: obj(entry("w", "F32", "[1]", "[8,4]")), data: zeros(8) }), code: "OFFSETS_REVERSED", tensor: "w" },
  {
    name: "two tensors overlap",
    bytes: buildSafetensors({ header: obj(entry("a", "F32", "[2]", "[0,8]"), entry("b", "F32", "[2]", "[4,12]")), data: zeros(12) }),
    code: "OFFSETS_OVERLAP",
    tensor: "b",
  },
  {
    name: "hole between two tensors",
    bytes: buildSafetensors({ header: obj(entry("a", "F32", "[1]", "[0,4]"), entry("b", "F32", "[1]", "[8,12]")), data: zeros(12) }),
    code: "OFFSETS_GAP",
    tensor: "b",
    byteOffset: 8 + obj(entry("a", "F32", "[1]", "[0,4]"), entry("b", "F32", "[1]", "[8,12]")).length + 4,
  },
  {
    name: "tensor starting beyond the data section",
    bytes: buildSafetensors({ header: obj(entry("a", "F32", "[1]", "[0,4]"), entry("b", "F32", "[1]", "[100,104]")), data: zeros(4) }),
    code: "OFFSET_PAST_EOF",
    tensor: "b",
    byteOffset: 8 + obj(entry("a", "F32", "[1]", "[0,4]"), entry("b", "F32", "[1]", "[100,104]")).length + 100,
  },
  {
    name: "file cut inside the last tensor",
    bytes: buildSafetensors({ header: obj(entry("a", "F32", "[1]", "[0,4]"), entry("b", "F32", "[4]", "[4,20]")), data: zeros(10) }),
    code: "DATA_TRUNCATED",
    tensor: "b",
  },
  {
    name: "bytes after the last tensor",
    bytes: buildSafetensors({ header: obj(entry("a", "F32", "[1]", "[0,4]")), data: zeros(6) }),
    code: "TRAILING_BYTES",
    tensor: null,
    byteOffset: 8 + obj(entry("a", "F32", "[1]", "[0,4]")).length + 4,
  },
];

/** More defects, each a different way to reach a code already covered above. */
const variants: HostileCase[] = [
  { name: "empty file", bytes: zeros(0), code: "FILE_TOO_SMALL", tensor: null },
  { name: "7-byte file", bytes: zeros(7), code: "FILE_TOO_SMALL", tensor: null },
  { name: "length prefix 2^64-1", bytes: buildSafetensors({ header: "{}", lengthPrefix: 2n ** 64n - 1n }), code: "HEADER_TOO_LARGE", tensor: null },
  { name: "length prefix one past the file", bytes: buildSafetensors({ header: "{}", lengthPrefix: 3n }), code: "HEADER_LENGTH_PAST_EOF", tensor: null },
  { name: "empty header (N = 0)", bytes: buildSafetensors({ header: "" }), code: "HEADER_NOT_OBJECT", tensor: null },
  { name: "header with leading whitespace", bytes: buildSafetensors({ header: " {}" }), code: "HEADER_NOT_OBJECT", tensor: null },
  { name: "overlong UTF-8 encoding of '/'", bytes: buildSafetensors({ headerBytes: withRawBytes(`{"__metadata__":{"k":"@"}}`, [0xc0, 0xaf]).bytes }), code: "HEADER_INVALID_UTF8", tensor: null, byteOffset: 8 + 22 },
  { name: "UTF-8-encoded surrogate", bytes: buildSafetensors({ headerBytes: withRawBytes(`{"__metadata__":{"k":"@"}}`, [0xed, 0xa0, 0x80]).bytes }), code: "HEADER_INVALID_UTF8", tensor: null, byteOffset: 8 + 22 },
  { name: "UTF-8 sequence cut by the end of the header", bytes: buildSafetensors({ headerBytes: withRawBytes(`{}@`, [0xe2, 0x82]).bytes }), code: "HEADER_INVALID_UTF8", tensor: null, byteOffset: 8 + 2 },
  { name: "trailing comma", bytes: buildSafetensors({ header: `{"__metadata__":{"a":"b",}}` }), code: "HEADER_INVALID_JSON", tensor: null },
  { name: "NUL padding instead of spaces", bytes: buildSafetensors({ header: "{}\0\0\0\0\0\0" }), code: "HEADER_INVALID_JSON", tensor: null },
  { name: "leading zero in a number", bytes: buildSafetensors({ header: obj(entry("w", "F32", "[01]", "[0,4]")), data: zeros(4) }), code: "HEADER_INVALID_JSON", tensor: null },
  { name: "unterminated string", bytes: buildSafetensors({ header: `{"w` }), code: "HEADER_INVALID_JSON", tensor: null },
  { name: "text after the JSON object", bytes: buildSafetensors({ header: `{"a":1} "x"` }), code: "HEADER_INVALID_JSON", tensor: null },
  { name: "duplicate metadata key", bytes: buildSafetensors({ header: `{"__metadata__":{"k":"1","k":"2"}}` }), code: "DUPLICATE_KEY" },
  { name: "metadata is an array", bytes: buildSafetensors({ header: `{"__metadata__":["pt"]}` }), code: "METADATA_INVALID", tensor: null },
  { name: "tensor entry is a number", bytes: buildSafetensors({ header: `{"w":4}` }), code: "TENSOR_INVALID_INFO", tensor: "w" },
  { name: "data_offsets with three numbers", bytes: buildSafetensors({ header: obj(entry("w", "F32", "[1]", "[0,4,8]")), data: zeros(4) }), code: "TENSOR_INVALID_INFO", tensor: "w" },
  { name: "negative offset", bytes: buildSafetensors({ header: obj(entry("w", "F32", "[0]", "[-4,-4]")) }), code: "TENSOR_INVALID_INFO", tensor: "w" },
  { name: "fractional offset", bytes: buildSafetensors({ header: obj(entry("w", "U8", "[1]", "[0.5,1.5]")), data: zeros(2) }), code: "TENSOR_INVALID_INFO", tensor: "w" },
  { name: "dtype spelled in lower case", bytes: buildSafetensors({ header: obj(entry("w", "f32", "[1]", "[0,4]")), data: zeros(4) }), code: "UNKNOWN_DTYPE", tensor: "w" },
  { name: "dtype named after an Object.prototype member", bytes: buildSafetensors({ header: obj(entry("w", "__proto__", "[1]", "[0,4]")), data: zeros(4) }), code: "UNKNOWN_DTYPE", tensor: "w" },
  { name: "fractional dim", bytes: buildSafetensors({ header: obj(entry("w", "F32", "[1.5]", "[0,6]")), data: zeros(6) }), code: "SHAPE_INVALID", tensor: "w" },
  { name: "dim written as a string", bytes: buildSafetensors({ header: obj(entry("w", "F32", `["1"]`, "[0,4]")), data: zeros(4) }), code: "SHAPE_INVALID", tensor: "w" },
  { name: "rank 65", bytes: buildSafetensors({ header: obj(entry("w", "U8", `[${Array(65).fill(1).join(",")}]`, "[0,1]")), data: zeros(1) }), code: "SHAPE_INVALID", tensor: "w" },
  { name: "dim 2^64-2 (JSON.parse would round it to 2^64)", bytes: buildSafetensors({ header: obj(entry("w", "U8", "[18446744073709551614]", "[0,0]")) }), code: "SHAPE_OVERFLOW", tensor: "w" },
  { name: "dim 2^64-2 next to a zero dim (would be reported rounded)", bytes: buildSafetensors({ header: obj(entry("w", "U8", "[0,18446744073709551614]", "[0,0]")) }), code: "SHAPE_OVERFLOW", tensor: "w" },
  { name: "byte size just over 2^53-1", bytes: buildSafetensors({ header: obj(entry("w", "U16", "[4503599627370496]", "[0,2]")), data: zeros(2) }), code: "SHAPE_OVERFLOW", tensor: "w" },
  { name: "end offset 2^64+2 with begin 0", bytes: buildSafetensors({ header: obj(entry("w", "U8", "[4]", "[0,18446744073709551618]")), data: zeros(4) }), code: "SHAPE_SIZE_MISMATCH", tensor: "w" },
  { name: "zero-sized tensor inside another tensor's bytes", bytes: buildSafetensors({ header: obj(entry("a", "F32", "[2]", "[0,8]"), entry("z", "F32", "[0]", "[4,4]")), data: zeros(8) }), code: "OFFSETS_OVERLAP", tensor: "z" },
  { name: "two tensors at the same offset", bytes: buildSafetensors({ header: obj(entry("a", "F32", "[1]", "[0,4]"), entry("b", "F32", "[1]", "[0,4]")), data: zeros(4) }), code: "OFFSETS_OVERLAP", tensor: "b" },
  { name: "hole before the first tensor", bytes: buildSafetensors({ header: obj(entry("a", "F32", "[1]", "[4,8]")), data: zeros(8) }), code: "OFFSETS_GAP", tensor: "a" },
  { name: "zero-sized tensor past the end of the data", bytes: buildSafetensors({ header: obj(entry("a", "F32", "[1]", "[0,4]"), entry("z", "F32", "[0]", "[8,8]")), data: zeros(4) }), code: "OFFSET_PAST_EOF", tensor: "z" },
  { name: "tensor ending one byte past the file", bytes: buildSafetensors({ header: obj(entry("w", "U8", "[5]", "[0,5]")), data: zeros(4) }), code: "DATA_TRUNCATED", tensor: "w" },
  { name: "data but no tensors", bytes: buildSafetensors({ header: "{}", data: zeros(1) }), code: "TRAILING_BYTES", tensor: null },
];

async function expectFormatError(c: HostileCase): Promise<void> {
  const source = new BufferSource(c.bytes, FILE);
  let caught: unknown;
  try {
    const file = await SafetensorsFile.fromSource(source);
    for (const t of file.tensors) await file.read(t.name);
  } catch (error) {
    caught = error;
  }
  assert.ok(caught !== undefined, `expected ${c.code}, but the file was accepted`);
  if (!(caught instanceof FormatError)) throw caught;
  assert.is(caught.code, c.code, `code (message: ${caught.message})`);
  assert.is(caught.file, FILE, "file");
  if (c.tensor === null) assert.is(caught.tensor, undefined, "tensor");
  else if (c.tensor !== undefined) assert.is(caught.tensor, c.tensor, "tensor");
  if (c.byteOffset !== undefined) assert.is(Number(caught.byteOffset), c.byteOffset, "byteOffset");
  // Hostile lengths must never turn into allocations: no read may ask for more than the input holds.
  assert.ok(source.maxReadLength <= c.bytes.length, `read ${source.maxReadLength} bytes from a ${c.bytes.length}-byte file`);
}

const rejects = suite("safetensors: hostile files, one per error code");

rejects("the table covers at least 15 distinct codes, one row each", () => {
  const codes = new Set(hostile.map((c) => c.code));
  assert.is(codes.size, hostile.length, "every row has its own code");
  assert.ok(codes.size >= 15, `${codes.size} codes`);
});

for (const c of hostile) rejects(`${c.code}: ${c.name}`, () => expectFormatError(c));

rejects.run();

const more = suite("safetensors: hostile files, more ways to each code");
for (const c of variants) more(`${c.code}: ${c.name}`, () => expectFormatError(c));

more("HEADER_TOO_LARGE is refused before anything past the prefix is read", async () => {
  const source = new BufferSource(buildSafetensors({ header: "{}", lengthPrefix: 100_000_001n }), FILE);
  try {
    await SafetensorsFile.fromSource(source);
    assert.unreachable("accepted");
  } catch (error) {
    assert.instance(error, FormatError);
    assert.is((error as FormatError).code, "HEADER_TOO_LARGE");
  }
  assert.is(source.maxReadLength, 8);
});

more("the strict parser rejects what JSON.parse silently accepts", () => {
  // Duplicate keys: JSON.parse keeps the last, so two tools can disagree on which tensor "a" is.
  assert.equal(Object.keys(JSON.parse(dupHeader) as object), ["a"]);
  assert.throws(() => parseStrictJson(dupHeader));
  // 2^64-2: JSON.parse rounds it to 2^64; the strict parser keeps it exact.
  assert.is((JSON.parse("[18446744073709551614]") as number[])[0], 2 ** 64);
  assert.equal(parseStrictJson("[18446744073709551614]"), [18446744073709551614n]);
});

more.run();

interface ValidCase {
  name: string;
  header: string;
  data?: Uint8Array;
  /** Tensors expected, in data order. */
  tensors: { name: string; dtype: DType; shape: number[] }[];
  metadata?: Record<string, string>;
}

function counting(n: number, start = 1): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (start + i * 37) & 0xff);
}

const allDtypes = Object.keys(DTYPES) as DType[];
const allDtypesLayout = (() => {
  let offset = 0;
  const entries: string[] = [];
  const tensors: ValidCase["tensors"] = [];
  for (const dtype of allDtypes) {
    const n = (DTYPES[dtype].bits / 8) * 3;
    entries.push(entry(`t.${dtype}`, dtype, "[3]", `[${offset},${offset + n}]`));
    tensors.push({ name: `t.${dtype}`, dtype, shape: [3] });
    offset += n;
  }
  return { header: obj(...entries), bytes: offset, tensors };
})();

const valid: ValidCase[] = [
  { name: "empty header {}", header: "{}", tensors: [] },
  { name: "metadata only", header: `{"__metadata__":{"format":"pt","note":"caf\\u00e9 ☕"}}`, tensors: [], metadata: { format: "pt", note: "café ☕" } },
  {
    name: "zero-sized tensors, first, middle and last",
    header: obj(entry("z0", "F32", "[0,4]", "[0,0]"), entry("a", "BF16", "[2]", "[0,4]"), entry("z1", "F64", "[3,0]", "[4,4]"), entry("b", "U8", "[1]", "[4,5]"), entry("z2", "I64", "[0]", "[5,5]")),
    data: counting(5),
    tensors: [
      { name: "z0", dtype: "F32", shape: [0, 4] },
      { name: "a", dtype: "BF16", shape: [2] },
      { name: "z1", dtype: "F64", shape: [3, 0] },
      { name: "b", dtype: "U8", shape: [1] },
      { name: "z2", dtype: "I64", shape: [0] },
    ],
  },
  { name: "all 15 dtypes", header: allDtypesLayout.header, data: counting(allDtypesLayout.bytes), tensors: allDtypesLayout.tensors },
  {
    name: `a tensor named "__proto__" (and one named "constructor")`,
    header: obj(entry("__proto__", "F32", "[2]", "[0,8]"), entry("constructor", "U8", "[1]", "[8,9]")),
    data: counting(9),
    tensors: [
      { name: "__proto__", dtype: "F32", shape: [2] },
      { name: "constructor", dtype: "U8", shape: [1] },
    ],
  },
  {
    name: "header padded with trailing spaces, entries out of data order, scalar tensor",
    header: obj(entry("late", "I16", "[2,1]", "[4,8]"), entry("early", "F32", "[]", "[0,4]")) + " ".repeat(13),
    data: counting(8),
    tensors: [
      { name: "early", dtype: "F32", shape: [] },
      { name: "late", dtype: "I16", shape: [2, 1] },
    ],
  },
];

const accepts = suite("safetensors: valid files open and read back exactly");

for (const c of valid) {
  accepts(c.name, async () => {
    const data = c.data ?? new Uint8Array(0);
    const bytes = buildSafetensors({ header: c.header, data });
    const source = new BufferSource(bytes, FILE);
    const file = await SafetensorsFile.fromSource(source);
    const dataStart = 8 + enc.encode(c.header).length;
    assert.is(file.header.dataStart, dataStart);
    assert.equal(
      file.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape })),
      c.tensors,
    );
    assert.equal(file.metadata === undefined ? undefined : { ...file.metadata }, c.metadata);
    let expectedOffset = dataStart;
    for (const t of file.tensors) {
      assert.is(t.byteOffset, expectedOffset, `${t.name} offset`);
      assert.is(t.byteLength, t.shape.reduce((a, b) => a * b, 1) * (DTYPES[t.dtype].bits / 8), `${t.name} length`);
      assert.ok(file.has(t.name));
      const read = await file.read(t.name);
      assert.equal(read, bytes.subarray(t.byteOffset, t.byteOffset + t.byteLength), `${t.name} bytes`);
      const chunks: Uint8Array[] = [];
      for await (const chunk of file.readChunks(t.name, 3)) chunks.push(chunk);
      assert.equal(Buffer.concat(chunks), Buffer.from(read), `${t.name} chunked bytes`);
      expectedOffset += t.byteLength;
    }
    assert.is(expectedOffset, bytes.length, "tensors end at the end of the file");
    assert.ok(source.maxReadLength <= bytes.length);
  });
}

accepts(`"__proto__" is an ordinary tensor name, not a prototype`, async () => {
  const bytes = buildSafetensors({ header: obj(entry("__proto__", "U8", "[1]", "[0,1]")), data: Uint8Array.of(42) });
  const file = await SafetensorsFile.fromSource(new BufferSource(bytes, FILE));
  assert.is(file.tensor("__proto__").byteLength, 1);
  assert.equal(await file.read("__proto__"), Uint8Array.of(42));
  assert.is(({} as Record<string, unknown>)["dtype"], undefined, "Object.prototype untouched");
  assert.not.ok(file.has("toString"));
});

accepts.run();
