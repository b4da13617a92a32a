import { UsageError } from "../../errors.js";
import { mulberry32 } from "../../random.js";
import { BLOCK_LINEARS, type BlockContext, type BlockLinearKey, type BlockLinearWeights } from "../../../model/block-grad/forward.js";
import { CpuBlockGradBackend, type BlockGradBackend, type BlockTuner } from "./block-grad-backend.js";
import type { IntGroupParams } from "../types.js";
import { defaultSignRoundLr, linearDecayLr, SIGNROUND_DEFAULT_ITERS, tensorFromParams, type SignRoundResult } from "./signround.js";
import { groupExtremes, SignRoundLayer, type SignRoundParams } from "./signround-grad.js";

/**
 * SignRound's block-wise objective, as the paper and intel/auto-round b9f3d00
 * (`sign_round/quantizer.py::quantize_block`) tune it: V, β, α of all seven linears of one
 * decoder block together, minimising MSE(block_Ŵ(q_input), fp_output) over calibration windows.
 *
 * Inputs and targets (auto-round's default, enable_quanted_input=True): the quantized block
 * reads `inputs`, the outputs of the already-quantized blocks before it; the targets are the
 * full-precision block's outputs on the full-precision inputs (`fp_outputs`), so the tuning
 * also corrects the error the earlier blocks left (converters/int-group/signround-blockwise.ts
 * keeps both streams).
 *
 * Per linear, everything below ∂loss/∂Ŵ is the layer-wise code's (signround-grad.ts), reused,
 * not copied: a SignRoundLayer without a Hessian takes its `delta` buffer as ∂loss/∂Ŵ
 * (`lossGrad === delta`), so after evaluate() (which fake-quantizes and leaves Ŵ − W there) the
 * block's gradient is written into `delta` and step() runs the STE chain to V and, through
 * scale/zero, to the clipping factors, with its sign steps and float32 updates. Only signs are
 * used, so the positive factor that step() applies (2/(N·K)) changes nothing.
 *
 * Loop (auto-round's): each iteration takes `batchSize` windows from a seeded cyclic sampler
 * that reshuffles when exhausted (IndexSampler), evaluates the mean squared error over all their
 * output elements (float64 here; auto-round's fp32 ×1000 scaling does not change signs),
 * keeps the parameters if that loss is the lowest so far, then steps with lr·decay(t).
 *
 * The block's forward and backward run through a BlockGradBackend (block-grad-backend.ts): the
 * CPU reference by default, the GPU when the caller hands one in. The loop drives a BlockTuner:
 * the backend's device-resident one when it offers it (the GPU's keeps V, α, β, Ŵ, the gradients
 * and the windows on the device: kernels/block-grad/gpu-block-tuner.ts), else HostBlockTuner
 * below, whose BlockSignRound keeps the parameters here and per iteration hands Ŵ to the backend
 * once (setWeights), zeroes the gradients, runs forward then backward window by window (the loss
 * and ∂loss/∂output formed here, between the two), and reads the summed gradients once.
 */

export interface BlockSignRoundOptions {
  iters?: number;
  /** Default 1/iters (2/iters when iters ≥ 1000 and bits ≤ 3), as the layer-wise quantizer. */
  lr?: number;
  minmaxLr?: number;
  enableMinmaxTuning?: boolean;
  /** Windows per iteration (auto-round's batch_size, default 8; capped at the window count). */
  batchSize?: number;
  /** Seed of the window sampler. */
  seed?: number;
  onStep?: (iter: number, loss: number) => void;
  /**
   * Runs the block's forward and backward; the caller keeps ownership (the tuner does not release
   * it). Default: a CpuBlockGradBackend over `ctx`.
   */
  backend?: BlockGradBackend;
}

/** Calibration data of one block: per window its input (q_input) and target (fp output), [tokens][hidden]. */
export interface BlockCalibration {
  inputs: readonly Float64Array[];
  targets: readonly Float64Array[];
  tokens: readonly number[];
}

export interface BlockSignRoundResult {
  /** Per linear, the layer-wise quantizer's result type; losses are the block's (shared). */
  linears: Record<BlockLinearKey, SignRoundResult>;
  bestLoss: number;
  bestIter: number;
  initialLoss: number;
}

/** The seven SignRoundLayers of one block and its fake-quantized forward/backward (through `backend`). */
export class BlockSignRound {
  readonly layers: Record<BlockLinearKey, SignRoundLayer>;
  private readonly fakeQuant: BlockLinearWeights;
  /** ∂loss/∂Ŵ of the last lossAndGradients (undefined before the first). */
  private grads: Readonly<BlockLinearWeights> | undefined;

  constructor(readonly ctx: BlockContext, readonly params: IntGroupParams, private readonly backend: BlockGradBackend = new CpuBlockGradBackend(ctx)) {
    const make = <T>(f: (key: BlockLinearKey) => T): Record<BlockLinearKey, T> => Object.fromEntries(BLOCK_LINEARS.map((key) => [key, f(key)])) as Record<BlockLinearKey, T>;
    this.layers = make((key) => {
      const l = ctx.layer[key];
      return new SignRoundLayer(Float32Array.from(l.weight), l.outFeatures, l.inFeatures, params, undefined);
    });
    this.fakeQuant = make((key) => new Float64Array(ctx.layer[key].weight.length));
  }

  /**
   * Clamps α, β and fake-quantizes every linear with the current parameters (SignRoundLayer's
   * evaluate); returns Ŵ (float32 values: fround(w + (Ŵ − w)) undoes the one rounding the
   * difference may have taken).
   */
  quantizedWeights(): BlockLinearWeights {
    for (const key of BLOCK_LINEARS) {
      const layer = this.layers[key];
      layer.evaluate();
      const out = this.fakeQuant[key];
      for (let i = 0; i < out.length; i++) out[i] = Math.fround(layer.weight[i]! + layer.delta[i]!);
    }
    return this.fakeQuant;
  }

  /** MSE of the block with the last quantizedWeights() over `windows`; accumulates ∂MSE/∂Ŵ into the layers' gradient buffers. */
  lossAndGradients(data: BlockCalibration, windows: readonly number[]): number {
    const hidden = this.ctx.config.hiddenSize;
    const count = windows.reduce((sum, w) => sum + data.tokens[w]! * hidden, 0);
    const { backend } = this;
    // Once per iteration: the GPU uploads Ŵ here, not per window.
    backend.setWeights(this.fakeQuant);
    backend.zeroGradients();
    let sum = 0;
    for (const w of windows) {
      const output = backend.forward(data.inputs[w]!, data.tokens[w]!);
      const target = data.targets[w]!;
      const dOut = new Float64Array(output.length);
      for (let i = 0; i < dOut.length; i++) {
        const diff = output[i]! - target[i]!;
        sum += diff * diff;
        dOut[i] = (2 * diff) / count;
      }
      // Right after its forward: the backend keeps only the last window's tape.
      backend.backward(dOut);
    }
    this.grads = backend.gradients();
    return sum / count;
  }

  /** ∂loss/∂Ŵ of the last lossAndGradients, per linear (for tests). */
  weightGradients(): Readonly<BlockLinearWeights> {
    return this.gradientsOrThrow();
  }

  /** One signed step of every linear from the last lossAndGradients (see the header for why `delta` carries it). */
  step(lrValue: number, lrMinmax: number, tuneMinmax: boolean): void {
    const grads = this.gradientsOrThrow();
    for (const key of BLOCK_LINEARS) {
      this.layers[key].delta.set(grads[key]);
      this.layers[key].step(lrValue, lrMinmax, tuneMinmax);
    }
  }

  private gradientsOrThrow(): Readonly<BlockLinearWeights> {
    if (this.grads === undefined) throw new UsageError("BAD_ARGUMENT", "block SignRound: no gradients before lossAndGradients()");
    return this.grads;
  }
}

/** Tunes one block; `data` windows must hold tokens·hidden values each, tokens ≤ the rope table's positions. */
export function tuneBlockSignRound(ctx: BlockContext, params: IntGroupParams, data: BlockCalibration, options: BlockSignRoundOptions = {}): BlockSignRoundResult {
  checkCalibration(ctx, data);
  const iters = options.iters ?? SIGNROUND_DEFAULT_ITERS;
  if (!Number.isSafeInteger(iters) || iters < 0) throw new UsageError("BAD_ARGUMENT", "iters must be a non-negative integer", { actual: iters });
  const lr = checkRate(options.lr ?? defaultSignRoundLr(iters, params.bits), "lr");
  const minmaxLr = checkRate(options.minmaxLr ?? lr, "minmaxLr");
  const batchSize = options.batchSize ?? 8;
  if (!Number.isSafeInteger(batchSize) || batchSize < 1) throw new UsageError("BAD_ARGUMENT", "batchSize must be a positive integer", { actual: batchSize });
  const tuneMinmax = options.enableMinmaxTuning ?? true;
  const lrValue = linearDecayLr(lr, iters);
  const lrMinmax = linearDecayLr(minmaxLr, iters);
  const sampler = windowSampler(data.inputs.length, Math.min(batchSize, data.inputs.length), options.seed ?? 0);

  // The backend's device-resident tuner where it has one and the windows fit; else the host's.
  const tuner: BlockTuner = options.backend?.residentTuner?.(params, data) ?? new HostBlockTuner(new BlockSignRound(ctx, params, options.backend), data);
  let initialLoss = NaN;
  let bestLoss = Infinity;
  let bestIter = 0;
  let tuned: Record<BlockLinearKey, SignRoundParams>;
  try {
    // Each layer's best parameters start as the initial ones (RTN's): iteration 0's.
    if (iters === 0) initialLoss = bestLoss = tuner.lossAndGradients(sampler());
    for (let t = 0; t < iters; t++) {
      const loss = tuner.lossAndGradients(sampler());
      if (t === 0) initialLoss = loss;
      options.onStep?.(t, loss);
      if (loss < bestLoss) {
        bestLoss = loss;
        bestIter = t;
        tuner.keepBest();
      }
      tuner.step(lrValue[t]!, lrMinmax[t]!, tuneMinmax);
    }
    tuned = tuner.best();
  } finally {
    tuner.release();
  }
  const linears = Object.fromEntries(
    BLOCK_LINEARS.map((key) => {
      const { weight, outFeatures, inFeatures } = ctx.layer[key];
      const weight32 = Float32Array.from(weight);
      const tensor = tensorFromParams(weight32, outFeatures, inFeatures, params, groupExtremes(weight32, outFeatures, inFeatures, params.groupSize), tuned[key]);
      return [key, { tensor, bestLoss, bestIter, initialLoss, tuned: tuned[key] }];
    }),
  ) as Record<BlockLinearKey, SignRoundResult>;
  return { linears, bestLoss, bestIter, initialLoss };
}

/** BlockSignRound (parameters on the host, forward/backward through its backend) as the loop's BlockTuner. */
class HostBlockTuner implements BlockTuner {
  constructor(private readonly tuner: BlockSignRound, private readonly data: BlockCalibration) {}

  lossAndGradients(windows: readonly number[]): number {
    this.tuner.quantizedWeights();
    return this.tuner.lossAndGradients(this.data, windows);
  }

  step(lrValue: number, lrMinmax: number, tuneMinmax: boolean): void {
    this.tuner.step(lrValue, lrMinmax, tuneMinmax);
  }

  keepBest(): void {
    for (const key of BLOCK_LINEARS) this.tuner.layers[key].keepBest();
  }

  best(): Record<BlockLinearKey, SignRoundParams> {
    return Object.fromEntries(BLOCK_LINEARS.map((key) => [key, this.tuner.layers[key].best()])) as Record<BlockLinearKey, SignRoundParams>;
  }

  release(): void {}
}

/**
 * auto-round's IndexSampler: a seeded permutation read `batch` at a time, reshuffled when fewer
 * than `batch` remain (the incomplete tail is dropped).
 */
export function windowSampler(count: number, batch: number, seed: number): () => number[] {
  const random = mulberry32(seed);
  const order = Array.from({ length: count }, (_, i) => i);
  let next = count;
  return () => {
    if (next + batch > count) {
      for (let i = count - 1; i > 0; i--) {
        const j = Math.floor(random() * (i + 1));
        [order[i], order[j]] = [order[j]!, order[i]!];
      }
      next = 0;
    }
    next += batch;
    return order.slice(next - batch, next);
  };
}

function checkCalibration(ctx: BlockContext, data: BlockCalibration): void {
  const n = data.inputs.length;
  if (n === 0 || data.targets.length !== n || data.tokens.length !== n) {
    throw new UsageError("BAD_ARGUMENT", "block calibration needs at least one window, and as many targets and token counts as inputs", { expected: n, actual: [data.targets.length, data.tokens.length] });
  }
  const hidden = ctx.config.hiddenSize;
  for (let w = 0; w < n; w++) {
    const tokens = data.tokens[w]!;
    if (!Number.isSafeInteger(tokens) || tokens < 1 || tokens > ctx.rope.positions) throw new UsageError("BAD_ARGUMENT", `window ${w}: token count outside 1 … ${ctx.rope.positions}`, { actual: tokens });
    if (data.inputs[w]!.length !== tokens * hidden || data.targets[w]!.length !== tokens * hidden) {
      throw new UsageError("BAD_ARGUMENT", `window ${w}: input and target must hold tokens × hidden values`, { expected: tokens * hidden, actual: [data.inputs[w]!.length, data.targets[w]!.length] });
    }
  }
}

function checkRate(rate: number, name: string): number {
  if (!Number.isFinite(rate) || rate < 0) throw new UsageError("BAD_ARGUMENT", `${name} must be a finite non-negative number`, { actual: rate });
  return rate;
}
