import { UsageError } from "../../errors.js";
import { clampSignedScale, roundHalfEven, roundToScaleDtype } from "../grid.js";
import { groupCount, type IntGroupParams, type IntGroupTensor } from "../types.js";
import { checkQuantizerArgs, emptyIntGroupTensor } from "./rtn.js";

/** q_scale_thresh as a float32 tensor bound: opt-RTN's scales are float32 whatever the layer's scale_dtype. */
const OPT_RTN_SCALE_THRESH = Math.fround(1e-5);

/**
 * auto-round's "optimized RTN", its default for `iters=0` with symmetric int
 * (`quant_tensor_opt_rtn_sym` + `search_scales` in auto_round/data_type/int.py at b9f3d00,
 * no imatrix): per group, try scales 1 / (−(nmax − step·i) / x_absmax) around the min-max
 * one and keep the one with the lowest squared error of the fake-quant weights.
 *
 * The search runs on float32 scales (this function mirrors each torch op with one
 * `Math.fround`); the codes are those of the float32 scale. When `params.scaleDtype` is F16 or
 * BF16 the stored scale is rounded afterwards, exactly as auto-round's exporters do, while the
 * codes stay: the result is the checkpoint auto-round would write, not a re-fit.
 *
 * One approximation: torch sums each group's float32 squared errors with a vectorised cascade
 * whose order depends on the CPU; here the sum is taken in double and rounded to float32,
 * which can only decide differently when two candidates' errors agree to about 1 ulp.
 */
export function quantizeOptRtn(weight: Float32Array, outFeatures: number, inFeatures: number, params: IntGroupParams): IntGroupTensor {
  checkQuantizerArgs(weight, outFeatures, inFeatures, params);
  if (!params.sym) throw new UsageError("BAD_ARGUMENT", "auto-round's optimized RTN exists for symmetric grids only", { actual: "asym" });
  const tensor = emptyIntGroupTensor(outFeatures, inFeatures, params);
  const nmax = 1 << (params.bits - 1);
  const nGroups = groupCount(inFeatures, params.groupSize);
  for (let n = 0; n < outFeatures; n++) {
    for (let g = 0; g < nGroups; g++) {
      const begin = n * inFeatures + g * params.groupSize;
      const end = n * inFeatures + Math.min((g + 1) * params.groupSize, inFeatures);
      const scale = clampSignedScale(searchScale(weight, begin, end, nmax, params.bits), OPT_RTN_SCALE_THRESH);
      for (let i = begin; i < end; i++) {
        const q = roundHalfEven(Math.fround(weight[i]! / scale));
        tensor.codes[i] = (q < -nmax ? -nmax : q > nmax - 1 ? nmax - 1 : q) + nmax;
      }
      tensor.scales[g * outFeatures + n] = roundToScaleDtype(scale, params.scaleDtype);
      tensor.zeros[g * outFeatures + n] = nmax;
    }
  }
  return tensor;
}

/** auto-round's `get_reciprocal` for float32 tensors: 1/x, and 0 where |x| < 1e-30. */
export function reciprocalF32(x: number): number {
  return Math.abs(x) >= 1e-30 ? Math.fround(1 / x) : 0;
}

/** Candidate offsets of `search_scales`: 2-bit uses ±90 steps of 0.01, others ±(0.75·nmax / 0.08·…) as in int.py. */
function searchSteps(nmax: number, bits: number): { searchMin: number; step: number } {
  if (bits === 2) return { searchMin: 18 * 5, step: 0.01 };
  const grid = 200;
  const searchRange = nmax * 0.75; // AR_SEARCH_SCALE_RATIO unset
  const step = (searchRange / grid) * 2;
  return { searchMin: Math.trunc(searchRange / step), step };
}

/** `search_scales` for one group (qw = 1): the float32 scale with the lowest squared error. */
function searchScale(weight: Float32Array, begin: number, end: number, nmax: number, bits: number): number {
  const recipMax = reciprocalF32(absMaxSigned(weight, begin, end));
  let bestScale = reciprocalF32(Math.fround(-nmax * recipMax));
  let bestLoss = groupError(weight, begin, end, Math.fround(-nmax * recipMax), bestScale, nmax);
  const { searchMin, step } = searchSteps(nmax, bits);
  for (let i = -searchMin; i <= searchMin; i++) {
    if (i === 0) continue;
    const iscale = Math.fround(Math.fround(-(nmax - step * i)) * recipMax);
    const scale = reciprocalF32(iscale);
    const loss = groupError(weight, begin, end, iscale, scale, nmax);
    if (loss < bestLoss) {
      bestLoss = loss;
      bestScale = scale;
    }
  }
  return bestScale;
}

/** The group's element of largest magnitude, signed (torch argmax: the first one on ties). */
function absMaxSigned(weight: Float32Array, begin: number, end: number): number {
  let best = 0;
  let bestAbs = -1;
  for (let i = begin; i < end; i++) {
    const a = Math.abs(weight[i]!);
    if (a > bestAbs) {
      bestAbs = a;
      best = weight[i]!;
    }
  }
  return best;
}

function groupError(weight: Float32Array, begin: number, end: number, iscale: number, scale: number, nmax: number): number {
  let sum = 0;
  for (let i = begin; i < end; i++) {
    const x = weight[i]!;
    let q = roundHalfEven(Math.fround(iscale * x));
    q = q < -nmax ? -nmax : q > nmax - 1 ? nmax - 1 : q;
    const d = Math.fround(Math.fround(scale * q) - x);
    sum += Math.fround(d * d);
  }
  return Math.fround(sum);
}
