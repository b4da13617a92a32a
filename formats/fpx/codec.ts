import type { FpxFormat } from "./format.js";

/**
 * float → FPx code, bit for bit as torchao's `_f32_to_floatx_unpacked` (pytorch/ao@aa252872
 * torchao/prototype/custom_fp_utils.py), on f32 bit patterns:
 *
 * - |x| ≥ maxNormal (±inf included) → the largest magnitude, sign kept;
 * - |x| < minNormal → round to nearest even on the subnormal grid (torchao adds a magic float so
 *   that the f32 addition rounds; the integer rounding here is the same correctly rounded result);
 * - otherwise round to nearest even by integer add on the bits, rebiasing the exponent;
 * - the sign is kept on zero and underflow (−tiny → the −0 code);
 * - NaN takes the normal path as in the reference (an artifact; quantizers refuse NaN first).
 *
 * The encoder is a closure over the format's constants so the hot loops see plain numbers.
 */
export interface FpxEncoder {
  /** Code of one f32 bit pattern. */
  encodeBits(bits: number): number;
  /** Code of |value| (bits without sign) — the magnitude part only. */
  encodeMagnitudeBits(magnitudeBits: number): number;
}

const F32_MANTISSA_BITS = 23;
const F32_EXP_BIAS = 127;

export function fpxEncoder(format: FpxFormat): FpxEncoder {
  const { ebits, mbits, bias } = format;
  const dropBits = F32_MANTISSA_BITS - mbits;
  const maxCode = (1 << (ebits + mbits)) - 1;
  const signMask = format.signMask;
  const maxNormalBits = f32Bits(format.maxNormal);
  const minNormalBits = f32Bits(format.minNormal);
  // Normal path: rebias (bias − 127) in the exponent field, plus the round-half-down adder;
  // adding the lowest kept bit turns it into ties-to-even.
  const rebiasAndRound = ((bias - F32_EXP_BIAS) << F32_MANTISSA_BITS) + ((1 << (dropBits - 1)) - 1);
  // Subnormal grid step 2^(1 − bias − mbits): value = sig · 2^(E − 150), code = value / step.
  const subnormalShiftBase = 150 + 1 - bias - mbits;

  const encodeMagnitudeBits = (a: number): number => {
    if (a > 0x7f800000) return ((a + rebiasAndRound + ((a >>> dropBits) & 1)) >> dropBits) & 0xff;
    if (a >= maxNormalBits) return maxCode;
    if (a >= minNormalBits) return (a + rebiasAndRound + ((a >>> dropBits) & 1)) >> dropBits;
    const exponent = a >>> F32_MANTISSA_BITS;
    const sig = exponent === 0 ? a : (a & 0x7fffff) | 0x800000;
    const shift = subnormalShiftBase - (exponent === 0 ? 1 : exponent);
    if (shift > 24) return 0; // below half the smallest step (sig < 2^24 ≤ half)
    let q = sig >>> shift;
    const rem = sig & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (q & 1) === 1)) q++;
    return q;
  };

  return {
    encodeMagnitudeBits,
    encodeBits: (bits) => encodeMagnitudeBits(bits & 0x7fffffff) | (bits < 0 || bits > 0x7fffffff ? signMask : 0),
  };
}

/** Codes of every value of `input` (the reference encoder, element by element). */
export function encodeF32Array(format: FpxFormat, input: Float32Array): Uint8Array {
  const bits = new Uint32Array(input.buffer, input.byteOffset, input.length);
  const { encodeBits } = fpxEncoder(format);
  const codes = new Uint8Array(input.length);
  for (let i = 0; i < bits.length; i++) codes[i] = encodeBits(bits[i]!);
  return codes;
}

const scratch = new Float32Array(1);
const scratchBits = new Uint32Array(scratch.buffer);

/** Bit pattern of Math.fround(value). */
export function f32Bits(value: number): number {
  scratch[0] = value;
  return scratchBits[0]!;
}
