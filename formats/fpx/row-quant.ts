import { f32BitsToF16Bit } from "../dense/float-bits.js";
import { ConversionError } from "../errors.js";
import { f32Bits, type FpxEncoder } from "./codec.js";
import type { FpxFormat } from "./format.js";
import type { CodesFrom } from "./types.js";

/**
 * One row of per-row scaled FPx quantization, shared by the scalar and the SIMD paths (see
 * quantize.ts for the semantics of the two modes).
 */
export interface RowScale {
  /** Stored fp16 scale (bit pattern). */
  scaleBits: number;
  /** torchao's fp32 intermediate. */
  scaleF32: number;
  /** The scale the codes are rounded against (f32 value). */
  codesScale: number;
  /** Every code is a signed zero (an all-zero row: the stored scale is 0). */
  zero: boolean;
}

const F16_INF_BITS = 0x7c00;
const F16_SMALLEST_SUBNORMAL_BITS = 0x0001;
const MIN_AMAX = Math.fround(1e-12);
/** Value of a non-negative finite fp16 bit pattern. */
export const f16Value = (h: number): number => {
  const exponent = (h >> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  return exponent === 0 ? mantissa * 2 ** -24 : (1 + mantissa / 1024) * 2 ** (exponent - 15);
};

/** The row's scales from its largest magnitude `amax` (finite, f32). */
export function rowScale(amax: number, format: FpxFormat, codesFrom: CodesFrom, row: number, tensor: string | undefined): RowScale {
  const scaleF32 = Math.fround(Math.max(amax, MIN_AMAX) / format.maxNormal);
  let scaleBits = f32BitsToF16Bit(f32Bits(scaleF32));
  if (scaleBits === F16_INF_BITS) {
    throw new ConversionError("NOT_REPRESENTABLE", `row ${row}: scale ${scaleF32} (max |w| ${amax} / ${format.maxNormal}) exceeds fp16`, { tensor, expected: "scale ≤ 65504", actual: scaleF32 });
  }
  if (codesFrom === "f32-scale") return { scaleBits, scaleF32, codesScale: scaleF32, zero: false };
  // A nonzero row whose scale underflows fp16 keeps the smallest subnormal scale instead of vanishing.
  if (scaleBits === 0 && amax !== 0) scaleBits = F16_SMALLEST_SUBNORMAL_BITS;
  const codesScale = f16Value(scaleBits);
  return { scaleBits, scaleF32, codesScale, zero: codesScale === 0 };
}

/**
 * Codes of one row (`n` f32 values at `weight[at..]`, bits in `bits`) into `codes[at..]`.
 * `quotient` is scratch of at least n f32 (with `quotientBits` its bit view).
 */
export function encodeRowScalar(weight: Float32Array, bits: Uint32Array, at: number, n: number, codes: Uint8Array, scale: RowScale, format: FpxFormat, encoder: FpxEncoder, quotient: Float32Array, quotientBits: Uint32Array): void {
  const signMask = format.signMask;
  if (scale.zero) {
    for (let c = 0; c < n; c++) codes[at + c] = bits[at + c]! >>> 31 === 1 ? signMask : 0;
    return;
  }
  const s = scale.codesScale;
  for (let c = 0; c < n; c++) quotient[c] = weight[at + c]! / s;
  for (let c = 0; c < n; c++) codes[at + c] = encoder.encodeBits(quotientBits[c]!);
}

/** Refuses a row holding NaN or ±Inf, naming its first such column. */
export function nonFiniteError(row: Float32Array, r: number, tensor: string | undefined): ConversionError {
  const c = row.findIndex((v) => !Number.isFinite(v));
  return new ConversionError("NOT_REPRESENTABLE", `non-finite weight at row ${r}, column ${c}`, { tensor, actual: row[c] });
}
