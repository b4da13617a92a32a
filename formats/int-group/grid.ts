import { bf16BitsToF32Bits, f16BitsToF32Bits, f32BitsToBf16Bits, f32BitsToF16Bit } from "../dense/float-bits.js";
import { maxCode, type IntGroupParams, type ScaleDType } from "./types.js";

/**
 * The quantization grid of one group (one output row × `groupSize` input columns), fitted
 * from the group's extremes the way auto-round's `int.py` does. Shared by RTN, GPTQ and
 * SignRound so the three quantizers differ only in how they choose codes, and their errors
 * compare like for like.
 *
 * CONTRACT (other modules rely on these signatures): `fitGrid` and `quantizeCode` must
 * reproduce auto-round's `quant_tensor_rtn_sym` / `quant_tensor_asym` bit for bit
 * (checked against ../shared/vectors/gptq by test/int-group/rtn.test.ts).
 *
 * Source: intel/auto-round@b9f3d0079d014c73a1ff009800c597b9bc3f2a36 `auto_round/data_type/int.py`
 * (`quant_tensor_sym` = `quant_tensor_rtn_sym` at v = 0, `quant_tensor_asym`) and
 * `auto_round/wrapper.py` (`q_scale_thresh`). Every torch op there runs on float32 tensors,
 * so each one is mirrored by one `Math.fround` here (a double result of +, −, ×, ÷ on two
 * float32 values rounds to the correctly rounded float32 result). Division by the integer
 * `maxq` is a true division as on torch's CPU kernels, which the golden vectors come from
 * (CUDA multiplies by a rounded reciprocal instead, which can differ in the last bit when
 * maxq is not a power of two).
 *
 *   asym: maxq = 2^bits − 1
 *         wmin = min(0, groupMin)·β,  wmax = max(0, groupMax)·α
 *         scale = max(dtype((wmax − wmin) / maxq), thresh),  zero = round(−wmin / scale)
 *         code = clamp(round(w / scale + v) + zero, 0, maxq)
 *   sym:  maxq = 2^(bits−1), full range −maxq … maxq − 1 stored with a +maxq offset
 *         a = max(0, groupMax)·α,  b = −min(0, groupMin)·β
 *         scale = dtype((a < b ? b : −a) / maxq), magnitude clamped to ≥ thresh, sign kept
 *         code = clamp(round(w / scale + v), −maxq, maxq − 1) + maxq
 *
 * round is half-to-even (torch.round).
 */
export interface Grid {
  /** Exactly representable in params.scaleDtype. Signed for symmetric grids. */
  scale: number;
  /** Effective zero point (2^(bits−1) when symmetric). */
  zero: number;
}

/**
 * auto-round's `q_scale_thresh`: the smallest scale magnitude. `WrapperLinear` lowers it to
 * 1e-8 for float32 scales, where 1e-5 would needlessly coarsen tiny groups.
 */
export function scaleThreshold(dtype: ScaleDType): number {
  return roundToScaleDtype(dtype === "F32" ? 1e-8 : 1e-5, dtype);
}

/**
 * Grid for a group whose smallest and largest weights are `groupMin` and `groupMax`.
 * `minScale`/`maxScale` are SignRound's tuned clipping factors (β, α in [0, 1]); 1 = plain min-max.
 */
export function fitGrid(groupMin: number, groupMax: number, params: IntGroupParams, minScale = 1, maxScale = 1): Grid {
  return fitGridDetailed(groupMin, groupMax, params, minScale, maxScale);
}

export interface GridFit extends Grid {
  /**
   * Whether the scale floor (`q_scale_thresh`) replaced the fitted scale, so that autograd's
   * clamp passes no gradient to α and β (SignRound). A scale exactly at the floor still passes.
   */
  floored: boolean;
}

/** `fitGrid` plus what SignRound's backward pass needs to know about the clamp. */
export function fitGridDetailed(groupMin: number, groupMax: number, params: IntGroupParams, minScale = 1, maxScale = 1): GridFit {
  const wminTmp = Math.min(groupMin, 0);
  const wmaxTmp = Math.max(groupMax, 0);
  return params.sym ? fitSymmetric(wminTmp, wmaxTmp, params, minScale, maxScale) : fitAsymmetric(wminTmp, wmaxTmp, params, minScale, maxScale);
}

function fitAsymmetric(wminTmp: number, wmaxTmp: number, params: IntGroupParams, minScale: number, maxScale: number): GridFit {
  const maxq = maxCode(params.bits);
  const wmin = Math.fround(wminTmp * minScale);
  const wmax = Math.fround(wmaxTmp * maxScale);
  const rawScale = roundToScaleDtype(Math.fround(Math.fround(wmax - wmin) / maxq), params.scaleDtype);
  const thresh = scaleThreshold(params.scaleDtype);
  const scale = rawScale < thresh ? thresh : rawScale;
  return { scale, zero: roundHalfEven(Math.fround(-wmin / scale)), floored: rawScale < thresh };
}

function fitSymmetric(wminTmp: number, wmaxTmp: number, params: IntGroupParams, minScale: number, maxScale: number): GridFit {
  const maxq = 1 << (params.bits - 1);
  const wminAbs = -Math.fround(wminTmp * minScale);
  const wmaxAbs = Math.fround(wmaxTmp * maxScale);
  // The dominant extreme lands on code −maxq, so the scale is negative when it is the positive one.
  const maxV = wmaxAbs < wminAbs ? wminAbs : -wmaxAbs;
  const rawScale = roundToScaleDtype(Math.fround(maxV / maxq), params.scaleDtype);
  const scale = clampSignedScale(rawScale, scaleThreshold(params.scaleDtype));
  return { scale, zero: maxq, floored: scale !== rawScale };
}

/** torch.where(s < 0, clamp(s, max=−t), clamp(s, min=t)): the magnitude floor keeps the sign (0 becomes +t). */
export function clampSignedScale(scale: number, thresh: number): number {
  if (scale < 0) return scale > -thresh ? -thresh : scale;
  return scale < thresh ? thresh : scale;
}

/**
 * Unsigned code of weight `w` on `grid` (0 … 2^bits − 1; symmetric codes include the
 * 2^(bits−1) offset), with SignRound's rounding offset `v` added before rounding (0 = RTN).
 */
export function quantizeCode(w: number, grid: Grid, params: IntGroupParams, v = 0): number {
  const rounded = roundHalfEven(Math.fround(Math.fround(w / grid.scale) + v));
  if (params.sym) {
    const maxq = grid.zero;
    return (rounded < -maxq ? -maxq : rounded > maxq - 1 ? maxq - 1 : rounded) + maxq;
  }
  const maxq = maxCode(params.bits);
  const q = rounded + grid.zero;
  return q < 0 ? 0 : q > maxq ? maxq : q;
}

/** auto-round's fake-quant value `scale · (q − zero)`, one float32 product. */
export function dequantizeCode(code: number, grid: Grid): number {
  return Math.fround(grid.scale * (code - grid.zero));
}

/** 1.5·2^52: x + it lies in [2^52, 2^53), where doubles are exactly the integers, for |x| < 2^51. */
const ROUND_MAGIC = 1.5 * 2 ** 52;
const ROUND_LIMIT = 2 ** 51;

/**
 * torch.round: nearest integer, ties to even. Adding and removing 1.5·2^52 makes the FPU round
 * (its default mode is ties-to-even), without a branch on the sign, which would mispredict on
 * random weights; larger doubles are integers already. (−0.3 gives +0, not torch's −0.)
 */
export function roundHalfEven(x: number): number {
  return Math.abs(x) < ROUND_LIMIT ? x + ROUND_MAGIC - ROUND_MAGIC : x;
}

const scratchF32Bits = new Uint32Array(1);
const scratchF32 = new Float32Array(scratchF32Bits.buffer);
const scratch16 = new Uint16Array(1);

/**
 * `float32_tensor.to(dtype)` for one value (round to nearest even), widened back to a number.
 * A double that is not a float32 value is first rounded to float32, as a torch float32 tensor
 * holding it would be.
 */
export function roundToScaleDtype(x: number, dtype: ScaleDType): number {
  scratchF32[0] = x;
  if (dtype === "F32") return scratchF32[0]!;
  if (dtype === "F16") {
    scratch16[0] = f32BitsToF16Bit(scratchF32Bits[0]!);
    f16BitsToF32Bits(scratch16, scratchF32Bits);
  } else {
    f32BitsToBf16Bits(scratchF32Bits, scratch16);
    bf16BitsToF32Bits(scratch16, scratchF32Bits);
  }
  return scratchF32[0]!;
}
