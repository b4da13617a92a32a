import { KernelError, UsageError } from "../../formats/errors.js";
import type { Linear, LlamaWeights } from "../../model/llama-weights.js";

/**
 * The shapes of the GPU forward (gpu-forward.ts), checked on the host before anything is
 * allocated: every config size, every weight's length against the config, and the device bytes
 * the weights and the activations of a `maxTokens` window need. Pure, so the checks run (and are
 * tested) without a GPU. The kernels and gemmF64 trust these lengths: a short array would be read
 * past its end on the device, so a mismatch is refused here, naming the tensor.
 */

export interface ForwardPlan {
  maxTokens: number;
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  /** heads · headDim: q's and the attention output's row length. */
  qOut: number;
  /** kvHeads · headDim: k's and v's row length. */
  kvOut: number;
  intermediate: number;
  vocab: number;
  layers: number;
  eps: number;
  tiedHead: boolean;
  /** Float64 elements of every weight uploaded (a tied head counted once). */
  weightElements: number;
  /** Float64 elements of every activation buffer, the rotary table included. */
  activationElements: number;
}

function refuse(detail: string, tensor: string | undefined, expected: unknown, actual: unknown): KernelError {
  return new KernelError("LAUNCH_REFUSED", `gpu forward: ${detail}`, { tensor, expected, actual });
}

function positive(name: string, value: number | undefined): number {
  if (!(value !== undefined && Number.isSafeInteger(value) && value >= 1)) throw refuse(`config ${name} must be a positive integer`, undefined, "≥ 1", value);
  return value;
}

export function planForward(weights: LlamaWeights, maxTokens: number): ForwardPlan {
  const { config } = weights;
  if (!(Number.isSafeInteger(maxTokens) && maxTokens >= 1)) throw new UsageError("BAD_ARGUMENT", "the longest window must be a positive integer of tokens", { actual: maxTokens });
  const hidden = positive("hidden_size", config.hiddenSize);
  const heads = positive("num_attention_heads", config.numHeads);
  const kvHeads = positive("num_key_value_heads", config.numKvHeads);
  const headDim = positive("head_dim", config.headDim);
  const intermediate = positive("intermediate_size", config.intermediateSize);
  const vocab = positive("vocab_size", config.vocabSize);
  const layers = positive("num_hidden_layers", config.numLayers);
  // The CPU forward's refusal, with its code: rotary pairs i with i + headDim/2.
  if (headDim % 2 !== 0) throw new UsageError("BAD_ARGUMENT", "rotary embedding needs an even head dimension", { actual: headDim });
  if (heads % kvHeads !== 0) throw refuse("num_attention_heads must be a multiple of num_key_value_heads", undefined, `a divisor of ${heads}`, kvHeads);
  // int32 token ids: the vocabulary must be indexable by one.
  if (vocab > 2 ** 31 - 1) throw refuse("the vocabulary is larger than an int32 token id can index", undefined, `≤ ${2 ** 31 - 1}`, vocab);
  const eps = config.rmsNormEps;
  if (!(Number.isFinite(eps) && eps >= 0)) throw refuse("rms_norm_eps must be finite and ≥ 0", undefined, "≥ 0", eps);
  if (weights.layers.length !== layers) throw refuse("the weights hold another number of layers than config.json", undefined, layers, weights.layers.length);

  const qOut = heads * headDim;
  const kvOut = kvHeads * headDim;
  let weightElements = 0;
  const array = (name: string, values: Float64Array, length: number): void => {
    if (values.length !== length) throw refuse("tensor length does not match config.json", name, length, values.length);
    weightElements += length;
  };
  const linear = (layer: Linear, outFeatures: number, inFeatures: number): void => {
    if (layer.outFeatures !== outFeatures || layer.inFeatures !== inFeatures) throw refuse("linear layer shape does not match config.json", layer.name, `[${outFeatures}, ${inFeatures}]`, `[${layer.outFeatures}, ${layer.inFeatures}]`);
    array(`${layer.name}.weight`, layer.weight, outFeatures * inFeatures);
    if (layer.bias !== undefined) array(`${layer.name}.bias`, layer.bias, outFeatures);
  };
  weights.layers.forEach((layer, i) => {
    array(`model.layers.${i}.input_layernorm.weight`, layer.inputNorm, hidden);
    linear(layer.q, qOut, hidden);
    linear(layer.k, kvOut, hidden);
    linear(layer.v, kvOut, hidden);
    linear(layer.o, hidden, qOut);
    array(`model.layers.${i}.post_attention_layernorm.weight`, layer.postAttentionNorm, hidden);
    linear(layer.gate, intermediate, hidden);
    linear(layer.up, intermediate, hidden);
    linear(layer.down, hidden, intermediate);
  });
  array("model.embed_tokens.weight", weights.embed, vocab * hidden);
  array("model.norm.weight", weights.finalNorm, hidden);
  const tiedHead = weights.head === weights.embed;
  if (!tiedHead) array("lm_head.weight", weights.head, vocab * hidden);

  const T = maxTokens;
  // hidden + normed, q + attended, k + v, gate + up, one head's scores, logits, nll, cos + sin.
  const activationElements = 2 * T * hidden + 2 * T * qOut + 2 * T * kvOut + 2 * T * intermediate + T * T + T * vocab + T + T * headDim;
  if (!Number.isSafeInteger(activationElements)) throw refuse("the activations of one window are past the safe integers", undefined, "< 2^53", activationElements);
  return { maxTokens, hidden, heads, kvHeads, headDim, qOut, kvOut, intermediate, vocab, layers, eps, tiedHead, weightElements, activationElements };
}

/**
 * A window the forward can run: at most `maxTokens` ids, each inside the vocabulary. The same
 * UsageError BAD_ARGUMENT the CPU forward's embed() gives, here before anything is launched.
 */
export function checkWindowIds(ids: Int32Array, plan: ForwardPlan): void {
  if (ids.length > plan.maxTokens) throw new UsageError("BAD_ARGUMENT", `the window has ${ids.length} tokens, more than the ${plan.maxTokens} this forward was sized for`, { actual: ids.length, expected: `≤ ${plan.maxTokens}` });
  ids.forEach((id, t) => {
    if (!(id >= 0 && id < plan.vocab)) throw new UsageError("BAD_ARGUMENT", `token id at position ${t} is outside the vocabulary`, { actual: id, expected: `0 … ${plan.vocab - 1}` });
  });
}
