import { KernelError } from "../../formats/errors.js";
import type { BlockTuner } from "../../formats/int-group/quantizers/block-grad-backend.js";
import type { BlockCalibration } from "../../formats/int-group/quantizers/signround-block.js";
import { groupExtremes, lossNormaliser, type SignRoundParams } from "../../formats/int-group/quantizers/signround-grad.js";
import type { IntGroupParams } from "../../formats/int-group/types.js";
import { BLOCK_LINEARS, type BlockContext, type BlockLinearKey } from "../../model/block-grad/forward.js";
import type { GpuEngine } from "../engine.js";
import type { DeviceArray } from "../forward/launch.js";
import { GpuSignRoundLayer } from "../signround/signround-gpu.js";
import { bytesOf, type GpuBlockGrad } from "./gpu-block-grad.js";
import { elementAt } from "./launch.js";

/**
 * Block-wise SignRound with everything on the GPU: the seven linears' V, α, β (GpuSignRoundLayer,
 * the layer-wise GPU tuner's state and kernels, without a Hessian), the block's weights and
 * gradients (GpuBlockGrad) and the calibration windows' inputs and targets, uploaded once per
 * block. An iteration then launches, per linear, the fit and fake quantization that write Ŵ
 * straight into the block's weight buffer; per window the forward, the loss step and the
 * backward; per linear the signed step reading the block's gradient in place. The only transfer
 * is the iteration's per-token squared errors (one download, one wait).
 *
 * Arithmetic is the host tuner's (signround-block.ts BlockSignRound with the GPU backend): the
 * same Ŵ bits (lq_signround_apply), the same ∂loss/∂output bits (lq_bg_mse_grad), the same step
 * kernels as the layer-wise GPU path. Only the loss is summed in another order (per token in a
 * tree, then tokens in order) — it only chooses the best iteration.
 */
export class GpuBlockTuner implements BlockTuner {
  private readonly layers: Partial<Record<BlockLinearKey, GpuSignRoundLayer>> = {};
  private readonly owned: DeviceArray[] = [];
  private readonly inputs: DeviceArray;
  private readonly targets: DeviceArray;
  /** Per window w: its first element in `inputs` and `targets`. */
  private readonly offsets: number[];
  /** Σ diff² per token, [batch position][maxTokens]. */
  private readonly rowSq: DeviceArray;
  private readonly rowSqHost: Float64Array;
  private readonly maxTokens: number;
  private released = false;

  constructor(private readonly engine: GpuEngine, private readonly grad: GpuBlockGrad, private readonly ctx: BlockContext, params: IntGroupParams, private readonly data: BlockCalibration) {
    const hidden = ctx.config.hiddenSize;
    this.maxTokens = grad.plan.maxTokens;
    this.offsets = [];
    let elements = 0;
    for (const tokens of data.tokens) {
      this.offsets.push(elements);
      elements += tokens * hidden;
    }
    try {
      this.inputs = this.alloc(elements);
      this.targets = this.alloc(elements);
      data.inputs.forEach((input, w) => engine.context.uploadInto(elementAt(this.inputs, this.offsets[w]!), bytesOf(input)));
      data.targets.forEach((target, w) => engine.context.uploadInto(elementAt(this.targets, this.offsets[w]!), bytesOf(target)));
      this.rowSq = this.alloc(data.inputs.length * this.maxTokens);
      for (const key of BLOCK_LINEARS) {
        const { weight, outFeatures, inFeatures } = ctx.layer[key];
        const weight32 = Float32Array.from(weight);
        const { groupMin, groupMax } = groupExtremes(weight32, outFeatures, inFeatures, params.groupSize);
        this.layers[key] = new GpuSignRoundLayer(engine, { weight: weight32, outFeatures, inFeatures, quant: params, hessian: undefined, groupMin, groupMax, lossNorm: lossNormaliser(outFeatures, inFeatures, undefined) });
      }
    } catch (error) {
      this.release();
      throw error;
    }
    this.rowSqHost = new Float64Array(this.rowSq.elements);
  }

  /** Device bytes a tuner of `data` takes beyond its GpuBlockGrad: the windows twice, the token sums, and per weight the layer tuner's buffers. */
  static deviceBytes(ctx: BlockContext, data: BlockCalibration, maxTokens: number): number {
    const tokens = data.tokens.reduce((sum, t) => sum + t, 0);
    // GpuSignRoundLayer without a Hessian: W, V, best V (float32), codes (int16), flags, ΔW (float64).
    const perWeight = 4 + 4 + 4 + 2 + 1 + 8;
    const weights = BLOCK_LINEARS.reduce((sum, key) => sum + ctx.layer[key].weight.length, 0);
    return 2 * tokens * ctx.config.hiddenSize * 8 + data.inputs.length * maxTokens * 8 + weights * perWeight;
  }

  lossAndGradients(windows: readonly number[]): number {
    this.checkLive();
    const { grad, data } = this;
    if (windows.length > data.inputs.length) throw new KernelError("LAUNCH_REFUSED", "gpu block tuner: more windows in a batch than the calibration holds", { expected: `≤ ${data.inputs.length}`, actual: windows.length });
    for (const key of BLOCK_LINEARS) {
      const buffer = grad.weightBuffer(key);
      this.layer(key).fakeQuantizeInto(buffer.pointer, buffer.elements);
    }
    grad.weightsWritten();
    grad.zeroGradients();
    const count = windows.reduce((sum, w) => sum + data.tokens[w]! * this.ctx.config.hiddenSize, 0);
    windows.forEach((w, j) => grad.forwardBackwardResident(this.inputs, this.targets, this.offsets[w]!, data.tokens[w]!, this.rowSq, j * this.maxTokens, count));
    const used = this.rowSqHost.subarray(0, windows.length * this.maxTokens);
    this.engine.context.download(this.rowSq.pointer, new Uint8Array(used.buffer, used.byteOffset, used.byteLength));
    grad.checkStatusNow(`block-wise SignRound iteration over ${windows.length} windows`);
    let sum = 0;
    windows.forEach((w, j) => {
      for (let t = 0; t < data.tokens[w]!; t++) sum += used[j * this.maxTokens + t]!;
    });
    return sum / count;
  }

  step(lrValue: number, lrMinmax: number, tuneMinmax: boolean): void {
    this.checkLive();
    for (const key of BLOCK_LINEARS) this.layer(key).step(lrValue, lrMinmax, tuneMinmax, this.grad.gradientBuffer(key).pointer);
  }

  keepBest(): void {
    this.checkLive();
    for (const key of BLOCK_LINEARS) this.layer(key).keepBest();
  }

  best(): Record<BlockLinearKey, SignRoundParams> {
    this.checkLive();
    return Object.fromEntries(BLOCK_LINEARS.map((key) => [key, this.layer(key).best()])) as Record<BlockLinearKey, SignRoundParams>;
  }

  /** Frees the windows and the seven layer tuners (not the GpuBlockGrad, which its backend owns). Safe to call twice. */
  release(): void {
    this.released = true;
    for (const key of BLOCK_LINEARS) this.layers[key]?.release();
    for (const array of this.owned.splice(0)) this.engine.context.free(array.pointer);
  }

  private layer(key: BlockLinearKey): GpuSignRoundLayer {
    return this.layers[key]!;
  }

  private checkLive(): void {
    if (this.released) throw new KernelError("LAUNCH_REFUSED", "gpu block tuner: used after release()");
  }

  private alloc(elements: number): DeviceArray {
    const array = { pointer: this.engine.context.alloc(Math.max(1, elements) * 8), elements };
    this.owned.push(array);
    return array;
  }
}
