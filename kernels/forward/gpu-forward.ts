import { KernelError } from "../../formats/errors.js";
import { bytesOf } from "../../formats/packed-array.js";
import type { DeviceInputObserver } from "../../converters/hessians/calibrate.js";
import { checkSlidingWindow, type LinearInputObserver } from "../../model/llama-forward.js";
import type { DecoderLayerWeights, Linear, LlamaWeights } from "../../model/llama-weights.js";
import type { WindowScore } from "../../model/perplexity.js";
import { inverseFrequencies, ropeTable } from "../../model/rope.js";
import type { GpuEngine } from "../engine.js";
import { checkForwardStatus, launchEmbed, launchNll, launchRmsNorm, launchRope, launchSwiglu, type DeviceArray } from "./launch.js";
import { attentionOn, linearOn } from "./layer-ops.js";
import { scoreFromPositionNll } from "./gpu-perplexity.js";
import { LINEAR_KEYS, uploadModel, type DeviceLinear, type DeviceModel } from "./device-model.js";
import { checkWindowIds, planForward, type ForwardPlan } from "./plan.js";
import { allocateActivations, type Activations } from "./activations.js";
import { openResidentStates, type LayerActivations, type ResidentOptions, type ResidentStates } from "./resident-states.js";

/**
 * model/llama-forward.ts LlamaForward on the GPU, op for op: the same float32 weights (uploaded
 * once as the float64 arrays LlamaWeights holds: 8 bytes a parameter, 128 MB for docs-llama-16m),
 * float64 activations, the same rotary table (rope.ts ropeTable, computed on the host and
 * uploaded), and each step's CPU formula (kernels/forward/forward.cu). The products run through
 * gemmF64 (cuBLAS DGEMM or the own kernel) in their own summation order, so logits and NLL agree
 * with the CPU's to float64 rounding carried through the layers (test/kernels/forward.test.ts
 * holds them to 1e-9 relative), not bit for bit.
 *
 * One window at a time, every buffer sized for `maxTokens` at construction: a window is one
 * upload of its ids, about 30 launches per layer, and one download of its per-position NLL.
 */

export class GpuLlamaForward {
  readonly plan: ForwardPlan;
  private readonly allocated: DeviceArray[] = [];
  private readonly model: DeviceModel;
  private readonly act: Activations;
  /** The host weights' linears, for the calibration observer (it keys Hessians by them). */
  private readonly hostLayers: readonly DecoderLayerWeights[];
  /** The host array each linear's device weight was last uploaded from. */
  private readonly uploadedFrom = new Map<DeviceLinear, Float64Array>();
  private released = false;

  /** `maxTokens`: the longest window this instance will run; `file` names config.json in rope-scaling errors. */
  constructor(private readonly engine: GpuEngine, weights: LlamaWeights, maxTokens: number, file = "config.json") {
    checkSlidingWindow(weights.config, maxTokens, file);
    this.plan = planForward(weights, maxTokens);
    this.hostLayers = weights.layers;
    const { plan } = this;
    // A physical fact before any allocation: everything must fit in the device's memory.
    const bytes = 8 * (plan.weightElements + plan.activationElements) + 4 * maxTokens + 4;
    const total = engine.context.info.totalBytes;
    if (bytes > total) throw new KernelError("OUT_OF_MEMORY", `gpu forward: the float64 weights and the activations of a ${maxTokens}-token window need ${bytes} bytes, more than the device's ${total}`, { file, expected: `≤ ${total}`, actual: bytes });
    const table = ropeTable(inverseFrequencies(weights.config, file), plan.headDim, maxTokens);
    try {
      this.model = uploadModel(weights, plan.tiedHead, (values) => this.upload(values), this.uploadedFrom);
      this.act = allocateActivations(plan, maxTokens, table, (elements, elementBytes) => this.alloc(elements, elementBytes), (values) => this.upload(values));
    } catch (error) {
      this.release();
      throw error;
    }
  }

  /** Logits [ids.length][vocab], as LlamaForward.run. */
  run(ids: Int32Array): Float64Array {
    const tokens = this.forward(ids);
    const logits = new Float64Array(tokens * this.plan.vocab);
    this.engine.context.download(this.act.logits.pointer, bytesOf(logits));
    checkForwardStatus(this.engine.context, this.act.status, `a ${tokens}-token window`);
    return logits;
  }

  /** −log p(ids[t+1] | ids[≤t]) for t < ids.length − 1, in nats. */
  positionNll(ids: Int32Array): Float64Array {
    const tokens = this.forward(ids);
    const nll = new Float64Array(Math.max(0, tokens - 1));
    if (tokens >= 2) {
      const { act, plan } = this;
      launchNll(this.engine, act.logits, act.ids, act.nll, tokens, plan.vocab, act.status);
      this.engine.context.download(act.nll.pointer, bytesOf(nll));
    }
    checkForwardStatus(this.engine.context, this.act.status, `a ${tokens}-token window`);
    return nll;
  }

  /** perplexity.ts scoreWindow: the per-position terms added in position order, as windowNll adds them. */
  scoreWindow(ids: Int32Array): WindowScore {
    return scoreFromPositionNll(this.positionNll(ids), ids.length);
  }

  /** Frees every device buffer (to the context's pool); later calls are refused. Safe to call twice. */
  release(): void {
    this.released = true;
    for (const array of this.allocated.splice(0)) this.engine.context.free(array.pointer);
  }

  /**
   * Calibration: runs the window through every decoder layer (no head, as calibrateHessians) and
   * hands `observe` the input of each distinct linear, downloaded to the host, in the CPU
   * forward's order (q, o, gate, down per layer; q/k/v and gate/up share theirs).
   */
  observeLinearInputs(ids: Int32Array, observe: LinearInputObserver): void {
    this.decoder(ids, observe);
    checkForwardStatus(this.engine.context, this.act.status, `a ${ids.length}-token window`);
  }

  /** LlamaForward.embed on the GPU: the window's hidden states [ids.length][hidden], on the host. */
  embed(ids: Int32Array): Float64Array {
    const T = this.embedOnDevice(ids);
    const hidden = new Float64Array(T * this.plan.hidden);
    if (T > 0) this.engine.context.download(this.act.hidden.pointer, bytesOf(hidden));
    checkForwardStatus(this.engine.context, this.act.status, `a ${T}-token window`);
    return hidden;
  }

  /**
   * LlamaForward.layer on the GPU: `hidden` ([tokens][hidden], on the host) through decoder layer
   * `index` in place, with the host's weights as they are now (see syncLayerWeights).
   */
  layer(index: number, hidden: Float64Array, tokens: number, observe?: LinearInputObserver): void {
    this.checkLayerCall(index, hidden, tokens);
    const { act } = this;
    if (tokens === 0) return;
    this.syncLayerWeights(index);
    this.engine.context.zero(act.status.pointer, 4);
    this.engine.context.uploadInto(act.hidden.pointer, bytesOf(hidden));
    this.runLayer(index, act, tokens, 1, observe);
    this.engine.context.download(act.hidden.pointer, bytesOf(hidden));
    checkForwardStatus(this.engine.context, act.status, `layer ${index} of a ${tokens}-token window`);
  }

  /**
   * For sequential calibration's observation passes: layer() without its result, the inputs of
   * the linears handed to `observe` where they lie, in device memory (no download), and `hidden`
   * left as it is. `observe` may throw to stop the layer once it has seen what it needs.
   */
  observeLayerOnDevice(index: number, hidden: Float64Array, tokens: number, observe: DeviceInputObserver): void {
    this.checkLayerCall(index, hidden, tokens);
    if (tokens === 0) return;
    this.syncLayerWeights(index);
    this.engine.context.zero(this.act.status.pointer, 4);
    this.engine.context.uploadInto(this.act.hidden.pointer, bytesOf(hidden));
    this.runLayer(index, this.act, tokens, 1, undefined, observe);
    checkForwardStatus(this.engine.context, this.act.status, `layer ${index} of a ${tokens}-token window`);
  }

  /**
   * Sequential calibration's states kept on the device and run in batches of windows
   * (resident-states.ts), or undefined when they do not fit (the caller keeps them on the host).
   */
  residentStates(windows: readonly Int32Array[], options?: ResidentOptions): ResidentStates | undefined {
    if (this.released) throw new KernelError("LAUNCH_REFUSED", "gpu forward: used after release()");
    const { engine, plan, act, model } = this;
    return openResidentStates({
      engine, plan, embed: model.embed, cos: act.cos, sin: act.sin, status: act.status,
      checkIds: (ids) => checkWindowIds(ids, plan),
      syncLayerWeights: (index) => this.syncLayerWeights(index),
      runLayer: (index, batchAct, tokens, windows, observe) => this.runLayer(index, batchAct, tokens, windows, undefined, observe),
      checkStatus: (what) => checkForwardStatus(engine.context, act.status, what),
    }, windows, options);
  }

  /** Runs the window up to the logits on the device; returns its token count. */
  private forward(ids: Int32Array): number {
    const T = this.decoder(ids, undefined);
    if (T === 0) return 0;
    const { plan, act, model } = this;
    launchRmsNorm(this.engine, act.hidden, model.finalNorm, act.normed, T, plan.hidden, plan.eps, act.status);
    linearOn(this.engine, { inFeatures: plan.hidden, outFeatures: plan.vocab, weight: model.head, bias: undefined }, act.normed, act.logits, T, false);
    return T;
  }

  /** The decoder layers on the window (hidden states left in act.hidden); returns its token count. */
  private decoder(ids: Int32Array, observe: LinearInputObserver | undefined): number {
    const T = this.embedOnDevice(ids);
    for (let index = 0; index < this.model.layers.length; index++) this.runLayer(index, this.act, T, 1, observe);
    return T;
  }

  /** Checks and uploads the ids, gathers their embedding rows into act.hidden; returns the token count. */
  private embedOnDevice(ids: Int32Array): number {
    if (this.released) throw new KernelError("LAUNCH_REFUSED", "gpu forward: used after release()");
    const { engine, plan, act, model } = this;
    checkWindowIds(ids, plan);
    const T = ids.length;
    engine.context.zero(act.status.pointer, 4);
    if (T === 0) return 0;
    engine.context.uploadInto(act.ids.pointer, new Uint8Array(ids.buffer, ids.byteOffset, ids.byteLength));
    launchEmbed(engine, act.ids, model.embed, act.hidden, T, plan.hidden, plan.vocab, act.status);
    return T;
  }

  private checkLayerCall(index: number, hidden: Float64Array, tokens: number): void {
    if (this.released) throw new KernelError("LAUNCH_REFUSED", "gpu forward: used after release()");
    const { plan } = this;
    if (!(Number.isInteger(index) && index >= 0 && index < this.model.layers.length)) throw new KernelError("LAUNCH_REFUSED", "gpu forward: no such decoder layer", { expected: `0 … ${this.model.layers.length - 1}`, actual: index });
    if (!(Number.isInteger(tokens) && tokens >= 0 && tokens <= plan.maxTokens) || hidden.length !== tokens * plan.hidden) throw new KernelError("LAUNCH_REFUSED", "gpu forward: hidden states of another shape than the window", { expected: `${tokens} × ${plan.hidden} (≤ ${plan.maxTokens} tokens)`, actual: hidden.length });
  }

  /**
   * llama-forward.ts layer(): act.hidden, `windows` windows of T tokens back to back, through
   * decoder layer `index`, in place. Each distinct linear input goes to `observe` downloaded, or
   * to `observeOnDevice` where it lies.
   */
  private runLayer(index: number, act: LayerActivations, T: number, windows: number, observe: LinearInputObserver | undefined, observeOnDevice?: DeviceInputObserver): void {
    const { engine, plan } = this;
    const rows = T * windows;
    const layer = this.model.layers[index]!;
    const host = this.hostLayers[index]!;
    const show = (linear: Linear, from: DeviceArray, features: number): void => {
      if (observeOnDevice !== undefined) return observeOnDevice(linear, from.pointer, rows * features, rows);
      if (observe === undefined) return;
      const input = new Float64Array(rows * features);
      engine.context.download(from.pointer, bytesOf(input));
      observe(linear, input, rows);
    };
    launchRmsNorm(engine, act.hidden, layer.inputNorm, act.normed, rows, plan.hidden, plan.eps, act.status);
    show(host.q, act.normed, plan.hidden);
    linearOn(this.engine, layer.q, act.normed, act.q, rows, false);
    linearOn(this.engine, layer.k, act.normed, act.k, rows, false);
    linearOn(this.engine, layer.v, act.normed, act.v, rows, false);
    launchRope(engine, act.q, act.cos, act.sin, T, plan.heads, plan.headDim, windows);
    launchRope(engine, act.k, act.cos, act.sin, T, plan.kvHeads, plan.headDim, windows);
    attentionOn(engine, plan, act, T, windows);
    show(host.o, act.attended, plan.qOut);
    linearOn(this.engine, layer.o, act.attended, act.hidden, rows, true);
    launchRmsNorm(engine, act.hidden, layer.postAttentionNorm, act.normed, rows, plan.hidden, plan.eps, act.status);
    show(host.gate, act.normed, plan.hidden);
    linearOn(this.engine, layer.gate, act.normed, act.gate, rows, false);
    linearOn(this.engine, layer.up, act.normed, act.up, rows, false);
    launchSwiglu(engine, act.gate, act.up, rows * plan.intermediate);
    show(host.down, act.gate, plan.intermediate);
    linearOn(this.engine, layer.down, act.gate, act.hidden, rows, true);
  }

  /**
   * Uploads again every linear of layer `index` whose host weight array was swapped since it was
   * last uploaded (sequential calibration puts the quantized weights in as layers finish).
   */
  private syncLayerWeights(index: number): void {
    const host = this.hostLayers[index]!;
    const device = this.model.layers[index]!;
    for (const key of LINEAR_KEYS) {
      const weight = host[key].weight;
      const target = device[key];
      if (this.uploadedFrom.get(target) === weight) continue;
      if (weight.length !== target.weight.elements) throw new KernelError("LAUNCH_REFUSED", "gpu forward: a swapped-in weight has another size than the layer's", { tensor: host[key].name, expected: target.weight.elements, actual: weight.length });
      const source = weight.buffer instanceof SharedArrayBuffer ? weight.slice() : weight;
      this.engine.context.uploadInto(target.weight.pointer, bytesOf(source));
      this.uploadedFrom.set(target, weight);
    }
  }

  private alloc(elements: number, elementBytes: number): DeviceArray {
    const array = { pointer: this.engine.context.alloc(elements * elementBytes), elements };
    this.allocated.push(array);
    return array;
  }

  private upload(values: Float64Array): DeviceArray {
    // Weights moved into shared memory by perplexity-parallel.ts are copied out of it first: the
    // FFI copy is only relied on for ordinary ArrayBuffers.
    const source = values.buffer instanceof SharedArrayBuffer ? values.slice() : values;
    const array = this.alloc(source.length, 8);
    this.engine.context.uploadInto(array.pointer, bytesOf(source));
    return array;
  }
}
