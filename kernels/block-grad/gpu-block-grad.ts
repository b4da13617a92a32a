import { KernelError } from "../../formats/errors.js";
import { BLOCK_LINEARS, type BlockContext, type BlockLinearKey, type BlockLinearWeights } from "../../model/block-grad/forward.js";
import { checkStatus } from "../cuda/status.js";
import type { GpuEngine } from "../engine.js";
import type { DeviceArray } from "../forward/launch.js";
import { backwardOnDevice } from "./backward-steps.js";
import { allocateBlockBuffers, type BlockBuffers } from "./buffers.js";
import { forwardOnDevice } from "./forward-steps.js";
import { elementAt, launchMseGrad } from "./launch.js";
import { checkBlockWeights, checkWindow, planBlockGrad, type BlockGradPlan } from "./plan.js";

/**
 * One decoder block's forward and reverse mode on the GPU, in float64: model/block-grad's
 * forwardBlock and backwardBlock op for op (forward-steps.ts, backward-steps.ts), for SignRound's
 * block-wise objective (formats/int-group/quantizers/signround-block.ts).
 *
 * The CPU calls map as:
 *   forwardBlock(ctx, weights, input, tokens)          → setWeights(weights) once, then forward(input, tokens)
 *   backwardBlock(ctx, weights, tape, dOutput, grads)  → backward(dOutput) (the tape of the last forward)
 *   grads zeroed / read                                → zeroGradients() / gradients()
 * The weights stay on the device until the next setWeights, so the windows of one SignRound
 * iteration upload them once; the gradients accumulate on the device over the windows, as the
 * CPU's `grads`. The norms, biases and rotary table are the block's own, uploaded at construction.
 *
 * Products run in gemmF64's summation order and per-row sums in a fixed tree, so the output and
 * the gradients agree with the CPU's to float64 rounding (test/kernels/block-grad.test.ts holds
 * them to 1e-9 relative), not bit for bit; the same inputs give the same bits run to run.
 */
export class GpuBlockGrad {
  readonly plan: BlockGradPlan;
  private readonly allocated: DeviceArray[] = [];
  private readonly buffers: BlockBuffers;
  private weightsSet = false;
  /** Tokens of the window whose tape is on the device (0: none, or the weights changed since). */
  private tapeTokens = 0;
  private released = false;

  /** `maxTokens`: the longest window this instance will run (ctx.rope must cover it). */
  constructor(private readonly engine: GpuEngine, ctx: BlockContext, maxTokens: number) {
    this.plan = planBlockGrad(ctx, maxTokens);
    const { plan } = this;
    // A physical fact before any allocation: everything must fit in the device's memory.
    const bytes = 8 * (plan.frozenElements + 2 * plan.weightElements + plan.activationElements) + 4;
    const total = engine.context.info.totalBytes;
    if (bytes > total) throw new KernelError("OUT_OF_MEMORY", `gpu block grad: a block's weights, gradients and the tape of a ${maxTokens}-token window need ${bytes} bytes, more than the device's ${total}`, { expected: `≤ ${total}`, actual: bytes });
    try {
      this.buffers = allocateBlockBuffers(plan, ctx, (elements, elementBytes) => this.alloc(elements, elementBytes), (values) => this.upload(values));
      this.zeroGradients();
    } catch (error) {
      this.release();
      throw error;
    }
  }

  /** Uploads the seven linear weights ([out][in] each) the next forwards and backwards use. */
  setWeights(weights: BlockLinearWeights): void {
    this.checkUsable();
    checkBlockWeights(this.plan, weights);
    for (const key of BLOCK_LINEARS) this.engine.context.uploadInto(this.buffers.weights[key].pointer, bytesOf(weights[key]));
    this.weightsSet = true;
    // A tape made with other weights would give their gradient, not these weights'.
    this.tapeTokens = 0;
  }

  /** The block's output [tokens][hidden] on `input` ([tokens][hidden]); keeps the tape for backward(). */
  forward(input: Float64Array, tokens: number): Float64Array {
    this.checkUsable();
    if (!this.weightsSet) throw new KernelError("LAUNCH_REFUSED", "gpu block grad: forward before setWeights()");
    checkWindow(this.plan, input, tokens, "block input");
    const { engine, buffers } = this;
    this.tapeTokens = 0;
    engine.context.zero(buffers.status.pointer, 4);
    // The residual stream starts as the input (forward.ts: h1 = input.slice()).
    engine.context.uploadInto(buffers.tape.h1.pointer, bytesOf(input));
    forwardOnDevice(engine, this.plan, buffers, tokens);
    const output = new Float64Array(tokens * this.plan.hidden);
    downloadInto(engine, buffers.tape.output, output);
    this.checkKernelStatus(`forward of a ${tokens}-token window`);
    this.tapeTokens = tokens;
    return output;
  }

  /**
   * Device-resident use (gpu-block-tuner.ts): one linear's weight buffer ([out][in] float64), for
   * a caller that writes the weights there on the device and then calls weightsWritten().
   */
  weightBuffer(key: BlockLinearKey): DeviceArray {
    this.checkUsable();
    return this.buffers.weights[key];
  }

  /** One linear's accumulated gradient on the device ([out][in] float64). */
  gradientBuffer(key: BlockLinearKey): DeviceArray {
    this.checkUsable();
    return this.buffers.grads[key];
  }

  /**
   * The weight buffers now hold the weights to use (written on the device through weightBuffer()).
   * Starts a resident iteration: the status word is cleared for checkStatusNow() to read at its end.
   */
  weightsWritten(): void {
    this.checkUsable();
    this.weightsSet = true;
    this.tapeTokens = 0;
    this.engine.context.zero(this.buffers.status.pointer, 4);
  }

  /**
   * forward() on a window already on the device (`inputs` from element `offset`, tokens·hidden
   * values), then the loss step against `targets` from the same offset: ∂MSE/∂output goes to the
   * backward's input and Σ diff² per token to rowSq[rowOffset …] (`count`: the iteration's output
   * elements), and backward() runs on it. Nothing is downloaded and the status word is not read:
   * the caller reads both once per iteration (rowSq, checkStatusNow).
   */
  forwardBackwardResident(inputs: DeviceArray, targets: DeviceArray, offset: number, tokens: number, rowSq: DeviceArray, rowOffset: number, count: number): void {
    this.checkUsable();
    if (!this.weightsSet) throw new KernelError("LAUNCH_REFUSED", "gpu block grad: forward before the weights were set");
    const { engine, buffers, plan } = this;
    const elements = tokens * plan.hidden;
    if (!(Number.isSafeInteger(tokens) && tokens >= 1 && tokens <= plan.maxTokens)) throw new KernelError("LAUNCH_REFUSED", `gpu block grad: a window must hold 1 … ${plan.maxTokens} tokens`, { expected: `1 … ${plan.maxTokens}`, actual: tokens });
    if (!(Number.isSafeInteger(offset) && offset >= 0 && offset + elements <= inputs.elements)) throw new KernelError("LAUNCH_REFUSED", "gpu block grad: the window lies outside the resident inputs", { expected: `≤ ${inputs.elements}`, actual: offset + elements });
    engine.context.copy(buffers.tape.h1.pointer, elementAt(inputs, offset), elements * 8);
    forwardOnDevice(engine, plan, buffers, tokens);
    launchMseGrad(engine, buffers.tape.output, targets, offset, buffers.scratch.dOutput, rowSq, rowOffset, tokens, plan.hidden, count, buffers.status);
    backwardOnDevice(engine, plan, buffers, tokens);
    this.tapeTokens = 0;
  }

  /** Reads the status word now (waits for every launch): KernelError KERNEL_STATUS naming `what` when a kernel set a bit. */
  checkStatusNow(what: string): void {
    this.checkUsable();
    this.checkKernelStatus(what);
  }

  /** Adds ∂loss/∂W of every linear into the device gradients, from ∂loss/∂output of the last forward's window. */
  backward(dOutput: Float64Array): void {
    this.checkUsable();
    const T = this.tapeTokens;
    if (T === 0) throw new KernelError("LAUNCH_REFUSED", "gpu block grad: backward without a forward on the current weights");
    checkWindow(this.plan, dOutput, T, "∂loss/∂output");
    const { engine, buffers } = this;
    engine.context.zero(buffers.status.pointer, 4);
    engine.context.uploadInto(buffers.scratch.dOutput.pointer, bytesOf(dOutput));
    backwardOnDevice(engine, this.plan, buffers, T);
    this.checkKernelStatus(`backward of a ${T}-token window`);
  }

  /** Sets every gradient to zero (the CPU's grads[key].fill(0)). */
  zeroGradients(): void {
    this.checkUsable();
    for (const key of BLOCK_LINEARS) this.engine.context.zero(this.buffers.grads[key].pointer, this.buffers.grads[key].elements * 8);
  }

  /** The accumulated ∂loss/∂W per linear, downloaded ([out][in] each); into `into` when given. */
  gradients(into?: BlockLinearWeights): BlockLinearWeights {
    this.checkUsable();
    if (into !== undefined) checkBlockWeights(this.plan, into);
    const out = into ?? (Object.fromEntries(BLOCK_LINEARS.map((key) => [key, new Float64Array(this.buffers.grads[key].elements)])) as BlockLinearWeights);
    for (const key of BLOCK_LINEARS) downloadInto(this.engine, this.buffers.grads[key], out[key]);
    return out;
  }

  /** Frees every device buffer (to the context's pool); later calls are refused. Safe to call twice. */
  release(): void {
    this.released = true;
    this.tapeTokens = 0;
    for (const array of this.allocated.splice(0)) this.engine.context.free(array.pointer);
  }

  private checkUsable(): void {
    if (this.released) throw new KernelError("LAUNCH_REFUSED", "gpu block grad: used after release()");
  }

  /** Reads the status word (waits for the launches); KernelError KERNEL_STATUS when a kernel set a bit. */
  private checkKernelStatus(shape: string): void {
    checkStatus(this.engine.context, this.buffers.status.pointer, { format: "block-grad", shape });
  }

  private alloc(elements: number, elementBytes: number): DeviceArray {
    const array = { pointer: this.engine.context.alloc(elements * elementBytes), elements };
    this.allocated.push(array);
    return array;
  }

  private upload(values: Float64Array): DeviceArray {
    const array = this.alloc(values.length, 8);
    this.engine.context.uploadInto(array.pointer, bytesOf(values));
    return array;
  }
}

/** The bytes of `values`; a view of a SharedArrayBuffer is copied out first (the FFI copy is only relied on for ordinary ArrayBuffers). */
export function bytesOf(values: Float64Array): Uint8Array {
  const plain = values.buffer instanceof SharedArrayBuffer ? values.slice() : values;
  return new Uint8Array(plain.buffer, plain.byteOffset, plain.byteLength);
}

/** Downloads values.length elements of `from` into `values` (through a copy when it lives in a SharedArrayBuffer). */
function downloadInto(engine: GpuEngine, from: DeviceArray, values: Float64Array): void {
  if (values.buffer instanceof SharedArrayBuffer) {
    const plain = new Float64Array(values.length);
    engine.context.download(from.pointer, bytesOf(plain));
    values.set(plain);
    return;
  }
  engine.context.download(from.pointer, bytesOf(values));
}
