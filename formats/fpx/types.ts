import { f16BitsToF32Bits } from "../dense/float-bits.js";
import type { FpxFormat } from "./format.js";
import { tcPackedBytes } from "./tc-layout.js";

/**
 * One FPx-quantized linear weight [out, in]: per-output-row fp16 scales and the codes in
 * FP6-LLM's tensor-core layout (the representation is that layout: the GPU kernels read it as
 * is, and every reader and writer lmpack knows uses it, so it is never re-laid out).
 *
 *   W[r][c] = decode(code[r][c]) · f32(scale[r])    (the product is exact in f32)
 */
export interface FpxTensor {
  format: FpxFormat;
  outFeatures: number;
  inFeatures: number;
  /** tc-layout bytes, out·in·nbits/8 (not row-major). */
  packed: Uint8Array;
  /** fp16 bit patterns, one per output row. */
  scales: Uint16Array;
}

/**
 * Which scale the codes are rounded against:
 * - "stored-scale": the fp16 scale that dequantization uses, so each code is the grid point
 *   nearest to the weight (lmpack's default: never a larger error, see quantize.ts);
 * - "f32-scale": torchao's `to_scaled_tc_floatx`, codes from the fp32 scale before it is rounded
 *   to fp16 (the reference-compatible mode, byte-identical to torchao).
 */
export type CodesFrom = "stored-scale" | "f32-scale";
export const CODES_FROM: readonly CodesFrom[] = ["stored-scale", "f32-scale"];

/** Stored bits per weight: codes plus one fp16 scale per row. */
export function fpxBitsPerWeight(t: Pick<FpxTensor, "format" | "inFeatures">): number {
  return t.format.nbits + 16 / t.inFeatures;
}

/** Bytes the tensor occupies (packed codes and scales). */
export function fpxStoredBytes(format: FpxFormat, outFeatures: number, inFeatures: number): number {
  return tcPackedBytes(outFeatures, inFeatures, format.nbits) + 2 * outFeatures;
}

/** The scales as f32 values (exact). */
export function scaleValues(scales: Uint16Array): Float32Array {
  const out = new Float32Array(scales.length);
  f16BitsToF32Bits(scales, new Uint32Array(out.buffer));
  return out;
}
