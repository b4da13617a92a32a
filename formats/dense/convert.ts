import type { FloatDType } from "../dtype.js";
import { bf16BitsToF32Bits, f16BitsToF32Bits, f32BitsToBf16Bits, f32BitsToF16Bits, f64ToF32BitsRoundToOdd } from "./float-bits.js";

/**
 * Converts little-endian float tensor bytes between F64, F32, F16 and BF16, exactly
 * (see float-bits.ts for the rounding rules). Returns `bytes` itself when the dtypes match.
 * The result never aliases the input otherwise. Works on any chunk that holds whole elements.
 * `into`, when given, receives the result (it must be exactly the output size and start on an
 * 8-byte boundary): streaming callers reuse one buffer instead of faulting in a new one per chunk.
 */
export function convertFloatBytes(bytes: Uint8Array, from: FloatDType, to: FloatDType, into?: Uint8Array): Uint8Array {
  if (from === to) return bytes;
  const nElements = bytes.length / FLOAT_BYTES[from];
  if (!Number.isInteger(nElements)) throw new RangeError(`convertFloatBytes: ${bytes.length} bytes is not a whole number of ${from} elements`);
  const out = into ?? new Uint8Array(nElements * FLOAT_BYTES[to]);
  if (out.length !== nElements * FLOAT_BYTES[to] || out.byteOffset % 8 !== 0) {
    throw new RangeError(`convertFloatBytes: destination must be ${nElements * FLOAT_BYTES[to]} bytes on an 8-byte boundary, got ${out.length} at offset ${out.byteOffset}`);
  }

  if (to === "F64") {
    const asF32 = from === "F32" ? (aligned(bytes, 4) as Float32Array) : new Float32Array(widenToF32Bits(bytes, from).buffer);
    new Float64Array(out.buffer, out.byteOffset, nElements).set(asF32);
    return out;
  }
  if (to === "F32") {
    if (from === "F64") new Float32Array(out.buffer, out.byteOffset, nElements).set(aligned(bytes, 8) as Float64Array);
    else widenToF32Bits(bytes, from, new Uint32Array(out.buffer, out.byteOffset, nElements));
    return out;
  }
  const f32Bits =
    from === "F32" ? (new Uint32Array(alignedBuffer(bytes, 4), alignedOffset(bytes, 4), nElements))
    : from === "F64" ? roundToOddF32(bytes, nElements)
    : widenToF32Bits(bytes, from);
  const dst = new Uint16Array(out.buffer, out.byteOffset, nElements);
  if (to === "F16") f32BitsToF16Bits(f32Bits, dst);
  else f32BitsToBf16Bits(f32Bits, dst);
  return out;
}

const FLOAT_BYTES: Record<FloatDType, number> = { F64: 8, F32: 4, F16: 2, BF16: 2 };

function roundToOddF32(bytes: Uint8Array, nElements: number): Uint32Array {
  const bits = new Uint32Array(nElements);
  f64ToF32BitsRoundToOdd(aligned(bytes, 8) as Float64Array, bits);
  return bits;
}

/** F16/BF16 bytes → f32 bit patterns (exact), into `dst` when given. */
function widenToF32Bits(bytes: Uint8Array, from: FloatDType, dst?: Uint32Array): Uint32Array {
  if (from !== "F16" && from !== "BF16") throw new RangeError(`widenToF32Bits: unexpected source ${from}`);
  const src = aligned(bytes, 2) as Uint16Array;
  const out = dst ?? new Uint32Array(src.length);
  if (from === "F16") f16BitsToF32Bits(src, out);
  else bf16BitsToF32Bits(src, out);
  return out;
}

/**
 * A typed view of `bytes` with the given element width; copies only when the bytes do not
 * start on an element boundary of their buffer (typed arrays require aligned views).
 */
function aligned(bytes: Uint8Array, width: 2 | 4 | 8): Uint16Array | Uint32Array | Float32Array | Float64Array {
  const buffer = alignedBuffer(bytes, width);
  const offset = alignedOffset(bytes, width);
  const count = bytes.length / width;
  switch (width) {
    case 2: return new Uint16Array(buffer, offset, count);
    case 4: return new Float32Array(buffer, offset, count);
    case 8: return new Float64Array(buffer, offset, count);
  }
}

function alignedBuffer(bytes: Uint8Array, width: number): ArrayBufferLike {
  return bytes.byteOffset % width === 0 ? bytes.buffer : bytes.slice().buffer;
}

function alignedOffset(bytes: Uint8Array, width: number): number {
  return bytes.byteOffset % width === 0 ? bytes.byteOffset : 0;
}

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new Error("lmpack requires a little-endian host: tensor bytes are little-endian and are viewed in place");
}
