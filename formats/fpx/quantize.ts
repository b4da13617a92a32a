import { f32BitsToF16Bit, f16BitsToF32Bits } from "../dense/float-bits.js";
import { ConversionError } from "../errors.js";
import { f32Bits, fpxEncoder } from "./codec.js";
import type { FpxFormat } from "./format.js";
import { packTc } from "./tc-layout.js";
import type { CodesFrom, FpxTensor } from "./types.js";

/**
 * Per-output-row scaled FPx quantization, as torchao's `to_scaled_tc_floatx`
 * (pytorch/ao@aa252872 floatx_tensor_core_layout.py):
 *
 *   scale_f32[r] = f32(max(amax_c |W[r][c]|, f32(1e-12)) / maxNormal)     (true f32 division)
 *   scale[r]     = fp16_rne(scale_f32[r])                                  (what is stored)
 *   code[r][c]   = encode(f32(W[r][c] / s))
 *
 * with s = scale_f32 in the reference-compatible mode ("f32-scale"), and s = f32(scale) in
 * lmpack's default ("stored-scale"): there each code is the grid point nearest to W/scale
 * exactly, because the one case where the rounded quotient hides the nearer side, a quotient
 * that lands exactly on a midpoint, is settled with the exact residual W − mid·scale (mid·scale
 * is exact in f64). The reference rounds against a scale that dequantization does not use, so
 * per element "stored-scale" is never worse; where scale_f32 underflows fp16 to 0 for a row that
 * is not all zero, "stored-scale" raises the scale to the smallest fp16 subnormal instead of
 * losing the row (0 stays a grid point, so again never worse).
 *
 * An all-zero row has scale 0 and codes ±0 (the sign of each zero is kept) in both modes.
 * NaN or ±Inf weights, and rows whose scale exceeds fp16, are refused naming the row.
 */
export interface FpxQuantizeOptions {
  format: FpxFormat;
  codesFrom: CodesFrom;
  /** Tensor name, for errors. */
  tensor?: string;
}

export interface FpxCodes {
  /** Row-major codes [M, N]. */
  codes: Uint8Array;
  /** Stored fp16 scales (bit patterns), one per row. */
  scales: Uint16Array;
  /** The fp32 scales before rounding (torchao's intermediate). */
  scalesF32: Float32Array;
}

const F16_INF_BITS = 0x7c00;
const F16_SMALLEST_SUBNORMAL_BITS = 0x0001;
const MIN_AMAX = Math.fround(1e-12);

/** Codes and scales of W [M, N] (row-major f32). */
export function quantizeFpxCodes(weight: Float32Array, M: number, N: number, options: FpxQuantizeOptions): FpxCodes {
  const { format, codesFrom } = options;
  const { encodeBits, encodeMagnitudeBits, isTieBits } = fpxEncoder(format);
  const values = format.values;
  const signMask = format.signMask;
  const bits = new Uint32Array(weight.buffer, weight.byteOffset, weight.length);
  const codes = new Uint8Array(M * N);
  const scales = new Uint16Array(M);
  const scalesF32 = new Float32Array(M);
  const quotient = new Float32Array(N);
  const quotientBits = new Uint32Array(quotient.buffer);
  const f16Scratch = new Uint16Array(1);
  const f32Scratch = new Uint32Array(1);
  const storedScale = (h: number): number => {
    f16Scratch[0] = h;
    f16BitsToF32Bits(f16Scratch, f32Scratch);
    return new Float32Array(f32Scratch.buffer)[0]!;
  };
  for (let r = 0; r < M; r++) {
    const base = r * N;
    let amaxBits = 0;
    for (let c = 0; c < N; c++) {
      const a = bits[base + c]! & 0x7fffffff;
      if (a > amaxBits) amaxBits = a;
    }
    if (amaxBits >= 0x7f800000) {
      const c = weight.subarray(base, base + N).findIndex((v) => !Number.isFinite(v));
      throw new ConversionError("NOT_REPRESENTABLE", `non-finite weight at row ${r}, column ${c}`, { tensor: options.tensor, actual: weight[base + c] });
    }
    const amax = new Float32Array(new Uint32Array([amaxBits]).buffer)[0]!;
    const scaleF32 = Math.fround(Math.max(amax, MIN_AMAX) / format.maxNormal);
    let scaleBits = f32BitsToF16Bit(f32Bits(scaleF32));
    if (scaleBits === F16_INF_BITS) {
      throw new ConversionError("NOT_REPRESENTABLE", `row ${r}: scale ${scaleF32} (max |w| ${amax} / ${format.maxNormal}) exceeds fp16`, { tensor: options.tensor, expected: "scale ≤ 65504", actual: scaleF32 });
    }
    if (codesFrom === "stored-scale" && scaleBits === 0 && amaxBits !== 0) scaleBits = F16_SMALLEST_SUBNORMAL_BITS;
    scales[r] = scaleBits;
    scalesF32[r] = scaleF32;
    if (codesFrom === "f32-scale") {
      for (let c = 0; c < N; c++) quotient[c] = weight[base + c]! / scaleF32;
      for (let c = 0; c < N; c++) codes[base + c] = encodeBits(quotientBits[c]!);
      continue;
    }
    const s = storedScale(scaleBits);
    if (s === 0) {
      for (let c = 0; c < N; c++) codes[base + c] = bits[base + c]! >>> 31 === 1 ? signMask : 0;
      continue;
    }
    for (let c = 0; c < N; c++) quotient[c] = weight[base + c]! / s;
    for (let c = 0; c < N; c++) {
      const q = quotientBits[c]!;
      const magnitude = q & 0x7fffffff;
      let code = encodeMagnitudeBits(magnitude);
      if (isTieBits(magnitude)) code = settleTie(code, Math.abs(weight[base + c]!), Math.abs(quotient[c]!), s, values);
      codes[base + c] = q >>> 31 === 1 ? code | signMask : code;
    }
  }
  return { codes, scales, scalesF32 };
}

/**
 * `mid` (a rounded quotient) lies exactly between two grid magnitudes; the encoder rounded to
 * the even one. Decide from the exact residual |w| − mid·s which neighbour is truly nearer.
 */
function settleTie(code: number, absWeight: number, mid: number, s: number, values: Float32Array): number {
  const residual = absWeight - mid * s;
  if (residual > 0 && values[code]! < mid) return code + 1;
  if (residual < 0 && values[code]! > mid) return code - 1;
  return code;
}

/** Quantizes and packs W [M, N] into the tensor-core layout. M and N must be multiples of 64. */
export function quantizeFpx(weight: Float32Array, M: number, N: number, options: FpxQuantizeOptions): FpxTensor {
  const { codes, scales } = quantizeFpxCodes(weight, M, N, options);
  return { format: options.format, outFeatures: M, inFeatures: N, packed: packTc(codes, M, N, options.format.nbits), scales };
}
