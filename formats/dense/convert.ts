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
    const asF32 = from === "F32" ? alignedView(bytes, Float32Array) : f32View(widenToF32Bits(bytes, from, scratchF32Bits(nElements)));
    new Float64Array(out.buffer, out.byteOffset, nElements).set(asF32);
    return out;
  }
  if (to === "F32") {
    if (from === "F64") new Float32Array(out.buffer, out.byteOffset, nElements).set(alignedView(bytes, Float64Array));
    else widenToF32Bits(bytes, from, new Uint32Array(out.buffer, out.byteOffset, nElements));
    return out;
  }
  let f32Bits: Uint32Array;
  if (from === "F32") {
    f32Bits = alignedView(bytes, Uint32Array);
  } else if (from === "F64") {
    f32Bits = scratchF32Bits(nElements);
    f64ToF32BitsRoundToOdd(alignedView(bytes, Float64Array), f32Bits);
  } else {
    f32Bits = widenToF32Bits(bytes, from, scratchF32Bits(nElements));
  }
  const dst = new Uint16Array(out.buffer, out.byteOffset, nElements);
  if (to === "F16") f32BitsToF16Bits(f32Bits, dst);
  else f32BitsToBf16Bits(f32Bits, dst);
  return out;
}

const FLOAT_BYTES: Record<FloatDType, number> = { F64: 8, F32: 4, F16: 2, BF16: 2 };

let scratch = new Uint32Array(0);

/**
 * Intermediate f32 bit patterns for two-step conversions (f16 ↔ bf16, f64 → 16-bit). One buffer
 * is reused: conversions are synchronous and never return it, and a fresh multi-megabyte buffer
 * per chunk costs more in page faults than the conversion itself (bench/RESULTS.md).
 */
function scratchF32Bits(nElements: number): Uint32Array {
  if (scratch.length < nElements) scratch = new Uint32Array(nElements);
  return scratch.subarray(0, nElements);
}

function f32View(bits: Uint32Array): Float32Array {
  return new Float32Array(bits.buffer, bits.byteOffset, bits.length);
}

/** F16/BF16 bytes → f32 bit patterns (exact), into `dst`. */
function widenToF32Bits(bytes: Uint8Array, from: FloatDType, dst: Uint32Array): Uint32Array {
  if (from !== "F16" && from !== "BF16") throw new RangeError(`widenToF32Bits: unexpected source ${from}`);
  const src = alignedView(bytes, Uint16Array);
  if (from === "F16") f16BitsToF32Bits(src, dst);
  else bf16BitsToF32Bits(src, dst);
  return dst;
}

type View = Uint16Array | Uint32Array | Float32Array | Float64Array;

/**
 * A typed view of `bytes`; copies only when the bytes do not start on an element boundary of
 * their buffer (typed arrays require aligned views).
 */
function alignedView<T extends View>(bytes: Uint8Array, Kind: { new (buffer: ArrayBufferLike, byteOffset: number, length: number): T; BYTES_PER_ELEMENT: number }): T {
  const width = Kind.BYTES_PER_ELEMENT;
  const source = bytes.byteOffset % width === 0 ? bytes : bytes.slice();
  return new Kind(source.buffer, source.byteOffset, source.length / width);
}

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new Error("lmpack requires a little-endian host: tensor bytes are little-endian and are viewed in place");
}
