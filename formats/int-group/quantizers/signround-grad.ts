import type { Hessian } from "../../second-order/hessian.js";
import { fitGridDetailed, roundHalfEven } from "../grid.js";
import { groupCount, maxCode, type IntGroupParams } from "../types.js";
import { sliceMax, sliceMin } from "./rtn.js";
import { layerLoss, lossNormaliser } from "./signround-loss.js";

export { layerLoss, lossNormaliser } from "./signround-loss.js";

/**
 * SignRound's forward and backward pass for one linear layer: auto-round's fake quantization
 * (`quant_tensor_sym` / `quant_tensor_asym` with trainable v, min_scale, max_scale) and the
 * gradient autograd takes through it, with `round_ste` (round forward, identity backward).
 *
 * Per group, with s the scale, z the zero point, x_i = w_i/s + v_i, r_i = round(x_i),
 * and q_i − z the clamped code relative to the zero (the signed code when symmetric):
 *
 *   Ŵ_i = s·(q_i − z)
 *   in range (the clamp passes, bounds included):  ∂Ŵ_i/∂v_i = s,  ∂Ŵ_i/∂s = (q_i − z) − w_i/s
 *   clamped:                                       ∂Ŵ_i/∂v_i = 0,  ∂Ŵ_i/∂s = (q_i − z) − wmin/s (asym) | q_i (sym)
 *   asym only, clamped elements: ∂Ŵ_i/∂wmin = 1 directly, through z = round_ste(−wmin/s)
 *   (in range, z's contributions through q and through "− z" cancel).
 *
 * The scale then carries the gradient to the clipping factors, unless the scale floor replaced it:
 *   asym: s = (wmax − wmin)/maxq, wmax = α·max(0, ·), wmin = β·min(0, ·)
 *   sym:  s = ±max(a, b)/maxq, a = α·max(0, ·), b = −β·min(0, ·); the sign is constant and a
 *         tie splits the gradient in halves (torch.maximum's backward).
 * The fp16 cast of the scale is the identity for autograd. auto-round also rounds the scale's
 * gradient to fp16 (its dtype), which can flush a tiny group gradient to zero; not mirrored:
 * here every gradient is exact in double, and only its sign is used.
 */

/** SignRound's trainable parameters: V per weight (n·K + k), β = min_scale and α = max_scale per group (n·G + g). */
export interface SignRoundParams {
  value: Float32Array;
  minScale: Float32Array;
  maxScale: Float32Array;
}

/**
 * Where SignRound's tuning loop runs (signround.ts drives it): SignRoundLayer below on the CPU,
 * the reference; kernels/signround on a GPU. Each iteration is evaluate(), then keepBest() when
 * the loss is the lowest so far, then step().
 */
export interface SignRoundBackend {
  /** Clamps α and β to [0, 1] in place, fake-quantizes with the current parameters and returns the normalised loss. */
  evaluate(): number;
  /** One SignSGD step of V (and of α, β when `tuneMinmax`) from the last evaluate(). */
  step(lrValue: number, lrMinmax: number, tuneMinmax: boolean): void;
  /** Copies the current parameters to the best ones. */
  keepBest(): void;
  /** The best parameters, as new host arrays. */
  best(): SignRoundParams;
  /** Frees what the backend holds (device memory); the backend is unusable afterwards. */
  release(): void;
}

/** What a backend tunes: the layer, and what the CPU layer derives from it, computed once by the caller. */
export interface SignRoundProblem {
  weight: Float32Array;
  outFeatures: number;
  inFeatures: number;
  quant: IntGroupParams;
  hessian: Hessian | undefined;
  /** auto-round's weight_min / weight_max per group (min(0, ·) and max(0, ·) of its weights), index n·G + g. */
  groupMin: Float32Array;
  groupMax: Float32Array;
  /** lossNormaliser(outFeatures, inFeatures, hessian). */
  lossNorm: number;
}

export type SignRoundBackendFactory = (problem: SignRoundProblem) => SignRoundBackend;

/** Gradients of the (normalised) loss, for tests: same layouts as SignRoundParams. */
export interface SignRoundGradients {
  value: Float64Array;
  minScale: Float64Array;
  maxScale: Float64Array;
}

/** The CPU backend, and the reference the GPU's is tested against. */
export class SignRoundLayer implements SignRoundBackend {
  readonly nGroups: number;
  readonly tuned: SignRoundParams;
  /** The parameters keepBest() last copied; the initial ones until then. */
  private readonly bestTuned: SignRoundParams;
  /** Ŵ − W of the last evaluate() (both float32 values; the difference is exact in double). */
  readonly delta: Float64Array;
  private readonly wminTmp: Float32Array;
  private readonly wmaxTmp: Float32Array;
  private readonly scale: Float64Array;
  private readonly zero: Float64Array;
  private readonly floored: Uint8Array;
  private readonly relCode: Int16Array;
  private readonly inRange: Uint8Array;
  /** ∂loss/∂Ŵ up to the positive factor 2/lossNorm: ΔW·H, or ΔW itself when data-free. */
  private readonly lossGrad: Float64Array;
  private readonly lossNorm: number;
  /** The last backwardGroup's ∂loss/∂s and (asym) direct ∂loss/∂wmin: fields, so the hot loop allocates nothing. */
  private groupGradScale = 0;
  private groupGradOutside = 0;

  constructor(readonly weight: Float32Array, readonly outFeatures: number, readonly inFeatures: number, readonly quant: IntGroupParams, readonly hessian: Hessian | undefined) {
    const nGroups = groupCount(inFeatures, quant.groupSize);
    const nWeights = outFeatures * inFeatures;
    this.nGroups = nGroups;
    this.tuned = { value: new Float32Array(nWeights), minScale: new Float32Array(outFeatures * nGroups).fill(1), maxScale: new Float32Array(outFeatures * nGroups).fill(1) };
    this.bestTuned = copyParams(this.tuned);
    this.delta = new Float64Array(nWeights);
    ({ groupMin: this.wminTmp, groupMax: this.wmaxTmp } = groupExtremes(weight, outFeatures, inFeatures, quant.groupSize));
    this.scale = new Float64Array(outFeatures * nGroups);
    this.zero = new Float64Array(outFeatures * nGroups);
    this.floored = new Uint8Array(outFeatures * nGroups);
    this.relCode = new Int16Array(nWeights);
    this.inRange = new Uint8Array(nWeights);
    this.lossGrad = hessian === undefined ? this.delta : new Float64Array(nWeights);
    this.lossNorm = lossNormaliser(outFeatures, inFeatures, hessian);
  }

  /** Group extremes as auto-round's `weight_min` / `weight_max` (min(0, ·), max(0, ·)), index n·G + g. */
  groupMin(gi: number): number {
    return this.wminTmp[gi]!;
  }

  groupMax(gi: number): number {
    return this.wmaxTmp[gi]!;
  }

  /** Fake-quantizes with the current parameters and returns the loss (α, β first clamped to [0, 1], as WrapperLinear does in place). */
  evaluate(): number {
    clampUnit(this.tuned.minScale);
    clampUnit(this.tuned.maxScale);
    this.forEachGroup((gi, begin, end) => this.forwardGroup(gi, begin, end));
    return layerLoss(this.delta, this.outFeatures, this.inFeatures, this.hessian, this.lossGrad, this.lossNorm);
  }

  /**
   * One SignSGD step, p ← float32(p − lr·sign(∂loss/∂p)), from the last evaluate(); with
   * `gradients`, also writes the gradients of the normalised loss there (lr 0 leaves p as is).
   */
  step(lrValue: number, lrMinmax: number, tuneMinmax: boolean, gradients?: SignRoundGradients): void {
    this.forEachGroup((gi, begin, end) => {
      if (gradients !== undefined) this.writeValueGradients(gi, begin, end, gradients.value);
      this.backwardGroup(gi, begin, end, lrValue);
      if (tuneMinmax || gradients !== undefined) this.stepMinmax(gi, tuneMinmax ? lrMinmax : 0, gradients);
    });
  }

  keepBest(): void {
    copyParams(this.tuned, this.bestTuned);
  }

  best(): SignRoundParams {
    return copyParams(this.bestTuned);
  }

  release(): void {}

  private forEachGroup(body: (gi: number, begin: number, end: number) => void): void {
    const { inFeatures, nGroups } = this;
    const groupSize = this.quant.groupSize;
    for (let n = 0; n < this.outFeatures; n++) {
      for (let g = 0; g < nGroups; g++) body(n * nGroups + g, n * inFeatures + g * groupSize, n * inFeatures + Math.min((g + 1) * groupSize, inFeatures));
    }
  }

  private forwardGroup(gi: number, begin: number, end: number): void {
    const fit = fitGridDetailed(this.wminTmp[gi]!, this.wmaxTmp[gi]!, this.quant, this.tuned.minScale[gi]!, this.tuned.maxScale[gi]!);
    const s = fit.scale;
    this.scale[gi] = s;
    this.zero[gi] = fit.zero;
    this.floored[gi] = fit.floored ? 1 : 0;
    // Codes relative to the zero: asym clamp(r + z, 0, maxq) − z = clamp(r, −z, maxq − z).
    const lo = -fit.zero;
    const hi = this.quant.sym ? fit.zero - 1 : maxCode(this.quant.bits) - fit.zero;
    const { weight, delta, relCode, inRange } = this;
    const value = this.tuned.value;
    for (let i = begin; i < end; i++) {
      const w = weight[i]!;
      const r = roundHalfEven(Math.fround(Math.fround(w / s) + value[i]!));
      const q = r < lo ? lo : r > hi ? hi : r;
      relCode[i] = q;
      inRange[i] = +(r === q);
      delta[i] = Math.fround(s * q) - w;
    }
  }

  /** Accumulates ∂loss/∂s (and, asym, the direct ∂loss/∂wmin of clamped elements) and steps V. */
  private backwardGroup(gi: number, begin: number, end: number, lr: number): void {
    const s = this.scale[gi]!;
    const invS = 1 / s;
    // Clamped elements: ∂Ŵ/∂s = (q − z) − wmin/s for asym, q for sym.
    const clampedOffset = this.quant.sym ? 0 : Math.fround(this.wminTmp[gi]! * this.tuned.minScale[gi]!) * invS;
    const { weight, relCode, inRange, lossGrad } = this;
    const value = this.tuned.value;
    let gScale = 0;
    let gOutside = 0;
    for (let i = begin; i < end; i++) {
      const g = lossGrad[i]!;
      if (inRange[i] === 1) {
        gScale += g * (relCode[i]! - weight[i]! * invS);
        const gv = g * s;
        // sign(gv) from two comparisons: branchless, where a ternary would mispredict half the time.
        value[i] = Math.fround(value[i]! - lr * (+(gv > 0) - +(gv < 0)));
      } else {
        gScale += g * (relCode[i]! - clampedOffset);
        gOutside += g;
      }
    }
    const gradScale = 2 / this.lossNorm;
    this.groupGradScale = gScale * gradScale;
    this.groupGradOutside = gOutside * gradScale;
  }

  private writeValueGradients(gi: number, begin: number, end: number, out: Float64Array): void {
    const factor = (2 / this.lossNorm) * this.scale[gi]!;
    for (let i = begin; i < end; i++) out[i] = this.inRange[i] === 1 ? this.lossGrad[i]! * factor : 0;
  }

  private stepMinmax(gi: number, lr: number, gradients: SignRoundGradients | undefined): void {
    const { minScale, maxScale } = this.tuned;
    const gScale = this.groupGradScale;
    const gOutside = this.groupGradOutside;
    const wminTmp = this.wminTmp[gi]!;
    const wmaxTmp = this.wmaxTmp[gi]!;
    const dScale = this.floored[gi] === 1 ? 0 : gScale / (this.quant.sym ? this.zero[gi]! : maxCode(this.quant.bits));
    let gMax: number;
    let gMin: number;
    if (!this.quant.sym) {
      gMax = dScale * wmaxTmp;
      gMin = (gOutside - dScale) * wminTmp;
    } else {
      const a = Math.fround(wmaxTmp * maxScale[gi]!);
      const b = -Math.fround(wminTmp * minScale[gi]!);
      // s = +b/maxq when b dominates, −a/maxq otherwise (ties included, gradient halved).
      const share = a === b ? 0.5 : 1;
      gMax = a >= b ? -dScale * wmaxTmp * share : 0;
      gMin = a <= b ? (a < b ? -1 : 1) * dScale * wminTmp * share : 0;
    }
    if (gradients !== undefined) {
      gradients.minScale[gi] = gMin;
      gradients.maxScale[gi] = gMax;
    }
    if (gMax !== 0) maxScale[gi] = Math.fround(gMax > 0 ? maxScale[gi]! - lr : maxScale[gi]! + lr);
    if (gMin !== 0) minScale[gi] = Math.fround(gMin > 0 ? minScale[gi]! - lr : minScale[gi]! + lr);
  }
}

/** auto-round's weight_min / weight_max of every group (index n·G + g): float32 values, min(0, ·) and max(0, ·). */
export function groupExtremes(weight: Float32Array, outFeatures: number, inFeatures: number, groupSize: number): { groupMin: Float32Array; groupMax: Float32Array } {
  const nGroups = groupCount(inFeatures, groupSize);
  const groupMin = new Float32Array(outFeatures * nGroups);
  const groupMax = new Float32Array(outFeatures * nGroups);
  for (let n = 0; n < outFeatures; n++) {
    for (let g = 0; g < nGroups; g++) {
      const begin = n * inFeatures + g * groupSize;
      const end = n * inFeatures + Math.min((g + 1) * groupSize, inFeatures);
      groupMin[n * nGroups + g] = Math.min(sliceMin(weight, begin, end), 0);
      groupMax[n * nGroups + g] = Math.max(sliceMax(weight, begin, end), 0);
    }
  }
  return { groupMin, groupMax };
}

function copyParams(from: SignRoundParams, to?: SignRoundParams): SignRoundParams {
  if (to === undefined) return { value: from.value.slice(), minScale: from.minScale.slice(), maxScale: from.maxScale.slice() };
  to.value.set(from.value);
  to.minScale.set(from.minScale);
  to.maxScale.set(from.maxScale);
  return to;
}

function clampUnit(values: Float32Array): void {
  for (let i = 0; i < values.length; i++) {
    const x = values[i]!;
    if (x < 0) values[i] = 0;
    else if (x > 1) values[i] = 1;
  }
}
