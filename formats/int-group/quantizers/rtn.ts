import { UsageError } from "../../errors.js";
import { fitGrid, quantizeCode } from "../grid.js";
import { groupCount, INT_BITS, type IntGroupParams, type IntGroupTensor } from "../types.js";

/**
 * Round-to-nearest on auto-round's grid (`iters=0` with `disable_opt_rtn=True`, i.e.
 * `quant_tensor_rtn_sym` / `quant_tensor_asym` at v = 0, α = β = 1), bit for bit.
 *
 * Groups are `groupSize` consecutive input columns of one row. auto-round zero-pads a short
 * last group (`reshape_pad_tensor_by_group_size`) and treats K < groupSize as one group per
 * row; both only add zeros, which cannot move the grid because its extremes are already
 * taken as min(0, ·) and max(0, ·). So the last group here is simply the remaining columns.
 */
export function quantizeRtn(weight: Float32Array, outFeatures: number, inFeatures: number, params: IntGroupParams): IntGroupTensor {
  checkQuantizerArgs(weight, outFeatures, inFeatures, params);
  const tensor = emptyIntGroupTensor(outFeatures, inFeatures, params);
  const groupSize = params.groupSize;
  const nGroups = groupCount(inFeatures, groupSize);
  for (let n = 0; n < outFeatures; n++) {
    const row = n * inFeatures;
    for (let g = 0; g < nGroups; g++) {
      const begin = row + g * groupSize;
      const end = row + Math.min((g + 1) * groupSize, inFeatures);
      const grid = fitGrid(sliceMin(weight, begin, end), sliceMax(weight, begin, end), params);
      tensor.scales[g * outFeatures + n] = grid.scale;
      tensor.zeros[g * outFeatures + n] = grid.zero;
      for (let i = begin; i < end; i++) tensor.codes[i] = quantizeCode(weight[i]!, grid, params);
    }
  }
  return tensor;
}

/** Refuses shapes and parameters no quantizer can honour (UsageError BAD_ARGUMENT). */
export function checkQuantizerArgs(weight: Float32Array, outFeatures: number, inFeatures: number, params: IntGroupParams): void {
  if (!Number.isSafeInteger(outFeatures) || !Number.isSafeInteger(inFeatures) || outFeatures < 0 || inFeatures < 0) {
    throw new UsageError("BAD_ARGUMENT", "weight dimensions must be non-negative integers", { actual: [outFeatures, inFeatures] });
  }
  if (weight.length !== outFeatures * inFeatures) {
    throw new UsageError("BAD_ARGUMENT", "weight length does not match outFeatures × inFeatures", { expected: outFeatures * inFeatures, actual: weight.length });
  }
  if (!INT_BITS.includes(params.bits)) {
    throw new UsageError("BAD_ARGUMENT", "unsupported code width", { expected: INT_BITS, actual: params.bits });
  }
  if (!Number.isSafeInteger(params.groupSize) || params.groupSize < 1) {
    throw new UsageError("BAD_ARGUMENT", "groupSize must be a positive integer (per-channel: inFeatures)", { actual: params.groupSize });
  }
}

export function emptyIntGroupTensor(outFeatures: number, inFeatures: number, params: IntGroupParams): IntGroupTensor {
  const nScales = groupCount(inFeatures, params.groupSize) * outFeatures;
  return {
    params: { ...params },
    outFeatures,
    inFeatures,
    codes: new Uint8Array(outFeatures * inFeatures),
    scales: new Float32Array(nScales),
    zeros: new Uint16Array(nScales),
    gIdx: undefined,
  };
}

export function sliceMin(values: Float32Array, begin: number, end: number): number {
  let m = Infinity;
  for (let i = begin; i < end; i++) if (values[i]! < m) m = values[i]!;
  return m;
}

export function sliceMax(values: Float32Array, begin: number, end: number): number {
  let m = -Infinity;
  for (let i = begin; i < end; i++) if (values[i]! > m) m = values[i]!;
  return m;
}
