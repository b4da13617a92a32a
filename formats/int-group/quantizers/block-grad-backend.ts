import { UsageError } from "../../errors.js";
import { backwardBlock } from "../../../model/block-grad/backward.js";
import { BLOCK_LINEARS, forwardBlock, type BlockContext, type BlockLinearKey, type BlockLinearWeights, type BlockTape } from "../../../model/block-grad/forward.js";
import type { IntGroupParams } from "../types.js";
import type { BlockCalibration } from "./signround-block.js";
import type { SignRoundParams } from "./signround-grad.js";

/**
 * Where block-wise SignRound (signround-block.ts) runs one decoder block forward and backward:
 * the CPU reference below (model/block-grad), or the GPU (kernels/block-grad/backend.ts).
 *
 * The flow both fit: per iteration setWeights(Ŵ) once, zeroGradients(), then per window
 * forward(input) and at once backward(∂loss/∂output) — the GPU keeps one window's tape on the
 * device, so a backward must follow its own forward before the next — and gradients() after the
 * last window: ∂loss/∂Ŵ summed over the windows.
 */
export interface BlockGradBackend {
  /**
   * The seven linear weights ([out][in] each) the next forwards and backwards use. The CPU reads
   * them in place, so the caller must not modify them while it still runs forwards or backwards
   * with them; a later setWeights is needed after any change.
   */
  setWeights(weights: BlockLinearWeights): void;
  /** The block's output [tokens][hidden] on `input`; a new array the caller keeps. Keeps this window's tape for backward(). */
  forward(input: Float64Array, tokens: number): Float64Array;
  /** Adds ∂loss/∂W of every linear, from ∂loss/∂output of the last forward's window, into the gradients. */
  backward(dOutput: Float64Array): void;
  zeroGradients(): void;
  /** The accumulated ∂loss/∂W per linear, in the weights' layout; valid until the next backward or zeroGradients. */
  gradients(): Readonly<BlockLinearWeights>;
  /** Frees what the backend holds (device memory); later calls are refused. */
  release(): void;
  /**
   * A tuner that keeps SignRound's parameters, the block's weights, gradients and `data` on the
   * backend's device, so an iteration moves only its loss to the host (the GPU's), or undefined
   * when the backend has none or `data` does not fit: the tuner then runs the parameters on the
   * host and calls forward/backward here.
   */
  residentTuner?(params: IntGroupParams, data: BlockCalibration): BlockTuner | undefined;
}

/**
 * One block's SignRound state and the loop's steps, as tuneBlockSignRound (signround-block.ts)
 * drives them: per iteration lossAndGradients, keepBest when the loss is the lowest so far, step.
 */
export interface BlockTuner {
  /** Fake-quantizes every linear with the current parameters; returns the block's MSE over `windows` and keeps its ∂loss/∂Ŵ for step(). */
  lossAndGradients(windows: readonly number[]): number;
  /** One signed step of every linear from the last lossAndGradients. */
  step(lrValue: number, lrMinmax: number, tuneMinmax: boolean): void;
  /** Copies every linear's current parameters to its best ones. */
  keepBest(): void;
  /** The best parameters per linear, as host arrays. */
  best(): Record<BlockLinearKey, SignRoundParams>;
  /** Frees what the tuner holds (not the backend it was made from). */
  release(): void;
}

/** Makes the backend of one block: `maxTokens` is the longest window it will see (ctx.rope covers it). */
export type BlockGradBackendFactory = (ctx: BlockContext, maxTokens: number) => BlockGradBackend;

/** model/block-grad's forwardBlock and backwardBlock, unchanged: the tuner's reference arithmetic. */
export class CpuBlockGradBackend implements BlockGradBackend {
  private readonly grads: BlockLinearWeights;
  private weights: BlockLinearWeights | undefined;
  private tape: BlockTape | undefined;
  private released = false;

  constructor(private readonly ctx: BlockContext) {
    this.grads = Object.fromEntries(BLOCK_LINEARS.map((key) => [key, new Float64Array(ctx.layer[key].weight.length)])) as BlockLinearWeights;
  }

  setWeights(weights: BlockLinearWeights): void {
    this.checkUsable();
    for (const key of BLOCK_LINEARS) {
      const expected = this.ctx.layer[key].weight.length;
      if (weights[key].length !== expected) throw new UsageError("BAD_ARGUMENT", `block weights: ${key} must hold ${this.ctx.layer[key].outFeatures} × ${this.ctx.layer[key].inFeatures} values`, { tensor: this.ctx.layer[key].name, expected, actual: weights[key].length });
    }
    this.weights = weights;
    // A tape made with other weights would give their gradient, not these weights' (as the GPU refuses it).
    this.tape = undefined;
  }

  forward(input: Float64Array, tokens: number): Float64Array {
    this.checkUsable();
    if (this.weights === undefined) throw new UsageError("BAD_ARGUMENT", "block grad: forward before setWeights()");
    this.tape = forwardBlock(this.ctx, this.weights, input, tokens);
    // forwardBlock makes a fresh output array and backwardBlock never reads it: the caller may keep it.
    return this.tape.output;
  }

  backward(dOutput: Float64Array): void {
    this.checkUsable();
    if (this.weights === undefined || this.tape === undefined) throw new UsageError("BAD_ARGUMENT", "block grad: backward without a forward on the current weights");
    if (dOutput.length !== this.tape.output.length) throw new UsageError("BAD_ARGUMENT", "block grad: ∂loss/∂output must hold tokens × hidden values of the last forward", { expected: this.tape.output.length, actual: dOutput.length });
    backwardBlock(this.ctx, this.weights, this.tape, dOutput, this.grads);
  }

  zeroGradients(): void {
    this.checkUsable();
    for (const key of BLOCK_LINEARS) this.grads[key].fill(0);
  }

  gradients(): Readonly<BlockLinearWeights> {
    this.checkUsable();
    return this.grads;
  }

  release(): void {
    this.released = true;
    this.weights = undefined;
    this.tape = undefined;
  }

  private checkUsable(): void {
    if (this.released) throw new UsageError("BAD_ARGUMENT", "block grad: used after release()");
  }
}

/** The default factory: the CPU reference (maxTokens is not needed there). */
export const cpuBlockGradBackend: BlockGradBackendFactory = (ctx) => new CpuBlockGradBackend(ctx);
