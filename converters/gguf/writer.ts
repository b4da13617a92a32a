import { UsageError } from "../../formats/errors.js";
import { ggmlCodec } from "../../formats/ggml/registry.js";
import { AtomicFile, refuseExisting } from "../io/atomic.js";
import {
  GGUF_ALIGNMENT_KEY, GGUF_DEFAULT_ALIGNMENT, GGUF_FIXED_BYTES, GGUF_MAGIC, GGUF_MAX_ALIGNMENT, GGUF_MAX_DIMS, GGUF_MAX_KEY_BYTES,
  GGUF_MAX_NAME_BYTES, GGUF_MAX_NESTING_DEPTH, GGUF_MAX_STRING_BYTES, GGUF_TYPE_NAMES, GGUF_WRITE_VERSION, GgufType, isNumericItemType,
  padTo, type GgufArray, type GgufValue,
} from "./layout.js";

/**
 * GGUF v3 writer, laid out as gguf-py's GGUFWriter lays it out, so re-writing a file it made
 * reproduces it byte for byte: header, KVs in the given order with their exact types, tensor
 * infos (dims reversed: ne[0] is the innermost dim), zero padding to the alignment, then each
 * tensor's data followed by zero padding to the alignment (the last tensor included).
 *
 * The header is built in memory (it holds the tokenizer, a few MB at most); tensor data is
 * streamed tensor after tensor into a temporary file that is renamed into place when complete.
 */

export interface GgufTensorToWrite {
  name: string;
  /** ggml type id (formats/ggml/registry.ts). */
  type: number;
  /** Row-major (torch/numpy) shape; stored reversed, as ne. */
  shape: readonly number[];
  /** The stored bytes, in order, in chunks of any size, exactly nbytes in total. */
  data(): AsyncIterable<Uint8Array> | Iterable<Uint8Array>;
}

export type GgufTensorLayout = Omit<GgufTensorToWrite, "data">;

export interface GgufWriteOptions {
  /** Replace an existing output (otherwise OUTPUT_EXISTS). */
  overwrite?: boolean;
  /** Data alignment when the metadata has no `general.alignment` (default 32). */
  alignment?: number;
}

export interface GgufHeaderBytes {
  /** Everything before the data section, padding included. */
  bytes: Uint8Array;
  alignment: number;
  /** Per tensor: its offset in the data section and its byte length. */
  offsets: number[];
  byteLengths: number[];
  /** The data section's size, every tensor padded. */
  dataBytes: number;
}

const utf8 = new TextEncoder();

function bad(detail: string, context: { tensor?: string; expected?: unknown; actual?: unknown } = {}): never {
  throw new UsageError("BAD_ARGUMENT", `GGUF writer: ${detail}`, context);
}

/** Growable little-endian byte buffer. */
class Sink {
  private buf = new Uint8Array(1 << 16);
  private view = new DataView(this.buf.buffer);
  length = 0;

  private reserve(n: number): number {
    if (this.length + n > this.buf.length) {
      const next = new Uint8Array(Math.max(this.buf.length * 2, this.length + n));
      next.set(this.buf.subarray(0, this.length));
      this.buf = next;
      this.view = new DataView(next.buffer);
    }
    const at = this.length;
    this.length += n;
    return at;
  }
  // reserve() first: it may replace this.view, which must not be read before it.
  u32(v: number): void {
    const at = this.reserve(4);
    this.view.setUint32(at, v, true);
  }
  u64(v: number | bigint): void {
    const at = this.reserve(8);
    this.view.setBigUint64(at, BigInt(v), true);
  }
  bytes(b: Uint8Array): void {
    const at = this.reserve(b.length);
    this.buf.set(b, at);
  }
  string(s: string, cap: number, what: string): void {
    const b = utf8.encode(s);
    if (b.length > cap) bad(`${what} longer than ${cap} bytes`, { tensor: s.slice(0, 80), actual: b.length });
    this.u64(b.length);
    this.bytes(b);
  }
  scalar(type: GgufType, v: number | bigint | boolean, key: string): void {
    const at = this.reserve(GGUF_FIXED_BYTES[type]!);
    const d = this.view;
    const int = (min: number, max: number): number => {
      if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) bad(`${GGUF_TYPE_NAMES[type]} value out of range`, { tensor: key, expected: `${min}..${max}`, actual: v });
      return v;
    };
    switch (type) {
      case GgufType.UINT8: return d.setUint8(at, int(0, 0xff));
      case GgufType.INT8: return d.setInt8(at, int(-0x80, 0x7f));
      case GgufType.UINT16: return d.setUint16(at, int(0, 0xffff), true);
      case GgufType.INT16: return d.setInt16(at, int(-0x8000, 0x7fff), true);
      case GgufType.UINT32: return d.setUint32(at, int(0, 0xffffffff), true);
      case GgufType.INT32: return d.setInt32(at, int(-0x80000000, 0x7fffffff), true);
      case GgufType.FLOAT32: return d.setFloat32(at, Number(v), true);
      case GgufType.FLOAT64: return d.setFloat64(at, Number(v), true);
      case GgufType.BOOL: return d.setUint8(at, v === true ? 1 : 0);
      case GgufType.UINT64:
      case GgufType.INT64: {
        const b = BigInt(v);
        if (BigInt.asUintN(64, b) !== b && BigInt.asIntN(64, b) !== b) bad("64-bit value out of range", { tensor: key, actual: b });
        return d.setBigUint64(at, BigInt.asUintN(64, b), true);
      }
    }
  }
  done(): Uint8Array {
    return this.buf.slice(0, this.length);
  }
}

function writeValue(sink: Sink, key: string, value: GgufValue, depth: number): void {
  if (value.type === GgufType.STRING) return sink.string(value.value, GGUF_MAX_STRING_BYTES, `string value of "${key}"`);
  if (value.type !== GgufType.ARRAY) return sink.scalar(value.type, value.value, key);
  writeArray(sink, key, value, depth + 1);
}

function writeArray(sink: Sink, key: string, array: GgufArray, depth: number): void {
  if (depth > GGUF_MAX_NESTING_DEPTH) bad("arrays nested too deeply", { tensor: key, expected: `<= ${GGUF_MAX_NESTING_DEPTH}`, actual: depth });
  sink.u32(array.itemType);
  sink.u64(array.items.length);
  if (isNumericItemType(array.itemType)) {
    // Typed arrays are little-endian on every host lmpack runs on: their bytes are the file's bytes.
    const items = array.items as Exclude<GgufArray["items"], unknown[]>;
    sink.bytes(new Uint8Array(items.buffer, items.byteOffset, items.byteLength));
    return;
  }
  for (const item of array.items) {
    if (array.itemType === GgufType.ARRAY) writeArray(sink, key, item as GgufArray, depth + 1);
    else writeValue(sink, key, { type: array.itemType, value: item } as GgufValue, depth);
  }
}

/** The alignment the file will use: `general.alignment` when present (UINT32, a power of two), else the option. */
function resolveAlignment(metadata: ReadonlyMap<string, GgufValue>, option: number | undefined): number {
  const kv = metadata.get(GGUF_ALIGNMENT_KEY);
  if (kv !== undefined && kv.type !== GgufType.UINT32) bad("general.alignment must be UINT32", { tensor: GGUF_ALIGNMENT_KEY, actual: GGUF_TYPE_NAMES[kv.type] });
  const alignment = kv?.value ?? option ?? GGUF_DEFAULT_ALIGNMENT;
  if (typeof alignment !== "number" || alignment <= 0 || alignment > GGUF_MAX_ALIGNMENT || (alignment & (alignment - 1)) !== 0) bad("alignment must be a power of two", { expected: `<= ${GGUF_MAX_ALIGNMENT}`, actual: alignment });
  if (kv !== undefined && option !== undefined && option !== alignment) bad("alignment option differs from general.alignment", { expected: alignment, actual: option });
  return alignment;
}

/** Encodes everything before the data section, and where each tensor's data goes. */
export function encodeGgufHeader(metadata: ReadonlyMap<string, GgufValue>, tensors: readonly GgufTensorLayout[], options: { alignment?: number } = {}): GgufHeaderBytes {
  const alignment = resolveAlignment(metadata, options.alignment);
  const sink = new Sink();
  sink.bytes(GGUF_MAGIC);
  sink.u32(GGUF_WRITE_VERSION);
  sink.u64(tensors.length);
  sink.u64(metadata.size);
  for (const [key, value] of metadata) {
    sink.string(key, GGUF_MAX_KEY_BYTES, "key");
    sink.u32(value.type);
    writeValue(sink, key, value, 0);
  }
  const offsets: number[] = [];
  const byteLengths: number[] = [];
  const names = new Set<string>();
  let offset = 0;
  for (const t of tensors) {
    if (names.has(t.name)) bad("duplicate tensor name", { tensor: t.name });
    names.add(t.name);
    const byteLength = tensorBytes(t);
    sink.string(t.name, GGUF_MAX_NAME_BYTES, "tensor name");
    sink.u32(t.shape.length);
    for (let i = t.shape.length - 1; i >= 0; i--) sink.u64(t.shape[i]!);
    sink.u32(t.type);
    sink.u64(offset);
    offsets.push(offset);
    byteLengths.push(byteLength);
    offset += padTo(byteLength, alignment);
  }
  sink.bytes(new Uint8Array(padTo(sink.length, alignment) - sink.length));
  return { bytes: sink.done(), alignment, offsets, byteLengths, dataBytes: offset };
}

/** Bytes of one tensor, after checking its type, rank and row geometry. */
function tensorBytes(t: GgufTensorLayout): number {
  const codec = ggmlCodec(t.type);
  if (codec === undefined) bad("unknown ggml type id", { tensor: t.name, actual: t.type });
  if (t.shape.length > GGUF_MAX_DIMS) bad("too many dims", { tensor: t.name, expected: `<= ${GGUF_MAX_DIMS}`, actual: t.shape.length });
  if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) bad("dims must be non-negative integers", { tensor: t.name, actual: t.shape });
  const ne0 = t.shape[t.shape.length - 1] ?? 1;
  if (ne0 % codec.blockSize !== 0) bad(`innermost dim is not a whole number of ${codec.name} blocks`, { tensor: t.name, expected: `a multiple of ${codec.blockSize}`, actual: ne0 });
  const n = t.shape.reduce((a, b) => a * BigInt(b), 1n);
  const bytes = (n / BigInt(codec.blockSize)) * BigInt(codec.typeSize);
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) bad("tensor too large", { tensor: t.name, actual: bytes });
  return Number(bytes);
}

/**
 * Writes a GGUF v3 file atomically: refused if `path` exists (unless `overwrite`); on any error
 * the temporary is removed and `path` is left as it was. Returns the file's size.
 */
export async function writeGguf(path: string, metadata: ReadonlyMap<string, GgufValue>, tensors: readonly GgufTensorToWrite[], options: GgufWriteOptions = {}): Promise<number> {
  await refuseExisting(path, options.overwrite ?? false);
  const header = encodeGgufHeader(metadata, tensors, options);
  const file = await AtomicFile.create(path);
  try {
    await file.write(header.bytes);
    let position = header.bytes.length;
    for (const [i, t] of tensors.entries()) {
      const expected = header.byteLengths[i]!;
      let written = 0;
      for await (const chunk of t.data()) {
        if (written + chunk.length > expected) bad("tensor data longer than its shape and type imply", { tensor: t.name, expected, actual: `> ${written + chunk.length - 1}` });
        await file.write(chunk, position);
        position += chunk.length;
        written += chunk.length;
      }
      if (written !== expected) bad("tensor data shorter than its shape and type imply", { tensor: t.name, expected, actual: written });
      const pad = padTo(written, header.alignment) - written;
      if (pad > 0) await file.write(new Uint8Array(pad), position);
      position += pad;
    }
  } catch (error) {
    await file.abort();
    throw error;
  }
  await file.commit();
  return header.bytes.length + header.dataBytes;
}

/** A whole GGUF file in memory (small files: tests and fixtures). */
export function ggufBytes(metadata: ReadonlyMap<string, GgufValue>, tensors: readonly (GgufTensorLayout & { bytes: Uint8Array })[], options: { alignment?: number } = {}): Uint8Array {
  const header = encodeGgufHeader(metadata, tensors, options);
  const out = new Uint8Array(header.bytes.length + header.dataBytes);
  out.set(header.bytes);
  for (const [i, t] of tensors.entries()) {
    if (t.bytes.length !== header.byteLengths[i]) bad("tensor data length does not match its shape and type", { tensor: t.name, expected: header.byteLengths[i], actual: t.bytes.length });
    out.set(t.bytes, header.bytes.length + header.offsets[i]!);
  }
  return out;
}
