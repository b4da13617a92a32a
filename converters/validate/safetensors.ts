import { DTYPES, isDType } from "../../formats/dtype.js";
import { isLmpackError } from "../../formats/errors.js";
import type { TensorEntry } from "../checkpoint.js";
import { FileSource, type RandomAccessSource } from "../io/random-access.js";
import { readRange, DEFAULT_CHUNK_BYTES } from "../io/read-range.js";
import { METADATA_KEY, parseHeader, parseHeaderLength, SAFETENSORS_MAX_RANK, SAFETENSORS_PREFIX_BYTES, type SafetensorsTensorInfo } from "../safetensors/header.js";
import { isJsonObject, parseStrictJson, type JsonObject, type JsonValue } from "../safetensors/strict-json.js";
import type { Findings } from "./findings.js";

/**
 * One safetensors file, every problem reported. The strict reader (safetensors/header.ts) runs
 * first: on a valid file its result is used as is. When it refuses the file for a tensor entry,
 * the header is walked here entry by entry with the same codes, so that one bad entry does not
 * hide the others; header-level faults (length, UTF-8, JSON syntax) stop the file, since nothing
 * after them can be located.
 */

export interface CheckedSafetensors {
  path: string;
  source: RandomAccessSource;
  /** The entries that passed (data in range, size consistent), in data order. */
  tensors: SafetensorsTensorInfo[];
  metadata: Record<string, string> | undefined;
}

/** Faults of the header as a whole: after one of them no entry can be trusted or located. */
const HEADER_FATAL = new Set(["FILE_TOO_SMALL", "HEADER_TOO_LARGE", "HEADER_LENGTH_PAST_EOF", "HEADER_INVALID_UTF8", "HEADER_NOT_OBJECT", "HEADER_INVALID_JSON", "HEADER_TOO_DEEP", "DUPLICATE_KEY"]);

export async function checkSafetensorsFile(path: string, findings: Findings): Promise<CheckedSafetensors | undefined> {
  const source = await findings.guard({ file: path }, () => FileSource.open(path));
  if (source === undefined) return undefined;
  let headerBytes: Uint8Array = new Uint8Array(0);
  let refusal: unknown;
  try {
    const prefix = await source.read(0, Math.min(SAFETENSORS_PREFIX_BYTES, source.byteLength));
    headerBytes = await source.read(SAFETENSORS_PREFIX_BYTES, parseHeaderLength(prefix, source.byteLength, path));
    const header = parseHeader(headerBytes, source.byteLength, path);
    return { path, source, tensors: header.tensors, metadata: header.metadata };
  } catch (error) {
    if (!isLmpackError(error) || HEADER_FATAL.has(error.code)) {
      findings.fromError(error, { file: path, byteOffset: 0 });
      await source.close();
      return undefined;
    }
    refusal = error;
  }
  const before = findings.list.length;
  // The strict parse got past the JSON, so this parse succeeds and yields an object.
  const text = new TextDecoder("utf-8").decode(headerBytes);
  const root = parseStrictJson(text) as JsonObject;
  const entryOffset = (name: string) => headerPosition(text, name);
  const dataStart = SAFETENSORS_PREFIX_BYTES + headerBytes.length;
  const dataBytes = source.byteLength - dataStart;
  const metadata = checkMetadata(root[METADATA_KEY], path, findings, entryOffset(METADATA_KEY));
  const valid: SafetensorsTensorInfo[] = [];
  let rejected = 0;
  for (const name of Object.keys(root)) {
    if (name === METADATA_KEY) continue;
    const info = checkEntry(name, root[name]!, { path, dataStart, dataBytes, headerOffset: entryOffset(name) }, findings);
    if (info === undefined) rejected++;
    else valid.push(info);
  }
  valid.sort((a, b) => a.byteOffset - b.byteOffset || a.byteLength - b.byteLength);
  checkTiling(valid, dataStart, source.byteLength, rejected > 0, path, findings);
  // The walk mirrors the reader's checks; should the reader refuse what it does not, the reader's word stands.
  if (findings.list.length === before) findings.fromError(refusal, { file: path });
  return { path, source, tensors: valid, metadata };
}

/** Byte offset of `"name":` in the header (where the entry is), for findings about the entry itself. */
function headerPosition(text: string, name: string): number | undefined {
  const match = new RegExp(`${escapeRegExp(JSON.stringify(name))}\\s*:`).exec(text);
  return match === null ? undefined : SAFETENSORS_PREFIX_BYTES + Buffer.byteLength(text.slice(0, match.index));
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function checkMetadata(value: JsonValue | undefined, file: string, findings: Findings, byteOffset: number | undefined): Record<string, string> | undefined {
  if (value === undefined) return undefined;
  if (!isJsonObject(value)) {
    findings.add("METADATA_INVALID", `"${METADATA_KEY}" must be an object of strings`, { file, byteOffset, expected: "object" });
    return undefined;
  }
  const out: Record<string, string> = {};
  for (const [key, item] of Object.entries(value)) {
    if (typeof item === "string") out[key] = item;
    else findings.add("METADATA_INVALID", `"${METADATA_KEY}" value for "${key}" is not a string`, { file, byteOffset, expected: "string" });
  }
  return out;
}

interface EntryContext {
  path: string;
  dataStart: number;
  dataBytes: number;
  /** Where the entry's key is in the header. */
  headerOffset: number | undefined;
}

/** One tensor entry, checked as safetensors/header.ts checks it; undefined (and findings) when bad. */
function checkEntry(name: string, entry: JsonValue, c: EntryContext, findings: Findings): SafetensorsTensorInfo | undefined {
  const at = { file: c.path, tensor: name, byteOffset: c.headerOffset };
  if (!isJsonObject(entry)) return void findings.add("TENSOR_INVALID_INFO", "entry is not an object", { ...at, expected: "object" });
  const { dtype, shape, data_offsets: offsets } = entry;
  if (typeof dtype !== "string" || !Array.isArray(shape) || !Array.isArray(offsets) || offsets.length !== 2) {
    return void findings.add("TENSOR_INVALID_INFO", "entry needs dtype (string), shape (array) and data_offsets ([begin, end])", at);
  }
  if (!isDType(dtype)) return void findings.add("UNKNOWN_DTYPE", "unknown or unsupported dtype", { ...at, expected: Object.keys(DTYPES).join("|"), actual: dtype });
  if (shape.length > SAFETENSORS_MAX_RANK) return void findings.add("SHAPE_INVALID", "too many dimensions", { ...at, expected: `<= ${SAFETENSORS_MAX_RANK}`, actual: shape.length });
  let nElements = 1n;
  for (const dim of shape) {
    if (typeof dim === "bigint") return void findings.add("SHAPE_OVERFLOW", "shape dim too large", { ...at, expected: `<= ${Number.MAX_SAFE_INTEGER}`, actual: dim });
    if (typeof dim !== "number" || !Number.isSafeInteger(dim) || dim < 0) return void findings.add("SHAPE_INVALID", "shape dims must be non-negative integers", { ...at, actual: shape });
    nElements *= BigInt(dim);
  }
  const nBytes = (nElements * BigInt(DTYPES[dtype].bits)) / 8n;
  if (nBytes > BigInt(Number.MAX_SAFE_INTEGER)) return void findings.add("SHAPE_OVERFLOW", "shape's byte size overflows", { ...at, actual: `${nBytes} bytes` });
  const [begin, end] = offsets;
  if (!isOffset(begin) || !isOffset(end)) return void findings.add("TENSOR_INVALID_INFO", "data_offsets must be non-negative integers", { ...at, actual: offsets });
  const b = BigInt(begin);
  const e = BigInt(end);
  const dataAt = BigInt(c.dataStart) + b;
  if (e < b) return void findings.add("OFFSETS_REVERSED", "data_offsets end before they begin", { ...at, byteOffset: Number(dataAt), expected: `end >= ${b}`, actual: `end ${e}` });
  if (e - b !== nBytes) return void findings.add("SHAPE_SIZE_MISMATCH", `shape ${JSON.stringify(shape)} × ${dtype} does not match the byte length`, { ...at, byteOffset: Number(dataAt), expected: `${nBytes} bytes`, actual: `${e - b} bytes` });
  if (b > BigInt(c.dataBytes)) return void findings.add("OFFSET_PAST_EOF", "tensor starts past the end of the file", { ...at, byteOffset: Number(dataAt), expected: `<= ${c.dataStart + c.dataBytes}`, actual: dataAt });
  if (e > BigInt(c.dataBytes)) return void findings.add("DATA_TRUNCATED", "file ends inside the tensor's data", { ...at, byteOffset: Number(dataAt), expected: `file of at least ${BigInt(c.dataStart) + e} bytes`, actual: `${c.dataStart + c.dataBytes} bytes` });
  return { name, dtype, shape: shape as number[], nElements: Number(nElements), byteOffset: Number(dataAt), byteLength: Number(nBytes) };
}

function isOffset(value: JsonValue | undefined): value is number | bigint {
  return (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) || (typeof value === "bigint" && value >= 0n);
}

/**
 * Valid tensors (sorted) must not share bytes; with every entry valid they must also tile the
 * data exactly. A rejected entry's bytes are unknown, so gaps and a tail are not judged then.
 */
function checkTiling(tensors: SafetensorsTensorInfo[], dataStart: number, fileBytes: number, someRejected: boolean, file: string, findings: Findings): void {
  let expected = dataStart;
  let previous: string | undefined;
  for (const t of tensors) {
    if (t.byteOffset < expected) findings.add("OFFSETS_OVERLAP", `data overlaps tensor "${previous}"`, { file, tensor: t.name, byteOffset: t.byteOffset, expected: `start >= ${expected}`, actual: t.byteOffset });
    else if (t.byteOffset > expected && !someRejected) findings.add("OFFSETS_GAP", "unused bytes before the tensor's data", { file, tensor: t.name, byteOffset: expected, expected: `start ${expected}`, actual: t.byteOffset });
    if (t.byteOffset + t.byteLength > expected) {
      expected = t.byteOffset + t.byteLength;
      previous = t.name;
    }
  }
  if (expected !== fileBytes && !someRejected) findings.add("TRAILING_BYTES", "bytes after the last tensor", { file, byteOffset: expected, expected: `file of ${expected} bytes`, actual: `${fileBytes} bytes` });
}

/** Checkpoint entries over the checked tensors (data read lazily by byte range). */
export function checkedEntries(checked: CheckedSafetensors): TensorEntry[] {
  return checked.tensors.map((info) => ({
    name: info.name,
    representation: "dense",
    dtype: info.dtype,
    shape: info.shape,
    nElements: info.nElements,
    byteLength: info.byteLength,
    file: checked.path,
    byteOffset: info.byteOffset,
    read: () => checked.source.read(info.byteOffset, info.byteLength),
    readChunks: (maxChunkBytes = DEFAULT_CHUNK_BYTES) => readRange(checked.source, info.byteOffset, info.byteLength, Math.max(1, DTYPES[info.dtype].bits / 8), maxChunkBytes),
  }));
}
