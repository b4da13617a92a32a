import { f32BitsToF16Bit, halfPrecisionValues } from "../dense/float-bits.js";

/**
 * fp16 arithmetic as CUDA's host `__half` operators do it (and, bit for bit, the device ones):
 * each operation converts to float, computes in f32 (rounded), and rounds to half, nearest even.
 * The f32 step is innocuous for + − × (24 ≥ 2·11 + 2 bits), but it is what the reference does.
 */
const scratch = new Float32Array(1);
const scratchBits = new Uint32Array(scratch.buffer);

/** Value of every fp16 bit pattern. */
export function halfValues(): Float32Array {
  return halfPrecisionValues("F16");
}

/** fp16 bit pattern of f32(x) rounded to half (nearest even). */
export function toHalfBits(x: number): number {
  scratch[0] = x;
  return f32BitsToF16Bit(scratchBits[0]!);
}

/** h(x): f32(x) rounded to half, as a number. */
export function roundHalf(x: number): number {
  return halfValues()[toHalfBits(x)]!;
}
