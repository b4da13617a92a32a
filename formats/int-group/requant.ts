import { dequantize } from "./reference.js";
import { quantizeRtn } from "./quantizers/rtn.js";
import { roundHalfEven, roundToScaleDtype } from "./grid.js";
import { groupCount, maxCode, type IntGroupParams, type IntGroupTensor } from "./types.js";

/** What a target layout can hold, beyond its code width and group size. */
export interface TargetLimits {
  params: IntGroupParams;
  /** Smallest storable zero point (GPTQ v1: 1, since it stores zero − 1). */
  minZero: number;
}

export interface RequantResult {
  tensor: IntGroupTensor;
  /** RMS of (new − source) dequantized weights over the RMS of the source's. */
  relativeRmsError: number;
  maxAbsError: number;
}

/**
 * The lossy path of a repack, taken only on request (`--allow-requant`): dequantize the source
 * exactly, quantize again with round-to-nearest on the target's grid, and measure what changed.
 * Groups whose zero point the target cannot store (a v1 zero of 0: every weight ≥ 0) are refitted
 * with zero = minZero and the scale stretched so the group's maximum still lands on the top code.
 */
export function requantize(source: IntGroupTensor, limits: TargetLimits): RequantResult {
  const weight = dequantize(source);
  const N = source.outFeatures;
  const K = source.inFeatures;
  const tensor = quantizeRtn(weight, N, K, limits.params);
  if (limits.minZero > 0) raiseZeros(tensor, weight, limits.minZero);
  const requantized = dequantize(tensor);
  let errorSquares = 0;
  let sourceSquares = 0;
  let maxAbsError = 0;
  for (let i = 0; i < weight.length; i++) {
    const d = requantized[i]! - weight[i]!;
    errorSquares += d * d;
    sourceSquares += weight[i]! * weight[i]!;
    maxAbsError = Math.max(maxAbsError, Math.abs(d));
  }
  return { tensor, relativeRmsError: sourceSquares === 0 ? 0 : Math.sqrt(errorSquares / sourceSquares), maxAbsError };
}

function raiseZeros(tensor: IntGroupTensor, weight: Float32Array, minZero: number): void {
  const { params, outFeatures: N, inFeatures: K } = tensor;
  const maxq = maxCode(params.bits);
  const { groupSize } = params;
  for (let g = 0; g < groupCount(K, groupSize); g++) {
    for (let n = 0; n < N; n++) {
      const at = g * N + n;
      if (tensor.zeros[at]! >= minZero) continue;
      const begin = n * K + g * groupSize;
      const end = n * K + Math.min((g + 1) * groupSize, K);
      let max = 0;
      for (let i = begin; i < end; i++) max = Math.max(max, weight[i]!);
      const scale = max > 0 ? roundToScaleDtype(max / (maxq - minZero), params.scaleDtype) : tensor.scales[at]!;
      tensor.scales[at] = scale;
      tensor.zeros[at] = minZero;
      for (let i = begin; i < end; i++) tensor.codes[i] = Math.min(maxq, Math.max(0, roundHalfEven(weight[i]! / scale) + minZero));
    }
  }
  tensor.params.sym = false;
}
