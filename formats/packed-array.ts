import type { DType } from "./dtype.js";
import { FormatError } from "./errors.js";

/**
 * One stored tensor of a packed layer (qweight, qzeros, scales, g_idx...) as read from a
 * container: raw little-endian bytes plus what the header declared, and where it came from so
 * that errors can name the file, tensor and byte offset.
 */
export interface PackedArray {
  /** Full tensor name, e.g. "model.layers.0.mlp.up_proj.qweight". */
  name: string;
  dtype: DType;
  shape: number[];
  bytes: Uint8Array;
  file?: string;
  /** Absolute byte offset of the data in `file`, when known. */
  byteOffset?: number;
}

/** Checks dtype and shape of a packed array; FormatError naming the tensor otherwise. */
export function expectArray(array: PackedArray, dtypes: readonly DType[], shape: readonly number[]): void {
  const where = { file: array.file, tensor: array.name, byteOffset: array.byteOffset };
  if (!dtypes.includes(array.dtype)) {
    throw new FormatError("PACKED_DTYPE_MISMATCH", "packed tensor has the wrong dtype", { ...where, expected: dtypes.join(" or "), actual: array.dtype });
  }
  if (array.shape.length !== shape.length || array.shape.some((d, i) => d !== shape[i])) {
    throw new FormatError("PACKED_SHAPE_MISMATCH", "packed tensor has the wrong shape", { ...where, expected: `[${shape.join(", ")}]`, actual: `[${array.shape.join(", ")}]` });
  }
}

/** The bytes as a typed array of `Type`, copying only when they are not aligned for it. */
export function viewAs<T extends Int32Array | Uint32Array | Uint16Array | Float32Array | Float64Array>(
  bytes: Uint8Array,
  Type: { new (buffer: ArrayBuffer, byteOffset: number, length: number): T; new (length: number): T; BYTES_PER_ELEMENT: number },
): T {
  const length = bytes.length / Type.BYTES_PER_ELEMENT;
  if (bytes.byteOffset % Type.BYTES_PER_ELEMENT === 0) return new Type(bytes.buffer as ArrayBuffer, bytes.byteOffset, length);
  const copy = new Uint8Array(bytes.length);
  copy.set(bytes);
  return new Type(copy.buffer, 0, length);
}

/** Little-endian bytes of a typed array (a view, no copy). */
export function bytesOf(array: Int32Array | Uint32Array | Uint16Array | Float32Array | Float64Array): Uint8Array {
  return new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
}
