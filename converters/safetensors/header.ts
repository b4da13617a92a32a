import { DTYPES, isDType, type DType } from "../../formats/dtype.js";
import { FormatError } from "../../formats/errors.js";
import { isJsonObject, JsonSyntaxError, parseStrictJson, type JsonObject, type JsonValue } from "./strict-json.js";
import { firstInvalidUtf8 } from "./utf8.js";

/**
 * safetensors layout (huggingface/safetensors README, "Format"):
 *
 *   [0, 8)        N: u64 little-endian, the JSON header's byte length
 *   [8, 8+N)      UTF-8 JSON object, starting with '{', may be padded with spaces:
 *                   { "__metadata__"?: {string: string},
 *                     "<tensor>": { "dtype": "BF16", "shape": [..], "data_offsets": [begin, end] }, ... }
 *   [8+N, EOF)    the data section; offsets are relative to its start. Tensors tile it
 *                 exactly: no holes, no overlaps, and the last end is the end of the file.
 *
 * Validation follows the Rust crate's `read_metadata` + `Metadata::validate`, cheapest check
 * first, with every size computed as BigInt so no arithmetic can overflow.
 */

/** Header size cap, the same as the Rust crate's MAX_HEADER_SIZE: a 100 MB header already describes millions of tensors. */
export const SAFETENSORS_MAX_HEADER_BYTES = 100_000_000;
/** Rank cap: no real tensor has more than a handful of dims; the cap bounds per-entry work. */
export const SAFETENSORS_MAX_RANK = 64;
export const SAFETENSORS_PREFIX_BYTES = 8;
export const METADATA_KEY = "__metadata__";

export interface SafetensorsTensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
  nElements: number;
  /** Absolute position of the tensor's first byte in the file. */
  byteOffset: number;
  byteLength: number;
}

export interface SafetensorsHeader {
  /** N, the JSON byte length. */
  headerByteLength: number;
  /** Absolute offset of the data section (8 + N). */
  dataStart: number;
  /** Tensors in data order. */
  tensors: SafetensorsTensorInfo[];
  metadata: Record<string, string> | undefined;
}

/** Reads N from the 8-byte prefix and checks it against the cap and the file size. */
export function parseHeaderLength(prefix: Uint8Array, fileByteLength: number, file: string): number {
  if (fileByteLength < SAFETENSORS_PREFIX_BYTES || prefix.length < SAFETENSORS_PREFIX_BYTES) {
    throw new FormatError("FILE_TOO_SMALL", "file too small to hold the 8-byte header length", { file, byteOffset: 0, expected: ">= 8 bytes", actual: fileByteLength });
  }
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(SAFETENSORS_MAX_HEADER_BYTES)) {
    throw new FormatError("HEADER_TOO_LARGE", "header length over the cap", { file, byteOffset: 0, expected: `<= ${SAFETENSORS_MAX_HEADER_BYTES}`, actual: n });
  }
  if (n + 8n > BigInt(fileByteLength)) {
    throw new FormatError("HEADER_LENGTH_PAST_EOF", "header extends past the end of the file", { file, byteOffset: 0, expected: `<= ${fileByteLength - 8}`, actual: n });
  }
  return Number(n);
}

/** Decodes and validates the header JSON; `fileByteLength` is the whole file's size. */
export function parseHeader(headerBytes: Uint8Array, fileByteLength: number, file: string): SafetensorsHeader {
  const dataStart = SAFETENSORS_PREFIX_BYTES + headerBytes.length;
  const badUtf8 = firstInvalidUtf8(headerBytes);
  if (badUtf8 >= 0) {
    throw new FormatError("HEADER_INVALID_UTF8", "header is not valid UTF-8", { file, byteOffset: SAFETENSORS_PREFIX_BYTES + badUtf8 });
  }
  if (headerBytes[0] !== 0x7b) {
    throw new FormatError("HEADER_NOT_OBJECT", "header must be a JSON object starting with '{'", { file, byteOffset: SAFETENSORS_PREFIX_BYTES, expected: "{", actual: headerBytes.length === 0 ? "empty header" : String.fromCharCode(headerBytes[0]!) });
  }
  const text = new TextDecoder("utf-8").decode(headerBytes);
  let root: JsonValue;
  try {
    root = parseStrictJson(text);
  } catch (error) {
    if (!(error instanceof JsonSyntaxError)) throw error;
    const byteOffset = SAFETENSORS_PREFIX_BYTES + new TextEncoder().encode(text.slice(0, error.charIndex)).length;
    const code = error.kind === "duplicate" ? "DUPLICATE_KEY" : error.kind === "depth" ? "HEADER_TOO_DEEP" : "HEADER_INVALID_JSON";
    throw new FormatError(code, `header JSON: ${error.message}`, { file, byteOffset, tensor: error.key });
  }
  if (!isJsonObject(root)) throw new FormatError("HEADER_NOT_OBJECT", "header JSON is not an object", { file, byteOffset: SAFETENSORS_PREFIX_BYTES });

  const dataByteLength = fileByteLength - dataStart;
  const metadata = parseMetadata(root[METADATA_KEY], file);
  const entries: ParsedEntry[] = [];
  for (const name of Object.keys(root)) {
    if (name === METADATA_KEY) continue;
    entries.push(parseTensorEntry(name, root[name]!, dataStart, file));
  }
  entries.sort((a, b) => (a.begin < b.begin ? -1 : a.begin > b.begin ? 1 : Number(a.end - a.begin - (b.end - b.begin))));
  checkBounds(entries, dataStart, dataByteLength, file);
  const tensors = entries.map(({ begin, end: _end, ...info }) => ({ ...info, byteOffset: dataStart + Number(begin) }));
  checkTiling(tensors, dataStart, dataByteLength, file);
  return { headerByteLength: headerBytes.length, dataStart, tensors, metadata };
}

/** A tensor entry whose offsets are not yet known to lie in the file (so they stay BigInt). */
type ParsedEntry = Omit<SafetensorsTensorInfo, "byteOffset"> & { begin: bigint; end: bigint };

/**
 * Every tensor must lie inside the data section. Entries are sorted by offset, so for a file cut
 * short the tensor named is the one the file ends in, and "expected" is the whole file's size.
 */
function checkBounds(entries: ParsedEntry[], dataStart: number, dataByteLength: number, file: string): void {
  const dataLen = BigInt(dataByteLength);
  const start = BigInt(dataStart);
  const extent = entries.reduce((max, e) => (e.end > max ? e.end : max), 0n);
  for (const e of entries) {
    if (e.begin > dataLen) {
      throw new FormatError("OFFSET_PAST_EOF", "tensor starts past the end of the file", { file, tensor: e.name, byteOffset: start + e.begin, expected: `<= ${dataStart + dataByteLength}`, actual: start + e.begin });
    }
    if (e.end > dataLen) {
      throw new FormatError("DATA_TRUNCATED", "file ends inside the tensor's data", { file, tensor: e.name, byteOffset: start + e.begin, expected: `file of ${start + extent} bytes`, actual: `${dataStart + dataByteLength} bytes` });
    }
  }
}

function parseMetadata(value: JsonValue | undefined, file: string): Record<string, string> | undefined {
  if (value === undefined) return undefined;
  if (!isJsonObject(value)) {
    throw new FormatError("METADATA_INVALID", `"${METADATA_KEY}" must be an object of strings`, { file, expected: "object", actual: jsonKind(value) });
  }
  const out: Record<string, string> = {};
  for (const [key, item] of Object.entries(value)) {
    if (typeof item !== "string") {
      throw new FormatError("METADATA_INVALID", `"${METADATA_KEY}" value for "${key}" is not a string`, { file, expected: "string", actual: jsonKind(item) });
    }
    out[key] = item;
  }
  return out;
}

function parseTensorEntry(name: string, entry: JsonValue, dataStart: number, file: string): ParsedEntry {
  const where = { file, tensor: name };
  if (!isJsonObject(entry)) throw new FormatError("TENSOR_INVALID_INFO", "entry is not an object", { ...where, expected: "object", actual: jsonKind(entry) });
  const { dtype, shape, data_offsets: offsets } = entry as JsonObject;
  if (typeof dtype !== "string" || !Array.isArray(shape) || !Array.isArray(offsets) || offsets.length !== 2) {
    throw new FormatError("TENSOR_INVALID_INFO", "entry needs dtype (string), shape (array) and data_offsets ([begin, end])", where);
  }
  if (!isDType(dtype)) throw new FormatError("UNKNOWN_DTYPE", "unknown or unsupported dtype", { ...where, expected: Object.keys(DTYPES).join("|"), actual: dtype });
  if (shape.length > SAFETENSORS_MAX_RANK) throw new FormatError("SHAPE_INVALID", "too many dimensions", { ...where, expected: `<= ${SAFETENSORS_MAX_RANK}`, actual: shape.length });

  let nElements = 1n;
  for (const dim of shape) {
    if (!isNonNegativeInteger(dim)) throw new FormatError("SHAPE_INVALID", "shape dims must be non-negative integers", { ...where, actual: shape });
    // A dim beyond 2^53-1 cannot be reported exactly in `shape: number[]` (next to a zero dim
    // the product would pass); refuse it rather than hand out a rounded shape.
    if (typeof dim === "bigint") throw new FormatError("SHAPE_OVERFLOW", "shape dim too large", { ...where, expected: `<= ${Number.MAX_SAFE_INTEGER}`, actual: dim });
    nElements *= BigInt(dim);
  }
  const nBytes = (nElements * BigInt(DTYPES[dtype].bits)) / 8n;
  if (nBytes > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new FormatError("SHAPE_OVERFLOW", "shape's byte size overflows", { ...where, expected: `<= ${Number.MAX_SAFE_INTEGER} bytes`, actual: `${nBytes} bytes` });
  }
  const [begin, end] = offsets;
  if (!isNonNegativeInteger(begin) || !isNonNegativeInteger(end)) {
    throw new FormatError("TENSOR_INVALID_INFO", "data_offsets must be non-negative integers", { ...where, actual: offsets });
  }
  const b = BigInt(begin);
  const e = BigInt(end);
  if (e < b) throw new FormatError("OFFSETS_REVERSED", "data_offsets end before they begin", { ...where, byteOffset: BigInt(dataStart) + b, expected: `end >= ${b}`, actual: `end ${e}` });
  if (e - b !== nBytes) {
    throw new FormatError("SHAPE_SIZE_MISMATCH", `shape ${JSON.stringify(shape.map(Number))} × ${dtype} does not match the byte length`, { ...where, byteOffset: BigInt(dataStart) + b, expected: `${nBytes} bytes`, actual: `${e - b} bytes` });
  }
  return { name, dtype, shape: shape.map(Number), nElements: Number(nElements), byteLength: Number(nBytes), begin: b, end: e };
}

/** Tensors (sorted by offset) must cover the data section exactly: no overlap, no gap, no tail. */
function checkTiling(tensors: SafetensorsTensorInfo[], dataStart: number, dataByteLength: number, file: string): void {
  let expected = dataStart;
  let previous: string | undefined;
  for (const t of tensors) {
    if (t.byteOffset < expected) {
      throw new FormatError("OFFSETS_OVERLAP", `data overlaps tensor "${previous}"`, { file, tensor: t.name, byteOffset: t.byteOffset, expected: `start >= ${expected}`, actual: t.byteOffset });
    }
    if (t.byteOffset > expected) {
      throw new FormatError("OFFSETS_GAP", "unused bytes before the tensor's data", { file, tensor: t.name, byteOffset: expected, expected: `start ${expected}`, actual: t.byteOffset });
    }
    expected = t.byteOffset + t.byteLength;
    previous = t.name;
  }
  const fileEnd = dataStart + dataByteLength;
  if (expected !== fileEnd) {
    throw new FormatError("TRAILING_BYTES", "bytes after the last tensor", { file, byteOffset: expected, expected: `file of ${expected} bytes`, actual: `${fileEnd} bytes` });
  }
}

function isNonNegativeInteger(value: JsonValue | undefined): value is number | bigint {
  return (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) || (typeof value === "bigint" && value >= 0n);
}

function jsonKind(value: JsonValue): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  return typeof value;
}
