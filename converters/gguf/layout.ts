import { FormatError } from "../../formats/errors.js";
import type { GgmlTypeCodec } from "../../formats/ggml/types.js";

/**
 * GGUF container layout (ggml docs/gguf.md, src/gguf.cpp @ d99724f2; ../shared/ref/gguf-onnx.md §1.1).
 * All values little-endian, packed, no implicit padding:
 *
 *   magic "GGUF" · version u32 · tensor_count · kv_count              counts: u32 in v1, u64 in v2/v3
 *   kv[kv_count]:     key string · value_type u32 · value
 *   info[n_tensors]:  name string · n_dims u32 · ne[n_dims] · ggml_type u32 · offset u64
 *                     (ne: u32 in v1, u64 in v2/v3; ne[0] is the innermost, fastest-varying dim)
 *   zero padding to `general.alignment` (UINT32, a power of two; 32 when absent)
 *   data: tensors at `offset` from the data start, each padded to the alignment
 *
 *   string = length (u32 in v1, u64 after) · UTF-8 bytes, no NUL
 *   array  = item_type u32 · count (u32 in v1, u64 after) · items (arrays may nest)
 */

export const GGUF_MAGIC = Uint8Array.of(0x47, 0x47, 0x55, 0x46); // "GGUF"
export const GGUF_WRITE_VERSION = 3;
export const GGUF_READ_VERSIONS: readonly number[] = [1, 2, 3];
export const GGUF_DEFAULT_ALIGNMENT = 32;
export const GGUF_ALIGNMENT_KEY = "general.alignment";

/** Value types, with gguf.h's numbers (GGUF_TYPE_*). */
export const GgufType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;
export type GgufType = (typeof GgufType)[keyof typeof GgufType];

export const GGUF_TYPE_NAMES: Record<GgufType, string> = {
  0: "UINT8", 1: "INT8", 2: "UINT16", 3: "INT16", 4: "UINT32", 5: "INT32", 6: "FLOAT32",
  7: "BOOL", 8: "STRING", 9: "ARRAY", 10: "UINT64", 11: "INT64", 12: "FLOAT64",
};

/** Bytes of a fixed-width value; STRING and ARRAY are variable (their length prefix is per version). */
export const GGUF_FIXED_BYTES: Partial<Record<GgufType, number>> = {
  0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8,
};

export function isGgufType(id: number): id is GgufType {
  return Number.isInteger(id) && id >= 0 && id <= 12;
}

/** The JS value each scalar type decodes to. 64-bit integers stay bigint, so nothing is rounded. */
interface ScalarByType {
  0: number; 1: number; 2: number; 3: number; 4: number; 5: number; 6: number;
  7: boolean; 8: string; 10: bigint; 11: bigint; 12: number;
}

/**
 * Array items by item type. Numbers are kept in typed arrays of their own width (a 256k-entry
 * scores array stays 1 MB, and its bits are re-emitted exactly); nested arrays carry their own
 * item type, as gguf-py writes them.
 */
interface ItemsByType {
  0: Uint8Array; 1: Int8Array; 2: Uint16Array; 3: Int16Array; 4: Uint32Array; 5: Int32Array;
  6: Float32Array; 7: boolean[]; 8: string[]; 9: GgufArray[]; 10: BigUint64Array; 11: BigInt64Array;
  12: Float64Array;
}

export type GgufScalar = { [T in keyof ScalarByType]: { type: T; value: ScalarByType[T] } }[keyof ScalarByType];
export type GgufArray = { [T in keyof ItemsByType]: { type: 9; itemType: T; items: ItemsByType[T] } }[keyof ItemsByType];
/** A metadata value with its on-disk type, so a writer can re-emit it exactly. */
export type GgufValue = GgufScalar | GgufArray;

/** Typed-array constructors of the numeric item types (bytes per item = BYTES_PER_ELEMENT). */
export const NUMERIC_ARRAYS = {
  0: Uint8Array, 1: Int8Array, 2: Uint16Array, 3: Int16Array, 4: Uint32Array, 5: Int32Array,
  6: Float32Array, 10: BigUint64Array, 11: BigInt64Array, 12: Float64Array,
} as const;
export type NumericItemType = keyof typeof NUMERIC_ARRAYS;

export function isNumericItemType(type: GgufType): type is NumericItemType {
  return Object.prototype.hasOwnProperty.call(NUMERIC_ARRAYS, type);
}

export interface GgufTensorInfo {
  name: string;
  /** ggml dims as stored: ne[0] is the innermost (fastest-varying) dim. */
  ne: number[];
  /** Row-major (torch/numpy) shape: `ne` reversed. */
  shape: number[];
  /** ggml type id, and its codec from formats/ggml/registry.ts. */
  type: number;
  codec: GgmlTypeCodec;
  nElements: number;
  /** Offset as written: relative to the data section. */
  offset: number;
  /** Absolute position of the first data byte in the file. */
  byteOffset: number;
  byteLength: number;
  /** Where the tensor's info record starts in the header (for messages). */
  infoByteOffset: number;
}

export interface GgufHeader {
  version: number;
  alignment: number;
  /** Every KV in file order, value types kept. */
  metadata: Map<string, GgufValue>;
  /** Where each KV record starts (for messages). */
  kvOffsets: Map<string, number>;
  /** Tensors in tensor-info order. */
  tensors: GgufTensorInfo[];
  /** End of the tensor infos (before padding) and the padded start of the data section. */
  infosEnd: number;
  dataStart: number;
}

// ---------------------------------------------------------------------------------------------
// Caps. Each bounds what a hostile header can make us parse or allocate; all are far above
// what real files carry, and every length is also checked against the bytes left in the file.

/** KV pairs: real models carry 20–60 (a tokenizer's vocab is one KV, not one per token). */
export const GGUF_MAX_KV_COUNT = 65_536;
/** Tensors: the largest MoE checkpoints have a few thousand (experts are merged into 3-D tensors). */
export const GGUF_MAX_TENSOR_COUNT = 1_048_576;
/** Keys: docs/gguf.md limits a key to 2^16 − 1 bytes. */
export const GGUF_MAX_KEY_BYTES = 65_535;
/** Strings: the longest real values are chat templates of ~100 KB; 16 MiB bounds one allocation. */
export const GGUF_MAX_STRING_BYTES = 16 * 1024 * 1024;
/** Array items: vocabularies and merge lists reach ~262k; 16 Mi leaves room without inviting abuse. */
export const GGUF_MAX_ARRAY_LENGTH = 16 * 1024 * 1024;
/**
 * Array nesting: ggml's own loader refuses nested arrays outright; gguf-py writes them, so a few
 * levels are read, and the cap stops a file of nested headers from recursing without bound.
 */
export const GGUF_MAX_NESTING_DEPTH = 4;
/** GGML_MAX_DIMS. */
export const GGUF_MAX_DIMS = 4;
/** GGML_MAX_NAME = 64 including the NUL terminator, so names are at most 63 bytes. */
export const GGUF_MAX_NAME_BYTES = 63;
/** Alignment cap: a larger power of two is legal u32 but would only waste space; 1 GiB bounds the padding. */
export const GGUF_MAX_ALIGNMENT = 1 << 30;

/** The smallest a KV can be on disk (empty key, 1-byte value): how a count is checked against the file. */
export function minKvBytes(version: number): number {
  return lengthBytes(version) + 4 + 1;
}

/** The smallest a tensor info can be (empty name, no dims): name length, n_dims, type, offset. */
export function minTensorInfoBytes(version: number): number {
  return lengthBytes(version) + 4 + 4 + 8;
}

/** Width of string lengths, array counts, KV/tensor counts and dims: u32 in v1, u64 from v2. */
export function lengthBytes(version: number): 4 | 8 {
  return version === 1 ? 4 : 8;
}

/** `n` rounded up to a multiple of `alignment` (GGML_PAD). */
export function padTo(n: number, alignment: number): number {
  const rest = n % alignment;
  return rest === 0 ? n : n + alignment - rest;
}

/** Shortest decimal that reads back as the same float32 (1e-5, not 9.999999747378752e-06). */
export function formatFloat32(x: number): number {
  for (let digits = 1; digits <= 9; digits++) {
    const short = Number(x.toPrecision(digits));
    if (Math.fround(short) === x) return short;
  }
  return x;
}

const INTEGER_TYPES: ReadonlySet<GgufType> = new Set([0, 1, 2, 3, 4, 5, 10, 11]);

/**
 * Typed read access to a GGUF file's KVs, for importers and exporters. A key that is present with
 * the wrong type is a FormatError (METADATA_INVALID) naming the key, never a silent coercion.
 */
export class GgufMetadata {
  constructor(readonly values: ReadonlyMap<string, GgufValue>, readonly file: string, private readonly offsets: ReadonlyMap<string, number> = new Map()) {}

  get(key: string): GgufValue | undefined {
    return this.values.get(key);
  }

  has(key: string): boolean {
    return this.values.has(key);
  }

  string(key: string): string | undefined {
    const v = this.values.get(key);
    if (v === undefined) return undefined;
    if (v.type !== GgufType.STRING) this.wrongType(key, "STRING", v);
    return v.value;
  }

  /** Any integer type, as a number (64-bit values must be safe integers). */
  integer(key: string): number | undefined {
    const v = this.values.get(key);
    if (v === undefined) return undefined;
    if (v.type === GgufType.ARRAY || !INTEGER_TYPES.has(v.type)) this.wrongType(key, "an integer type", v);
    const n = Number(v.value);
    if (!Number.isSafeInteger(n)) this.wrongType(key, "a safe integer", v);
    return n;
  }

  /** Any integer or float type, as a number. */
  number(key: string): number | undefined {
    const v = this.values.get(key);
    if (v === undefined) return undefined;
    if (v.type === GgufType.FLOAT32 || v.type === GgufType.FLOAT64) return v.value;
    return this.integer(key);
  }

  boolean(key: string): boolean | undefined {
    const v = this.values.get(key);
    if (v === undefined) return undefined;
    if (v.type !== GgufType.BOOL) this.wrongType(key, "BOOL", v);
    return v.value;
  }

  array(key: string): GgufArray | undefined {
    const v = this.values.get(key);
    if (v === undefined) return undefined;
    if (v.type !== GgufType.ARRAY) this.wrongType(key, "ARRAY", v);
    return v;
  }

  /** Scalar KVs as strings (Checkpoint.metadata); arrays are summarised as `ARRAY<type>[n]`. */
  toStrings(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const [key, v] of this.values) {
      out[key] = v.type === GgufType.ARRAY ? `ARRAY<${GGUF_TYPE_NAMES[v.itemType]}>[${v.items.length}]` : v.type === GgufType.FLOAT32 ? String(formatFloat32(v.value)) : String(v.value);
    }
    return out;
  }

  private wrongType(key: string, expected: string, v: GgufValue): never {
    const actual = v.type === GgufType.ARRAY ? `ARRAY<${GGUF_TYPE_NAMES[v.itemType]}>` : `${GGUF_TYPE_NAMES[v.type]} ${String(v.value)}`;
    throw new FormatError("METADATA_INVALID", "metadata value has the wrong type", { file: this.file, tensor: key, byteOffset: this.offsets.get(key), expected, actual });
  }
}
