import { convertFloatBytes } from "../dense/convert.js";
import { fpxEncoder } from "./codec.js";
import type { FpxFormat } from "./format.js";
import { encodeRowScalar, nonFiniteError, rowScale } from "./row-quant.js";
import { quantizeFpxSimd, type DenseMatrix } from "./quantize-simd.js";
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
 * lmpack's default ("stored-scale"). There each code is the grid point nearest to W/scale
 * exactly: rounding the quotient to f32 is monotone and midpoints are f32 values, so it never
 * crosses one; and it can land on one only when W = mid·scale exactly (mid·scale, ≤ mbits + 2
 * significant bits times an 11-bit fp16 scale, is itself an f32, so any other f32 W lies at
 * least one of its ulps away, more than half an ulp of mid after the division), which is a
 * true tie. The reference rounds against a scale that dequantization does not use, so per
 * element "stored-scale" is never worse; where scale_f32 underflows fp16 to 0 for a row that
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

/** Codes and scales of W [M, N] (row-major f32), element by element: the scalar reference path. */
export function quantizeFpxCodes(weight: Float32Array, M: number, N: number, options: FpxQuantizeOptions): FpxCodes {
  const { format, codesFrom } = options;
  const encoder = fpxEncoder(format);
  const bits = new Uint32Array(weight.buffer, weight.byteOffset, weight.length);
  const codes = new Uint8Array(M * N);
  const scales = new Uint16Array(M);
  const scalesF32 = new Float32Array(M);
  const quotient = new Float32Array(N);
  const quotientBits = new Uint32Array(quotient.buffer);
  const amaxView = new Uint32Array(1);
  for (let r = 0; r < M; r++) {
    const base = r * N;
    let amaxBits = 0;
    for (let c = 0; c < N; c++) {
      const a = bits[base + c]! & 0x7fffffff;
      if (a > amaxBits) amaxBits = a;
    }
    if (amaxBits >= 0x7f800000) throw nonFiniteError(weight.subarray(base, base + N), r, options.tensor);
    amaxView[0] = amaxBits;
    const scale = rowScale(new Float32Array(amaxView.buffer)[0]!, format, codesFrom, r, options.tensor);
    scales[r] = scale.scaleBits;
    scalesF32[r] = scale.scaleF32;
    encodeRowScalar(weight, bits, base, N, codes, scale, format, encoder, quotient, quotientBits);
  }
  return { codes, scales, scalesF32 };
}

/**
 * Quantizes and packs W [M, N] (f32 values, or raw F32/F16/BF16 bytes) into the tensor-core
 * layout; M and N must be multiples of 64. Runs the WebAssembly SIMD kernels where available
 * (same bytes, see quantize-simd.ts), the scalar path otherwise.
 */
export function quantizeFpx(weight: Float32Array | DenseMatrix, M: number, N: number, options: FpxQuantizeOptions): FpxTensor {
  const matrix: DenseMatrix = weight instanceof Float32Array ? { bytes: new Uint8Array(weight.buffer, weight.byteOffset, weight.byteLength), dtype: "F32" } : weight;
  const simd = quantizeFpxSimd(matrix, M, N, options);
  if (simd !== undefined) return simd;
  const f32 = convertFloatBytes(matrix.bytes, matrix.dtype, "F32");
  const values = f32.byteOffset % 4 === 0 ? new Float32Array(f32.buffer, f32.byteOffset, M * N) : new Float32Array(f32.slice().buffer);
  const { codes, scales } = quantizeFpxCodes(values, M, N, options);
  return { format: options.format, outFeatures: M, inFeatures: N, packed: packTc(codes, M, N, options.format.nbits), scales };
}
