import { UsageError } from "../formats/errors.js";
import type { ModelConfig } from "../converters/hf/config.js";
import { gemmAdd } from "../formats/second-order/matmul.js";
import type { DecoderLayerWeights, Linear, LlamaWeights } from "./llama-weights.js";
import { applyRope, inverseFrequencies, ropeTable, type RopeTable } from "./rope.js";

/**
 * The Llama-family decoder forward on the CPU, the reference every other path is held to
 * (transformers' LlamaForCausalLM, also Mistral and Qwen2 with qkv bias): RMSNorm, rotary
 * embedding (rope.ts), grouped-query causal attention, SwiGLU MLP, tied or untied head.
 *
 * Activations are Float64Arrays, [tokens][features] row-major, one sequence at a time (a
 * window: no KV cache, every position attends to the ones before it). Products go through the
 * second-order engine's packed GEMM (formats/second-order/matmul.ts), so float32 weights meet
 * float64 arithmetic: the result is the fp32 model computed more exactly than fp32 itself.
 *
 * `observe` sees the input of every linear layer once per distinct input (q/k/v share the
 * q_proj input, gate/up share gate_proj's): what calibration accumulates into Hessians.
 */

export type LinearInputObserver = (linear: Linear, input: Float64Array, tokens: number) => void;

export class LlamaForward {
  readonly weights: LlamaWeights;
  private readonly rope: RopeTable;

  /** `maxTokens`: the longest sequence this instance will run (sizes the rope table). */
  constructor(weights: LlamaWeights, maxTokens: number, file = "config.json") {
    this.weights = weights;
    const { config } = weights;
    if (config.headDim % 2 !== 0) throw new UsageError("BAD_ARGUMENT", "rotary embedding needs an even head dimension", { actual: config.headDim });
    checkSlidingWindow(config, maxTokens, file);
    this.rope = ropeTable(inverseFrequencies(config, file), config.headDim, maxTokens);
  }

  /** Hidden states [tokens][hidden] after the embedding. Token ids must be < vocab. */
  embed(ids: Int32Array): Float64Array {
    const { embed, config } = this.weights;
    const H = config.hiddenSize;
    const hidden = new Float64Array(ids.length * H);
    ids.forEach((id, t) => {
      if (!(id >= 0 && id < config.vocabSize)) throw new UsageError("BAD_ARGUMENT", `token id at position ${t} is outside the vocabulary`, { actual: id, expected: `0 … ${config.vocabSize - 1}` });
      hidden.set(embed.subarray(id * H, (id + 1) * H), t * H);
    });
    return hidden;
  }

  /** Runs decoder layer `index` on `hidden` in place (the residual stream). */
  layer(index: number, hidden: Float64Array, tokens: number, observe?: LinearInputObserver): void {
    const w = this.weights.layers[index]!;
    const { config } = this.weights;
    const x = rmsNorm(hidden, tokens, config.hiddenSize, w.inputNorm, config.rmsNormEps);
    observe?.(w.q, x, tokens);
    const q = linear(w.q, x, tokens);
    const k = linear(w.k, x, tokens);
    const v = linear(w.v, x, tokens);
    applyRope(q, tokens, config.numHeads, this.rope);
    applyRope(k, tokens, config.numKvHeads, this.rope);
    const attended = attention(q, k, v, tokens, config.numHeads, config.numKvHeads, config.headDim);
    observe?.(w.o, attended, tokens);
    addInto(hidden, linear(w.o, attended, tokens));
    this.mlp(w, hidden, tokens, observe);
  }

  /** Final norm and head: logits [tokens][vocab]. */
  logits(hidden: Float64Array, tokens: number): Float64Array {
    const { config, finalNorm, head } = this.weights;
    const x = rmsNorm(hidden, tokens, config.hiddenSize, finalNorm, config.rmsNormEps);
    const out = new Float64Array(tokens * config.vocabSize);
    gemmAdd({ data: out, offset: 0, rowStride: config.vocabSize }, { data: x, offset: 0, rowStride: config.hiddenSize }, { data: head, offset: 0, rowStride: config.hiddenSize, transposed: true }, tokens, config.hiddenSize, config.vocabSize);
    return out;
  }

  /** Logits of a whole sequence. */
  run(ids: Int32Array, observe?: LinearInputObserver): Float64Array {
    const hidden = this.embed(ids);
    for (let i = 0; i < this.weights.layers.length; i++) this.layer(i, hidden, ids.length, observe);
    return this.logits(hidden, ids.length);
  }

  private mlp(w: DecoderLayerWeights, hidden: Float64Array, tokens: number, observe?: LinearInputObserver): void {
    const { config } = this.weights;
    const x = rmsNorm(hidden, tokens, config.hiddenSize, w.postAttentionNorm, config.rmsNormEps);
    observe?.(w.gate, x, tokens);
    const gate = linear(w.gate, x, tokens);
    const up = linear(w.up, x, tokens);
    for (let i = 0; i < gate.length; i++) {
      const g = gate[i]!;
      gate[i] = (g / (1 + Math.exp(-g))) * up[i]!;
    }
    observe?.(w.down, gate, tokens);
    addInto(hidden, linear(w.down, gate, tokens));
  }
}

/** x · rsqrt(mean(x²) + eps) · weight, per token. */
export function rmsNorm(x: Float64Array, tokens: number, size: number, weight: Float64Array, eps: number): Float64Array {
  const out = new Float64Array(tokens * size);
  for (let t = 0; t < tokens; t++) {
    let squares = 0;
    for (let i = 0; i < size; i++) squares += x[t * size + i]! ** 2;
    const scale = 1 / Math.sqrt(squares / size + eps);
    for (let i = 0; i < size; i++) out[t * size + i] = x[t * size + i]! * scale * weight[i]!;
  }
  return out;
}

/** y = x · Wᵀ + b for x [tokens][in]. */
export function linear(layer: Linear, x: Float64Array, tokens: number): Float64Array {
  const { inFeatures, outFeatures, weight, bias } = layer;
  const y = new Float64Array(tokens * outFeatures);
  if (bias !== undefined) for (let t = 0; t < tokens; t++) y.set(bias, t * outFeatures);
  gemmAdd({ data: y, offset: 0, rowStride: outFeatures }, { data: x, offset: 0, rowStride: inFeatures }, { data: weight, offset: 0, rowStride: inFeatures, transposed: true }, tokens, inFeatures, outFeatures);
  return y;
}

/**
 * Causal grouped-query attention: query head h reads key/value head ⌊h / (heads/kvHeads)⌋,
 * scores scaled by 1/√headDim, softmax over positions ≤ t. Returns [tokens][heads·headDim].
 * With `probs` ([heads][tokens][tokens]), each head's probabilities are left there.
 */
export function attention(q: Float64Array, k: Float64Array, v: Float64Array, tokens: number, heads: number, kvHeads: number, headDim: number, probs?: Float64Array): Float64Array {
  const qStride = heads * headDim;
  const kvStride = kvHeads * headDim;
  const out = new Float64Array(tokens * qStride);
  const scratch = probs === undefined ? new Float64Array(tokens * tokens) : undefined;
  const group = heads / kvHeads;
  for (let h = 0; h < heads; h++) {
    const kvOffset = Math.floor(h / group) * headDim;
    // One head's scores, then its probabilities: kept per head in `probs` when given (the block backward reads them).
    const scores = scratch ?? probs!.subarray(h * tokens * tokens, (h + 1) * tokens * tokens);
    scores.fill(0);
    gemmAdd({ data: scores, offset: 0, rowStride: tokens }, { data: q, offset: h * headDim, rowStride: qStride }, { data: k, offset: kvOffset, rowStride: kvStride, transposed: true }, tokens, headDim, tokens, 1 / Math.sqrt(headDim));
    for (let t = 0; t < tokens; t++) {
      const row = t * tokens;
      let max = -Infinity;
      for (let s = 0; s <= t; s++) max = Math.max(max, scores[row + s]!);
      let sum = 0;
      for (let s = 0; s <= t; s++) sum += scores[row + s] = Math.exp(scores[row + s]! - max);
      for (let s = 0; s <= t; s++) scores[row + s]! /= sum;
      // Future positions carry no weight.
      scores.fill(0, row + t + 1, row + tokens);
    }
    gemmAdd({ data: out, offset: h * headDim, rowStride: qStride }, { data: scores, offset: 0, rowStride: tokens }, { data: v, offset: kvOffset, rowStride: kvStride }, tokens, tokens, headDim);
  }
  return out;
}

/** target += source, element by element (the residual stream). */
export function addInto(target: Float64Array, source: Float64Array): void {
  for (let i = 0; i < target.length; i++) target[i]! += source[i]!;
}

/**
 * Refuses windows longer than the model's attention window: the forward attends to every earlier
 * position, which equals sliding-window attention only while the window holds at most
 * `slidingWindow` tokens (Mistral v0.1's 4096, for instance).
 */
export function checkSlidingWindow(config: ModelConfig, maxTokens: number, file: string): void {
  const window = config.slidingWindow;
  if (window !== undefined && maxTokens > window) {
    throw new UsageError("BAD_ARGUMENT", `${file}: windows of ${maxTokens} tokens exceed the model's sliding_window of ${window}; lmpack's forward has full causal attention only, so it runs windows of at most ${window} tokens (--ctx, --seq-len)`, { expected: `≤ ${window}`, actual: maxTokens });
  }
}
