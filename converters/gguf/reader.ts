import { FormatError, type FormatErrorCode } from "../../formats/errors.js";
import { ggmlCodec } from "../../formats/ggml/registry.js";
import type { GgmlTypeCodec } from "../../formats/ggml/types.js";
import type { BufferRing } from "../io/buffer-ring.js";
import { FileSource, type RandomAccessSource } from "../io/random-access.js";
import { DEFAULT_CHUNK_BYTES, readRange } from "../io/read-range.js";
import { firstInvalidUtf8 } from "../safetensors/utf8.js";
import {
  GGUF_ALIGNMENT_KEY, GGUF_DEFAULT_ALIGNMENT, GGUF_FIXED_BYTES, GGUF_MAGIC, GGUF_MAX_ALIGNMENT, GGUF_MAX_ARRAY_LENGTH, GGUF_MAX_DIMS,
  GGUF_MAX_KEY_BYTES, GGUF_MAX_KV_COUNT, GGUF_MAX_NAME_BYTES, GGUF_MAX_NESTING_DEPTH, GGUF_MAX_STRING_BYTES, GGUF_MAX_TENSOR_COUNT,
  GGUF_READ_VERSIONS, GGUF_TYPE_NAMES, GgufType, NUMERIC_ARRAYS, isGgufType, isNumericItemType, lengthBytes, minKvBytes,
  minTensorInfoBytes, padTo, GgufMetadata, type GgufArray, type GgufHeader, type GgufTensorInfo, type GgufValue,
} from "./layout.js";

/**
 * Strict GGUF reader (v1–v3). The header is parsed completely on open, through positional reads
 * of at most HEADER_CHUNK_BYTES (or one capped string) at a time; every count and length is
 * checked against its cap and against the bytes left in the file before anything is allocated.
 * Tensor data is read later, lazily, by byte range.
 */

/** Header read granularity: big enough that a 262k-token vocab takes a few reads. */
const HEADER_CHUNK_BYTES = 1 << 20;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const INT64_MIN_NEGATIVE = 1n << 63n;

export type { GgufHeader, GgufTensorInfo } from "./layout.js";

/** Bounded-window cursor over a source: `need` checks and fetches, the getters are synchronous. */
class Cursor {
  pos = 0;
  private buf: Uint8Array = new Uint8Array(0);
  private view = new DataView(this.buf.buffer);
  private bufStart = 0;
  constructor(readonly source: RandomAccessSource) {}

  get remaining(): number {
    return this.source.byteLength - this.pos;
  }

  /** Throws GGUF_TRUNCATED unless `n` more bytes exist, then makes them readable. */
  async need(n: number, what: string, key?: string): Promise<void> {
    if (n > this.remaining) fail("GGUF_TRUNCATED", `${what} runs past the end of the file`, this.source.name, this.pos, key, `${n} bytes`, `${this.remaining} left`);
    if (this.pos + n <= this.bufStart + this.buf.length) return;
    const length = Math.min(Math.max(n, HEADER_CHUNK_BYTES), this.remaining);
    this.buf = await this.source.read(this.pos, length);
    this.bufStart = this.pos;
    this.view = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);
  }

  u8(): number {
    return this.buf[this.pos++ - this.bufStart]!;
  }
  u32(): number {
    const v = this.view.getUint32(this.pos - this.bufStart, true);
    this.pos += 4;
    return v;
  }
  u64(): bigint {
    const v = this.view.getBigUint64(this.pos - this.bufStart, true);
    this.pos += 8;
    return v;
  }
  /** A view of the next `n` bytes (valid until the next `need`). */
  bytes(n: number): Uint8Array {
    const at = this.pos - this.bufStart;
    this.pos += n;
    return this.buf.subarray(at, at + n);
  }
  /** A scalar of a fixed-width type at the cursor. */
  scalar(type: GgufType): number | bigint {
    const at = this.pos - this.bufStart;
    this.pos += GGUF_FIXED_BYTES[type]!;
    const v = this.view;
    switch (type) {
      case GgufType.UINT8: return v.getUint8(at);
      case GgufType.INT8: return v.getInt8(at);
      case GgufType.UINT16: return v.getUint16(at, true);
      case GgufType.INT16: return v.getInt16(at, true);
      case GgufType.UINT32: return v.getUint32(at, true);
      case GgufType.INT32: return v.getInt32(at, true);
      case GgufType.FLOAT32: return v.getFloat32(at, true);
      case GgufType.UINT64: return v.getBigUint64(at, true);
      case GgufType.INT64: return v.getBigInt64(at, true);
      default: return v.getFloat64(at, true);
    }
  }
}

function fail(code: FormatErrorCode, detail: string, file: string, byteOffset: number, tensor?: string, expected?: unknown, actual?: unknown): never {
  throw new FormatError(code, detail, { file, byteOffset, tensor, expected, actual });
}

const utf8 = new TextDecoder("utf-8");

/** Parses and validates a whole GGUF header. `tensor` in errors names the key or tensor at fault. */
export async function readGgufHeader(source: RandomAccessSource): Promise<GgufHeader> {
  const file = source.name;
  const c = new Cursor(source);
  await c.need(8, "magic and version");
  const magic = c.bytes(4);
  if (!GGUF_MAGIC.every((b, i) => magic[i] === b)) fail("GGUF_BAD_MAGIC", "not a GGUF file", file, 0, undefined, "GGUF", Array.from(magic, (b) => b.toString(16).padStart(2, "0")).join(" "));
  const version = c.u32();
  if (!GGUF_READ_VERSIONS.includes(version)) {
    const swapped = ((version & 0xff) << 24 | (version & 0xff00) << 8 | (version >>> 8) & 0xff00 | version >>> 24) >>> 0;
    const what = GGUF_READ_VERSIONS.includes(swapped) ? "big-endian GGUF is not supported" : "unsupported GGUF version";
    fail("GGUF_BAD_VERSION", what, file, 4, undefined, GGUF_READ_VERSIONS.join(", "), version);
  }
  const lenBytes = lengthBytes(version);
  const readLength = (): bigint => (lenBytes === 4 ? BigInt(c.u32()) : c.u64());

  await c.need(2 * lenBytes, "tensor and KV counts");
  const tensorCount = readCount(c, readLength(), 8, GGUF_MAX_TENSOR_COUNT, 0, "tensor count", file);
  const kvCount = readCount(c, readLength(), 8 + lenBytes, GGUF_MAX_KV_COUNT, minKvBytes(version), "KV count", file);
  if (tensorCount * minTensorInfoBytes(version) > c.remaining - kvCount * minKvBytes(version)) {
    fail("GGUF_COUNT_TOO_LARGE", "tensor count is more than the file can hold", file, 8, undefined, `<= ${Math.floor(c.remaining / minTensorInfoBytes(version))}`, tensorCount);
  }

  const readString = async (cap: number, capCode: FormatErrorCode, what: string, key?: string): Promise<string> => {
    const at = c.pos;
    await c.need(lenBytes, `${what} length`, key);
    const n = readLength();
    if (n > BigInt(cap)) fail(capCode, `${what} longer than the cap`, file, at, key, `<= ${cap} bytes`, n);
    await c.need(Number(n), what, key);
    const bytes = c.bytes(Number(n));
    const bad = firstInvalidUtf8(bytes);
    if (bad >= 0) fail("HEADER_INVALID_UTF8", `${what} is not valid UTF-8`, file, at + lenBytes + bad, key);
    return utf8.decode(bytes);
  };

  const readValue = async (type: number, depth: number, key: string): Promise<GgufValue> => {
    const at = c.pos;
    if (type === GgufType.STRING) return { type, value: await readString(GGUF_MAX_STRING_BYTES, "GGUF_STRING_TOO_LONG", "string", key) };
    if (type === GgufType.ARRAY) return readArray(depth + 1, key);
    if (!isGgufType(type)) fail("GGUF_VALUE_TYPE_INVALID", "unknown value type", file, at, key, "0..12", type);
    await c.need(GGUF_FIXED_BYTES[type]!, `${GGUF_TYPE_NAMES[type]} value`, key);
    if (type === GgufType.BOOL) {
      const b = c.u8();
      if (b > 1) fail("GGUF_BOOL_INVALID", "BOOL must be 0 or 1", file, at, key, "0 or 1", b);
      return { type, value: b === 1 };
    }
    return { type, value: c.scalar(type) } as GgufValue;
  };

  const readArray = async (depth: number, key: string): Promise<GgufArray> => {
    const at = c.pos;
    if (depth > GGUF_MAX_NESTING_DEPTH) fail("GGUF_TOO_DEEP", "arrays nested too deeply", file, at, key, `<= ${GGUF_MAX_NESTING_DEPTH} levels`, depth);
    await c.need(4 + lenBytes, "array header", key);
    const itemType = c.u32();
    if (!isGgufType(itemType)) fail("GGUF_VALUE_TYPE_INVALID", "unknown array item type", file, at, key, "0..12", itemType);
    const n = readLength();
    if (n > BigInt(GGUF_MAX_ARRAY_LENGTH)) fail("GGUF_ARRAY_TOO_LONG", "array longer than the cap", file, at + 4, key, `<= ${GGUF_MAX_ARRAY_LENGTH} items`, n);
    const count = Number(n);
    const minItem = GGUF_FIXED_BYTES[itemType] ?? (itemType === GgufType.STRING ? lenBytes : 4 + lenBytes);
    if (count * minItem > c.remaining) fail("GGUF_TRUNCATED", `array of ${count} ${GGUF_TYPE_NAMES[itemType]} runs past the end of the file`, file, at + 4, key, `>= ${count * minItem} bytes`, `${c.remaining} left`);
    if (isNumericItemType(itemType)) {
      // The file's bytes become the typed array's bytes: exact bits (NaN payloads too) on the
      // little-endian hosts lmpack assumes everywhere (as formats/ggml does).
      const items = new NUMERIC_ARRAYS[itemType](count);
      const target = new Uint8Array(items.buffer);
      for (let done = 0; done < target.length; ) {
        const n = Math.min(HEADER_CHUNK_BYTES, target.length - done);
        await c.need(n, "array items", key);
        target.set(c.bytes(n), done);
        done += n;
      }
      return { type: GgufType.ARRAY, itemType, items } as GgufArray;
    }
    const items: unknown[] = [];
    for (let i = 0; i < count; i++) {
      const item = await readValue(itemType, depth, key);
      items.push(item.type === GgufType.ARRAY ? item : item.value);
    }
    return { type: GgufType.ARRAY, itemType, items } as GgufArray;
  };

  const metadata = new Map<string, GgufValue>();
  const kvOffsets = new Map<string, number>();
  for (let i = 0; i < kvCount; i++) {
    const at = c.pos;
    const key = await readString(GGUF_MAX_KEY_BYTES, "GGUF_STRING_TOO_LONG", "key");
    if (metadata.has(key)) fail("DUPLICATE_KEY", "duplicate metadata key", file, at, key);
    await c.need(4, "value type", key);
    const type = c.u32();
    if (!isGgufType(type)) fail("GGUF_VALUE_TYPE_INVALID", "unknown value type", file, c.pos - 4, key, "0..12", type);
    kvOffsets.set(key, at);
    metadata.set(key, await readValue(type, 0, key));
  }
  const alignment = readAlignment(metadata, file, kvOffsets.get(GGUF_ALIGNMENT_KEY) ?? 0);

  const tensors: GgufTensorInfo[] = [];
  const names = new Set<string>();
  for (let i = 0; i < tensorCount; i++) {
    const at = c.pos;
    const name = await readString(GGUF_MAX_NAME_BYTES, "GGUF_NAME_TOO_LONG", "tensor name");
    if (names.has(name)) fail("TENSOR_DUPLICATE", "duplicate tensor name", file, at, name);
    names.add(name);
    await c.need(4, "n_dims", name);
    const nDims = c.u32();
    if (nDims > GGUF_MAX_DIMS) fail("SHAPE_INVALID", "too many dims", file, c.pos - 4, name, `<= ${GGUF_MAX_DIMS}`, nDims);
    await c.need(nDims * lenBytes + 4 + 8, "tensor info", name);
    const ne = Array.from({ length: nDims }, readLength);
    const typeAt = c.pos;
    const type = c.u32();
    const offsetAt = c.pos;
    const offset = c.u64();
    const codec = ggmlCodec(type);
    if (codec === undefined) fail("UNKNOWN_DTYPE", `unknown or unsupported ggml type id ${type}`, file, typeAt, name, "a ggml type lmpack knows", type);
    tensors.push(tensorInfo(file, at, name, ne, codec, offset, offsetAt, alignment));
  }
  const infosEnd = c.pos;
  const dataStart = padTo(infosEnd, alignment);
  checkDataRanges(file, tensors, dataStart, source.byteLength);
  return { version, alignment, metadata, kvOffsets, tensors, infosEnd, dataStart };
}

function readCount(c: Cursor, n: bigint, at: number, cap: number, minBytes: number, what: string, file: string): number {
  if (n > BigInt(cap)) fail("GGUF_COUNT_TOO_LARGE", `${what} over the cap`, file, at, undefined, `<= ${cap}`, n);
  if (Number(n) * minBytes > c.remaining) fail("GGUF_COUNT_TOO_LARGE", `${what} is more than the file can hold`, file, at, undefined, `<= ${Math.floor(c.remaining / minBytes)}`, n);
  return Number(n);
}

/** `general.alignment`: ggml requires UINT32 and a power of two. */
function readAlignment(metadata: Map<string, GgufValue>, file: string, at: number): number {
  const value = metadata.get(GGUF_ALIGNMENT_KEY);
  if (value === undefined) return GGUF_DEFAULT_ALIGNMENT;
  if (value.type !== GgufType.UINT32) fail("GGUF_ALIGNMENT_INVALID", "general.alignment must be UINT32", file, at, GGUF_ALIGNMENT_KEY, "UINT32", GGUF_TYPE_NAMES[value.type]);
  const a = value.value;
  if (a === 0 || (a & (a - 1)) !== 0 || a > GGUF_MAX_ALIGNMENT) fail("GGUF_ALIGNMENT_INVALID", "general.alignment must be a power of two", file, at, GGUF_ALIGNMENT_KEY, `a power of two <= ${GGUF_MAX_ALIGNMENT}`, a);
  return a;
}

/** Validates one tensor's dims, type geometry and offset; every product is BigInt, then range-checked. */
function tensorInfo(file: string, at: number, name: string, ne: bigint[], codec: GgmlTypeCodec, offset: bigint, offsetAt: number, alignment: number): GgufTensorInfo {
  for (const d of ne) {
    if (d >= INT64_MIN_NEGATIVE) fail("SHAPE_INVALID", "negative dim", file, at, name, ">= 0", BigInt.asIntN(64, d));
    if (d > MAX_SAFE) fail("SHAPE_OVERFLOW", "dim too large", file, at, name, `<= ${Number.MAX_SAFE_INTEGER}`, d);
  }
  const ne0 = ne[0] ?? 1n;
  if (ne0 % BigInt(codec.blockSize) !== 0n) fail("GGUF_ROW_NOT_BLOCKS", `row of ${codec.name} is not a whole number of blocks`, file, at, name, `ne[0] a multiple of ${codec.blockSize}`, ne0);
  const nElements = ne.reduce((a, b) => a * b, 1n);
  const nBytes = (nElements / BigInt(codec.blockSize)) * BigInt(codec.typeSize);
  if (nElements > MAX_SAFE || nBytes > MAX_SAFE) fail("SHAPE_OVERFLOW", "tensor size overflows", file, at, name, `<= ${Number.MAX_SAFE_INTEGER} elements and bytes`, nElements);
  if (offset % BigInt(alignment) !== 0n) fail("GGUF_OFFSET_MISALIGNED", "tensor data offset is not aligned", file, offsetAt, name, `a multiple of ${alignment}`, offset);
  if (offset > MAX_SAFE) fail("OFFSET_PAST_EOF", "tensor data offset past the end of the file", file, offsetAt, name, `<= ${Number.MAX_SAFE_INTEGER}`, offset);
  const dims = ne.map(Number);
  // byteOffset is relative until checkDataRanges knows where the data section starts.
  return { name, ne: dims, shape: [...dims].reverse(), type: codec.id, codec, nElements: Number(nElements), offset: Number(offset), byteOffset: Number(offset), byteLength: Number(nBytes), infoByteOffset: at };
}

/** Places every tensor after the data start: in the file, and no two sharing a byte. */
function checkDataRanges(file: string, tensors: GgufTensorInfo[], dataStart: number, fileBytes: number): void {
  for (const t of tensors) {
    t.byteOffset = dataStart + t.offset;
    if (t.byteOffset + t.byteLength > fileBytes) fail("OFFSET_PAST_EOF", `tensor data [${t.byteOffset}, ${t.byteOffset + t.byteLength}) ends past the end of the file`, file, t.infoByteOffset, t.name, `end <= ${fileBytes}`, t.byteOffset + t.byteLength);
  }
  const byStart = tensors.filter((t) => t.byteLength > 0).sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < byStart.length; i++) {
    const prev = byStart[i - 1]!;
    const t = byStart[i]!;
    if (t.offset < prev.offset + prev.byteLength) fail("OFFSETS_OVERLAP", `tensor data overlaps "${prev.name}"`, file, t.infoByteOffset, t.name, `offset >= ${prev.offset + prev.byteLength}`, t.offset);
  }
}

/** An open GGUF file: header validated on open, data read on demand. */
export class GgufFile {
  private readonly byName: Map<string, GgufTensorInfo>;
  readonly metadata: GgufMetadata;

  private constructor(readonly source: RandomAccessSource, readonly header: GgufHeader) {
    this.byName = new Map(header.tensors.map((t) => [t.name, t]));
    this.metadata = new GgufMetadata(header.metadata, source.name, header.kvOffsets);
  }

  static async open(path: string): Promise<GgufFile> {
    const source = await FileSource.open(path);
    try {
      return await GgufFile.fromSource(source);
    } catch (error) {
      await source.close();
      throw error;
    }
  }

  static async fromSource(source: RandomAccessSource): Promise<GgufFile> {
    return new GgufFile(source, await readGgufHeader(source));
  }

  get path(): string {
    return this.source.name;
  }

  get tensors(): readonly GgufTensorInfo[] {
    return this.header.tensors;
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  tensor(name: string): GgufTensorInfo {
    const info = this.byName.get(name);
    if (info === undefined) throw new FormatError("TENSOR_MISSING", "no such tensor in the file", { file: this.path, tensor: name });
    return info;
  }

  /** The tensor's stored bytes (memory: one tensor). */
  async read(name: string): Promise<Uint8Array> {
    const info = this.tensor(name);
    return this.source.read(info.byteOffset, info.byteLength);
  }

  /** The stored bytes in chunks of whole blocks, at most `maxChunkBytes` (or one block) each. */
  async *readChunks(name: string, maxChunkBytes = DEFAULT_CHUNK_BYTES, ring?: BufferRing): AsyncGenerator<Uint8Array> {
    const info = this.tensor(name);
    yield* readRange(this.source, info.byteOffset, info.byteLength, info.codec.typeSize, maxChunkBytes, ring);
  }

  async close(): Promise<void> {
    await this.source.close();
  }
}
