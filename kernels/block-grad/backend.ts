import type { BlockGradBackend, BlockGradBackendFactory, BlockTuner } from "../../formats/int-group/quantizers/block-grad-backend.js";
import type { BlockCalibration } from "../../formats/int-group/quantizers/signround-block.js";
import type { IntGroupParams } from "../../formats/int-group/types.js";
import type { BlockContext, BlockLinearWeights } from "../../model/block-grad/forward.js";
import type { GpuEngine } from "../engine.js";
import { GpuBlockGrad } from "./gpu-block-grad.js";
import { GpuBlockTuner } from "./gpu-block-tuner.js";

/** The share of device memory the resident tuner's windows and state may take (the block's own buffers and cuBLAS need the rest). */
const RESIDENT_SHARE = 0.5;

/**
 * Block-wise SignRound's BlockGradBackend on the GPU: GpuBlockGrad (one block's weights,
 * gradients and one window's tape on the device) behind the interface the tuner calls
 * (formats/int-group/quantizers/signround-block.ts). One instance per block — made with the
 * block's context and its longest window, released after the block — so device memory holds one
 * block at a time.
 *
 * Results agree with the CPU backend to float64 rounding, not bit for bit
 * (test/kernels/block-grad.test.ts), so codes may differ from a CPU run where a sign is that close.
 * The tuner normally runs resident (residentTuner: gpu-block-tuner.ts); forward/backward here
 * serve the block walk's targets and stream advance, and the tuner when the windows do not fit.
 */
export class GpuBlockGradBackend implements BlockGradBackend {
  private readonly gpu: GpuBlockGrad;
  /** Host copy of the gradients, allocated at the first gradients() and reused every iteration after. */
  private hostGrads: BlockLinearWeights | undefined;

  constructor(private readonly engine: GpuEngine, private readonly ctx: BlockContext, maxTokens: number) {
    this.gpu = new GpuBlockGrad(engine, ctx, maxTokens);
  }

  /**
   * GpuBlockTuner on this backend's buffers when the windows (twice: inputs and targets) and the
   * tuner's state take at most half the device's memory; otherwise undefined, and the tuner keeps
   * its parameters on the host, calling forward/backward here window by window.
   */
  residentTuner(params: IntGroupParams, data: BlockCalibration): BlockTuner | undefined {
    const bytes = GpuBlockTuner.deviceBytes(this.ctx, data, this.gpu.plan.maxTokens);
    if (bytes > RESIDENT_SHARE * this.engine.context.info.totalBytes) return undefined;
    return new GpuBlockTuner(this.engine, this.gpu, this.ctx, params, data);
  }

  setWeights(weights: BlockLinearWeights): void {
    this.gpu.setWeights(weights);
  }

  forward(input: Float64Array, tokens: number): Float64Array {
    return this.gpu.forward(input, tokens);
  }

  backward(dOutput: Float64Array): void {
    this.gpu.backward(dOutput);
  }

  zeroGradients(): void {
    this.gpu.zeroGradients();
  }

  /** Downloads the device gradients (one copy per call: the tuner reads them once per iteration). */
  gradients(): Readonly<BlockLinearWeights> {
    this.hostGrads = this.gpu.gradients(this.hostGrads);
    return this.hostGrads;
  }

  release(): void {
    this.gpu.release();
    this.hostGrads = undefined;
  }
}

/** The factory the block-wise walk (converters/int-group/signround-blockwise.ts) takes, on `engine`. */
export function gpuBlockGradBackend(engine: GpuEngine): BlockGradBackendFactory {
  return (ctx, maxTokens) => new GpuBlockGradBackend(engine, ctx, maxTokens);
}
