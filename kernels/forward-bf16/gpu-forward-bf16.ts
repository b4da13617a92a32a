import { KernelError } from "../../formats/errors.js";
import { f32BitsToBf16Bits, f64ToF32BitsRoundToOdd } from "../../formats/dense/float-bits.js";
import { checkSlidingWindow } from "../../model/llama-forward.js";
import type { Linear, LlamaWeights } from "../../model/llama-weights.js";
import type { WindowScore } from "../../model/perplexity.js";
import { inverseFrequencies, ropeTable } from "../../model/rope.js";
import type { CublasHandle } from "../cuda/cublas.js";
import type { DevicePointer } from "../cuda/driver.js";
import type { GpuEngine } from "../engine.js";
import { checkForwardStatus, elementwiseLaunch, rowsLaunch, type DeviceArray } from "../forward/launch.js";
import { scoreFromPositionNll } from "../forward/gpu-perplexity.js";
import { checkWindowIds, planForward, type ForwardPlan } from "../forward/plan.js";

/**
 * The Llama-family forward on the GPU with bf16 weights and float32 activations and sums
 * (kernels/forward-bf16/forward-bf16.cu): the precision models ship in, at a quarter of the
 * float64 forward's (kernels/forward) weight memory, so a 7B model's weights take 14 GB instead
 * of 56. Each product widens its linear's bf16 weight to float32 in one scratch buffer and runs a
 * cuBLAS SGEMM (true float32: TF32 stays off), so this path needs cuBLAS; the float64 forward
 * remains the reference and runs without it.
 *
 * Weights are rounded to bf16 (nearest even) on upload: exact for a bf16 checkpoint, which is
 * what most are. Norm weights, biases and the rotary table are float32.
 */

interface Bf16Linear {
  inFeatures: number;
  outFeatures: number;
  weight: DeviceArray;
  bias: DeviceArray | undefined;
}

interface Bf16Layer {
  inputNorm: DeviceArray;
  postAttentionNorm: DeviceArray;
  q: Bf16Linear;
  k: Bf16Linear;
  v: Bf16Linear;
  o: Bf16Linear;
  gate: Bf16Linear;
  up: Bf16Linear;
  down: Bf16Linear;
}

export class GpuLlamaForwardBf16 {
  readonly plan: ForwardPlan;
  private readonly blas: CublasHandle;
  private readonly allocated: DeviceArray[] = [];
  private readonly layers: Bf16Layer[];
  private readonly embed: DeviceArray;
  private readonly head: DeviceArray;
  private readonly finalNorm: DeviceArray;
  /** float32 activations, sized for plan.maxTokens; `widened` holds the linear being multiplied. */
  private readonly act: Record<"hidden" | "normed" | "q" | "k" | "v" | "attended" | "gate" | "up" | "scores" | "logits" | "widened" | "cos" | "sin", DeviceArray>;
  private readonly ids: DeviceArray;
  private readonly nll: DeviceArray;
  private readonly status: DeviceArray;
  private released = false;

  constructor(private readonly engine: GpuEngine, weights: LlamaWeights, maxTokens: number, file = "config.json") {
    checkSlidingWindow(weights.config, maxTokens, file);
    this.plan = planForward(weights, maxTokens);
    const blas = engine.cublas();
    if (!blas.ok) throw new KernelError("MODULE_MISSING", `the bf16 forward multiplies through cuBLAS, which was not found (${blas.reason}); the float64 forward runs without it`, { file });
    this.blas = blas.handle;
    const p = this.plan;
    const T = maxTokens;
    const widest = Math.max(p.vocab * p.hidden, p.intermediate * p.hidden, p.qOut * p.hidden);
    const activationBytes = 4 * (2 * T * p.hidden + 2 * T * p.qOut + 2 * T * p.kvOut + 2 * T * p.intermediate + T * T + T * p.vocab + widest + T * p.headDim) + 12 * T;
    const bytes = 2 * p.weightElements + activationBytes;
    const total = engine.context.info.totalBytes;
    if (bytes > total) throw new KernelError("OUT_OF_MEMORY", `gpu forward (bf16): the weights and the activations of a ${T}-token window need ${bytes} bytes, more than the device's ${total}`, { file, expected: `≤ ${total}`, actual: bytes });
    const table = ropeTable(inverseFrequencies(weights.config, file), p.headDim, T);
    try {
      const linear = (l: Linear): Bf16Linear => ({ inFeatures: l.inFeatures, outFeatures: l.outFeatures, weight: this.uploadBf16(l.weight), bias: l.bias === undefined ? undefined : this.uploadF32(l.bias) });
      this.layers = weights.layers.map((l) => ({
        inputNorm: this.uploadF32(l.inputNorm), postAttentionNorm: this.uploadF32(l.postAttentionNorm),
        q: linear(l.q), k: linear(l.k), v: linear(l.v), o: linear(l.o), gate: linear(l.gate), up: linear(l.up), down: linear(l.down),
      }));
      this.embed = this.uploadBf16(weights.embed);
      this.head = p.tiedHead ? this.embed : this.uploadBf16(weights.head);
      this.finalNorm = this.uploadF32(weights.finalNorm);
      const f32 = (elements: number): DeviceArray => this.alloc(elements, 4);
      this.act = {
        hidden: f32(T * p.hidden), normed: f32(T * p.hidden), q: f32(T * p.qOut), k: f32(T * p.kvOut), v: f32(T * p.kvOut), attended: f32(T * p.qOut),
        gate: f32(T * p.intermediate), up: f32(T * p.intermediate), scores: f32(T * T), logits: f32(T * p.vocab), widened: f32(widest),
        cos: this.uploadF32(table.cos), sin: this.uploadF32(table.sin),
      };
      this.ids = this.alloc(T, 4);
      this.nll = this.alloc(T, 8);
      this.status = this.alloc(1, 4);
    } catch (error) {
      this.release();
      throw error;
    }
  }

  /** Logits [ids.length][vocab] (float32 values, widened), as LlamaForward.run. */
  run(ids: Int32Array): Float64Array {
    const T = this.forward(ids);
    const logits = new Float32Array(T * this.plan.vocab);
    this.engine.context.download(this.act.logits.pointer, new Uint8Array(logits.buffer));
    checkForwardStatus(this.engine.context, this.status, `a ${T}-token window (bf16)`);
    return Float64Array.from(logits);
  }

  /** −log p(ids[t+1] | ids[≤t]) for t < ids.length − 1, in nats. */
  positionNll(ids: Int32Array): Float64Array {
    const T = this.forward(ids);
    const nll = new Float64Array(Math.max(0, T - 1));
    if (T >= 2) {
      this.module().launch("lq_fb_nll", rowsLaunch("lq_fb_nll", T - 1), [{ pointer: this.act.logits.pointer }, { pointer: this.ids.pointer }, { pointer: this.nll.pointer }, { i64: this.plan.vocab }, { pointer: this.status.pointer }]);
      this.engine.context.download(this.nll.pointer, new Uint8Array(nll.buffer));
    }
    checkForwardStatus(this.engine.context, this.status, `a ${T}-token window (bf16)`);
    return nll;
  }

  /** perplexity.ts scoreWindow: the per-position terms added in position order. */
  scoreWindow(ids: Int32Array): WindowScore {
    return scoreFromPositionNll(this.positionNll(ids), ids.length);
  }

  /** Frees every device buffer (to the context's pool); later calls are refused. Safe to call twice. */
  release(): void {
    this.released = true;
    for (const array of this.allocated.splice(0)) this.engine.context.free(array.pointer);
  }

  /** Embedding, every decoder layer, final norm and head; returns the token count. */
  private forward(ids: Int32Array): number {
    if (this.released) throw new KernelError("LAUNCH_REFUSED", "gpu forward (bf16): used after release()");
    const { engine, plan, act } = this;
    checkWindowIds(ids, plan);
    const T = ids.length;
    engine.context.zero(this.status.pointer, 4);
    if (T === 0) return 0;
    engine.context.uploadInto(this.ids.pointer, new Uint8Array(ids.buffer, ids.byteOffset, ids.byteLength));
    this.module().launch("lq_fb_embed", elementwiseLaunch("lq_fb_embed", T * plan.hidden), [{ pointer: this.ids.pointer }, { pointer: this.embed.pointer }, { pointer: act.hidden.pointer }, { i64: T }, { i64: plan.hidden }, { i64: plan.vocab }, { pointer: this.status.pointer }]);
    for (const layer of this.layers) this.layer(layer, T);
    this.rmsNorm(act.hidden, this.finalNorm, act.normed, T);
    this.linear({ inFeatures: plan.hidden, outFeatures: plan.vocab, weight: this.head, bias: undefined }, act.normed, act.logits, T, false);
    return T;
  }

  private layer(layer: Bf16Layer, T: number): void {
    const { plan, act } = this;
    this.rmsNorm(act.hidden, layer.inputNorm, act.normed, T);
    this.linear(layer.q, act.normed, act.q, T, false);
    this.linear(layer.k, act.normed, act.k, T, false);
    this.linear(layer.v, act.normed, act.v, T, false);
    this.rope(act.q, T, plan.heads);
    this.rope(act.k, T, plan.kvHeads);
    this.attention(T);
    this.linear(layer.o, act.attended, act.hidden, T, true);
    this.rmsNorm(act.hidden, layer.postAttentionNorm, act.normed, T);
    this.linear(layer.gate, act.normed, act.gate, T, false);
    this.linear(layer.up, act.normed, act.up, T, false);
    this.module().launch("lq_fb_swiglu", elementwiseLaunch("lq_fb_swiglu", T * plan.intermediate), [{ pointer: act.gate.pointer }, { pointer: act.up.pointer }, { i64: T * plan.intermediate }]);
    this.linear(layer.down, act.gate, act.hidden, T, true);
  }

  /** Per head: scores = Q_h·K_gᵀ / √headDim, the causal softmax, attended[:, h] = P·V_g. */
  private attention(T: number): void {
    const { plan, act } = this;
    const { heads, kvHeads, headDim, qOut, kvOut } = plan;
    const group = heads / kvHeads;
    for (let h = 0; h < heads; h++) {
      const kvOffset = Math.floor(h / group) * headDim;
      this.gemm(T, T, headDim, 1 / Math.sqrt(headDim), at(act.q, h * headDim), qOut, at(act.k, kvOffset), kvOut, true, 0, act.scores.pointer, T);
      this.module().launch("lq_fb_causal_softmax", rowsLaunch("lq_fb_causal_softmax", T), [{ pointer: act.scores.pointer }, { i64: T }, { pointer: this.status.pointer }]);
      this.gemm(T, headDim, T, 1, act.scores.pointer, T, at(act.v, kvOffset), kvOut, false, 0, at(act.attended, h * headDim), qOut);
    }
  }

  /** y [T][out] = x · Wᵀ (+ bias), or y += … into the residual stream (`accumulate`). */
  private linear(layer: Bf16Linear, x: DeviceArray, y: DeviceArray, T: number, accumulate: boolean): void {
    const { inFeatures, outFeatures } = layer;
    const count = inFeatures * outFeatures;
    if (x.elements < T * inFeatures || y.elements < T * outFeatures || this.act.widened.elements < count) throw new KernelError("LAUNCH_REFUSED", "gpu forward (bf16): a linear layer's buffers are shorter than the window", { expected: [T * inFeatures, T * outFeatures, count], actual: [x.elements, y.elements, this.act.widened.elements] });
    this.module().launch("lq_fb_widen", elementwiseLaunch("lq_fb_widen", count), [{ pointer: layer.weight.pointer }, { pointer: this.act.widened.pointer }, { i64: count }]);
    if (layer.bias !== undefined) this.module().launch("lq_fb_broadcast_rows", elementwiseLaunch("lq_fb_broadcast_rows", T * outFeatures), [{ pointer: y.pointer }, { pointer: layer.bias.pointer }, { i64: T }, { i64: outFeatures }, { i32: accumulate ? 1 : 0 }]);
    const beta = accumulate || layer.bias !== undefined ? 1 : 0;
    this.gemm(T, outFeatures, inFeatures, 1, x.pointer, inFeatures, this.act.widened.pointer, inFeatures, true, beta, y.pointer, outFeatures);
  }

  /** Row-major C [m][n] = alpha · A [m][k] · op(B) + beta · C through column-major SGEMM (operands swapped, as dgemm.ts). */
  private gemm(m: number, n: number, k: number, alpha: number, a: DevicePointer, lda: number, b: DevicePointer, ldb: number, transB: boolean, beta: number, c: DevicePointer, ldc: number): void {
    this.blas.sgemm(transB, false, n, m, k, alpha, b, ldb, a, lda, beta, c, ldc);
  }

  private rmsNorm(x: DeviceArray, weight: DeviceArray, out: DeviceArray, T: number): void {
    this.module().launch("lq_fb_rms_norm", rowsLaunch("lq_fb_rms_norm", T), [{ pointer: x.pointer }, { pointer: weight.pointer }, { pointer: out.pointer }, { i64: this.plan.hidden }, { f32: this.plan.eps }, { pointer: this.status.pointer }]);
  }

  private rope(x: DeviceArray, T: number, heads: number): void {
    const half = this.plan.headDim / 2;
    this.module().launch("lq_fb_rope", elementwiseLaunch("lq_fb_rope", T * heads * half), [{ pointer: x.pointer }, { pointer: this.act.cos.pointer }, { pointer: this.act.sin.pointer }, { i64: T }, { i64: heads }, { i64: half }]);
  }

  private module() {
    return this.engine.module("forward-bf16");
  }

  private alloc(elements: number, elementBytes: number): DeviceArray {
    const array = { pointer: this.engine.context.alloc(Math.max(1, elements) * elementBytes), elements };
    this.allocated.push(array);
    return array;
  }

  private uploadF32(values: Float64Array): DeviceArray {
    const narrowed = Float32Array.from(values);
    const array = this.alloc(narrowed.length, 4);
    this.engine.context.uploadInto(array.pointer, new Uint8Array(narrowed.buffer));
    return array;
  }

  private uploadBf16(values: Float64Array): DeviceArray {
    // Correctly rounded f64 → bf16: round-to-odd f32 first, then nearest even (formats/dense).
    const wide = new Uint32Array(values.length);
    f64ToF32BitsRoundToOdd(values, wide);
    const bits = new Uint16Array(values.length);
    f32BitsToBf16Bits(wide, bits);
    const array = this.alloc(bits.length, 2);
    this.engine.context.uploadInto(array.pointer, new Uint8Array(bits.buffer));
    return array;
  }
}

/** The device address of element `offset` of a float32 array. */
function at(array: DeviceArray, offset: number): DevicePointer {
  return array.pointer + BigInt(offset * 4);
}
