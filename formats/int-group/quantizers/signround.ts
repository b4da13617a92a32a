import { UsageError } from "../../errors.js";
import type { Hessian } from "../../second-order/hessian.js";
import { fitGrid, quantizeCode } from "../grid.js";
import { groupCount, type IntGroupParams, type IntGroupTensor } from "../types.js";
import { checkQuantizerArgs, emptyIntGroupTensor } from "./rtn.js";
import { groupExtremes, lossNormaliser, SignRoundLayer, type SignRoundBackend, type SignRoundBackendFactory, type SignRoundParams } from "./signround-grad.js";

/**
 * SignRound (Cheng et al., "Optimize Weight Rounding via Signed Gradient Descent for the
 * Quantization of LLMs", arXiv 2309.05516), as intel/auto-round b9f3d00 implements it
 * (`wrapper.py` WrapperLinear, `sign_round/quantizer.py`, `sign_sgd.py`), in its layer-wise form.
 *
 * The paper and auto-round tune a whole decoder block against the block's output MSE on
 * calibration data. Here each linear is tuned alone against its own output error: with the
 * layer Hessian H = XᵀX of its calibration inputs X, ‖X ΔWᵀ‖² = tr(ΔW H ΔWᵀ), ΔW = Ŵ − W.
 * Without H the loss is the plain weight MSE (data-free). The loss is divided by N·tr(H)
 * (N·K without H), so it reads as a weight MSE whatever the layer's size or H's scale.
 *
 * What is auto-round's, exactly:
 * - trainable V (per weight, init 0, never clamped), β = min_scale and α = max_scale (per group,
 *   init 1, clamped in place to [0, 1] before every forward), Ŵ from grid.ts's auto-round grid;
 * - round_ste: rounding is the identity for the gradient (signround-grad.ts has the derivation);
 * - SignSGD, p ← p − lr_t·sign(∂loss/∂p), in float32; lr = 1/iters (2/iters when iters ≥ 1000 and
 *   bits ≤ 3), minmax lr = lr; LinearLR(1 → 0, total_iters = iters) stepped after every
 *   iteration, so iteration t uses lr·(1 − t/iters), computed as torch does (float32 tensor lr,
 *   recursive factor);
 * - the loss of each iteration is that of the parameters before its step; the lowest one's
 *   parameters are kept and applied at the end (iteration 0 is RTN, so the result never loses
 *   to RTN in this loss).
 * V is bounded only by the schedule: |V| ≤ Σ_{t < iters−1} lr_t ≈ lr·(iters+1)/2 − lr/iters,
 * 0.502475 for the default 200 iterations (the paper's "[−0.5, 0.5]" is this, rounded).
 *
 * The loop runs on a SignRoundBackend: SignRoundLayer (CPU) by default, or `options.backend`
 * (kernels/signround on a GPU); the grid fit of the result is always the CPU's.
 */

export interface SignRoundOptions {
  /** Layer input Hessian H = XᵀX (K×K); without it the loss is the weight MSE. */
  hessian?: Hessian;
  /** Tuning iterations (default 200); 0 returns RTN. */
  iters?: number;
  /** Rounding (V) learning rate; default 1/iters, 2/iters when iters ≥ 1000 and bits ≤ 3. */
  lr?: number;
  /** Clipping (α, β) learning rate; default `lr`. */
  minmaxLr?: number;
  /** Tune α and β as well as V (default true, as auto-round). */
  enableMinmaxTuning?: boolean;
  /** Called once per iteration with the loss of the parameters that iteration started from. */
  onStep?: (iter: number, loss: number) => void;
  /** Where the iterations run (kernels/signround/signround-gpu.ts); the CPU's SignRoundLayer by default and for an empty layer. */
  backend?: SignRoundBackendFactory;
}

export interface SignRoundResult {
  /** Codes, scales and zeros of the best parameters, as fitGrid / quantizeCode give them. */
  tensor: IntGroupTensor;
  /** The lowest loss seen (normalised, see the header), and the iteration that had it. */
  bestLoss: number;
  bestIter: number;
  /** Iteration 0's loss: that of RTN. */
  initialLoss: number;
  /** The best V, β, α. */
  tuned: SignRoundParams;
}

export const SIGNROUND_DEFAULT_ITERS = 200;

export function quantizeSignRound(weight: Float32Array, outFeatures: number, inFeatures: number, params: IntGroupParams, options: SignRoundOptions = {}): SignRoundResult {
  checkQuantizerArgs(weight, outFeatures, inFeatures, params);
  const iters = options.iters ?? SIGNROUND_DEFAULT_ITERS;
  if (!Number.isSafeInteger(iters) || iters < 0) throw new UsageError("BAD_ARGUMENT", "iters must be a non-negative integer", { actual: iters });
  checkHessian(options.hessian, inFeatures);
  const lr = checkRate(options.lr ?? defaultSignRoundLr(iters, params.bits), "lr");
  const minmaxLr = checkRate(options.minmaxLr ?? lr, "minmaxLr");
  const tuneMinmax = options.enableMinmaxTuning ?? true;
  const lrValue = linearDecayLr(lr, iters);
  const lrMinmax = linearDecayLr(minmaxLr, iters);

  const extremes = groupExtremes(weight, outFeatures, inFeatures, params.groupSize);
  const backend: SignRoundBackend =
    options.backend !== undefined && weight.length > 0
      ? options.backend({ weight, outFeatures, inFeatures, quant: params, hessian: options.hessian, ...extremes, lossNorm: lossNormaliser(outFeatures, inFeatures, options.hessian) })
      : new SignRoundLayer(weight, outFeatures, inFeatures, params, options.hessian);
  try {
    const initialLoss = backend.evaluate();
    // Iteration 0's parameters (RTN's; evaluate's clamp leaves the initial α = β = 1 as they are).
    backend.keepBest();
    let bestLoss = initialLoss;
    let bestIter = 0;
    for (let t = 0; t < iters; t++) {
      const loss = t === 0 ? initialLoss : backend.evaluate();
      options.onStep?.(t, loss);
      if (loss < bestLoss) {
        bestLoss = loss;
        bestIter = t;
        backend.keepBest();
      }
      backend.step(lrValue[t]!, lrMinmax[t]!, tuneMinmax);
    }
    const best = backend.best();
    return { tensor: tensorFromParams(weight, outFeatures, inFeatures, params, extremes, best), bestLoss, bestIter, initialLoss, tuned: best };
  } finally {
    backend.release();
  }
}

/** auto-round's default rounding lr (`SignRoundConfig._lr_for_bits`). */
export function defaultSignRoundLr(iters: number, bits: number): number {
  if (iters <= 0) return 0;
  return iters >= 1000 && bits <= 3 ? 2 / iters : 1 / iters;
}

/**
 * The lr of each iteration: torch's LinearLR(start 1, end 0, total_iters) on a float32 tensor lr,
 * stepped after each iteration. torch updates it recursively, lr_e = lr_{e−1}·(1 − 1/(T − e + 1)),
 * each product rounded to float32, so the values are float32 and follow torch's, not lr·(1 − t/T).
 */
export function linearDecayLr(lr: number, iters: number): Float64Array {
  const out = new Float64Array(iters);
  let current = Math.fround(lr);
  for (let e = 0; e < iters; e++) {
    if (e > 0) current = Math.fround(current * Math.fround(1.0 + (0.0 - 1.0) / (iters * 1.0 + (e - 1) * (0.0 - 1.0))));
    out[e] = current;
  }
  return out;
}

/** The tensor of `tuned`, through the same fitGrid / quantizeCode as RTN (`extremes`: groupExtremes of `weight`). */
export function tensorFromParams(weight: Float32Array, n: number, k: number, quant: IntGroupParams, extremes: { groupMin: Float32Array; groupMax: Float32Array }, tuned: SignRoundParams): IntGroupTensor {
  const nGroups = groupCount(k, quant.groupSize);
  const tensor = emptyIntGroupTensor(n, k, quant);
  for (let row = 0; row < n; row++) {
    for (let g = 0; g < nGroups; g++) {
      const gi = row * nGroups + g;
      const grid = fitGrid(extremes.groupMin[gi]!, extremes.groupMax[gi]!, quant, tuned.minScale[gi]!, tuned.maxScale[gi]!);
      tensor.scales[g * n + row] = grid.scale;
      tensor.zeros[g * n + row] = grid.zero;
      const end = row * k + Math.min((g + 1) * quant.groupSize, k);
      for (let i = row * k + g * quant.groupSize; i < end; i++) tensor.codes[i] = quantizeCode(weight[i]!, grid, quant, tuned.value[i]!);
    }
  }
  return tensor;
}

function checkHessian(hessian: Hessian | undefined, inFeatures: number): void {
  if (hessian === undefined) return;
  if (hessian.size !== inFeatures || hessian.data.length !== inFeatures * inFeatures) {
    throw new UsageError("BAD_ARGUMENT", "Hessian size does not match the layer's input features", { expected: inFeatures, actual: hessian.size });
  }
}

function checkRate(rate: number, name: string): number {
  if (!Number.isFinite(rate) || rate < 0) throw new UsageError("BAD_ARGUMENT", `${name} must be a finite non-negative number`, { actual: rate });
  return rate;
}
