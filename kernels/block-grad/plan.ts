import { KernelError, UsageError } from "../../formats/errors.js";
import { BLOCK_LINEARS, type BlockContext, type BlockLinearKey, type BlockLinearWeights } from "../../model/block-grad/forward.js";

/**
 * The shapes of one decoder block's GPU forward/backward (gpu-block-grad.ts), checked on the host
 * before anything is allocated: every config size, the block's norms, biases and linear shapes
 * against the config, the rotary table against the longest window, and the device elements the
 * buffers of a `maxTokens` window need. Pure, so the checks run (and are tested) without a GPU.
 * The kernels and gemmF64 trust these lengths: a short array would be read past its end on the
 * device, so a mismatch is refused here, naming the tensor.
 */

export interface BlockGradPlan {
  maxTokens: number;
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  /** heads · headDim: q's and the attention output's row length. */
  qWidth: number;
  /** kvHeads · headDim: k's and v's row length. */
  kvWidth: number;
  /** gate/up's output features (the CPU backward's I = layer.gate.outFeatures). */
  intermediate: number;
  eps: number;
  /** [outFeatures, inFeatures] per linear. */
  shapes: Record<BlockLinearKey, readonly [number, number]>;
  /** Float64 elements of the frozen parts uploaded once: norms, biases, the rotary table's first maxTokens rows. */
  frozenElements: number;
  /** Float64 elements of the seven weights (and as many of their gradients). */
  weightElements: number;
  /** Float64 elements of the tape and the backward's scratch for a maxTokens window. */
  activationElements: number;
}

function refuse(detail: string, tensor: string | undefined, expected: unknown, actual: unknown): KernelError {
  return new KernelError("LAUNCH_REFUSED", `gpu block grad: ${detail}`, { tensor, expected, actual });
}

function positive(name: string, value: number | undefined): number {
  if (!(value !== undefined && Number.isSafeInteger(value) && value >= 1)) throw refuse(`config ${name} must be a positive integer`, undefined, "≥ 1", value);
  return value;
}

export function planBlockGrad(ctx: BlockContext, maxTokens: number): BlockGradPlan {
  const { config, layer, rope } = ctx;
  if (!(Number.isSafeInteger(maxTokens) && maxTokens >= 1)) throw new UsageError("BAD_ARGUMENT", "the longest window must be a positive integer of tokens", { actual: maxTokens });
  const hidden = positive("hidden_size", config.hiddenSize);
  const heads = positive("num_attention_heads", config.numHeads);
  const kvHeads = positive("num_key_value_heads", config.numKvHeads);
  const headDim = positive("head_dim", config.headDim);
  const intermediate = positive("gate_proj out features", layer.gate.outFeatures);
  if (headDim % 2 !== 0) throw new UsageError("BAD_ARGUMENT", "rotary embedding needs an even head dimension", { actual: headDim });
  if (heads % kvHeads !== 0) throw refuse("num_attention_heads must be a multiple of num_key_value_heads", undefined, `a divisor of ${heads}`, kvHeads);
  const eps = config.rmsNormEps;
  if (!(Number.isFinite(eps) && eps >= 0)) throw refuse("rms_norm_eps must be finite and ≥ 0", undefined, "≥ 0", eps);
  const half = headDim / 2;
  // The CPU reads rope rows 0 … tokens−1: the table must cover the longest window.
  if (rope.headDim !== headDim) throw refuse("the rotary table is for another head dimension", undefined, headDim, rope.headDim);
  if (!(Number.isSafeInteger(rope.positions) && rope.positions >= maxTokens)) throw refuse("the rotary table covers fewer positions than the longest window", undefined, `≥ ${maxTokens}`, rope.positions);
  if (rope.cos.length < maxTokens * half || rope.sin.length < maxTokens * half) throw refuse("the rotary table is shorter than its positions", undefined, maxTokens * half, Math.min(rope.cos.length, rope.sin.length));

  const qWidth = heads * headDim;
  const kvWidth = kvHeads * headDim;
  const shapes: Record<BlockLinearKey, readonly [number, number]> = {
    q: [qWidth, hidden], k: [kvWidth, hidden], v: [kvWidth, hidden], o: [hidden, qWidth], gate: [intermediate, hidden], up: [intermediate, hidden], down: [hidden, intermediate],
  };
  let frozenElements = 2 * maxTokens * half;
  let weightElements = 0;
  const array = (name: string, values: Float64Array, length: number): void => {
    if (values.length !== length) throw refuse("tensor length does not match the block's shape", name, length, values.length);
  };
  array("input_layernorm.weight", layer.inputNorm, hidden);
  array("post_attention_layernorm.weight", layer.postAttentionNorm, hidden);
  frozenElements += 2 * hidden;
  for (const key of BLOCK_LINEARS) {
    const l = layer[key];
    const [outFeatures, inFeatures] = shapes[key];
    if (l.outFeatures !== outFeatures || l.inFeatures !== inFeatures) throw refuse("linear layer shape does not match config.json", l.name, `[${outFeatures}, ${inFeatures}]`, `[${l.outFeatures}, ${l.inFeatures}]`);
    if (l.bias !== undefined) {
      array(`${l.name}.bias`, l.bias, outFeatures);
      frozenElements += outFeatures;
    }
    weightElements += outFeatures * inFeatures;
  }

  const T = maxTokens;
  // Tape: x1, h1, x2, output; q, attended; k, v; gate, up, mixed; probs per head; both inverse RMS.
  // Scratch: dOutput, dX2, dH1; dAttended, dq; dk, dv; dGate, dUp; one head's dScores.
  const tape = 4 * T * hidden + 2 * T * qWidth + 2 * T * kvWidth + 3 * T * intermediate + heads * T * T + 2 * T;
  const scratch = 3 * T * hidden + 2 * T * qWidth + 2 * T * kvWidth + 2 * T * intermediate + T * T;
  const activationElements = tape + scratch;
  if (!Number.isSafeInteger(activationElements)) throw refuse("the activations of one window are past the safe integers", undefined, "< 2^53", activationElements);
  return { maxTokens, hidden, heads, kvHeads, headDim, qWidth, kvWidth, intermediate, eps, shapes, frozenElements, weightElements, activationElements };
}

/** Seven weights of the block's shapes (the kernels read whole [out][in] arrays). */
export function checkBlockWeights(plan: BlockGradPlan, weights: BlockLinearWeights): void {
  for (const key of BLOCK_LINEARS) {
    const [outFeatures, inFeatures] = plan.shapes[key];
    const w = weights[key];
    if (!(w instanceof Float64Array) || w.length !== outFeatures * inFeatures) throw refuse(`the ${key} weight has another size than the block's`, key, outFeatures * inFeatures, w?.length);
  }
}

/** A window the block can run: 1 … maxTokens tokens of `hidden` values each; the CPU's UsageError. */
export function checkWindow(plan: BlockGradPlan, values: Float64Array, tokens: number, what: string): void {
  if (!(Number.isSafeInteger(tokens) && tokens >= 1 && tokens <= plan.maxTokens)) throw new UsageError("BAD_ARGUMENT", `${what}: token count outside 1 … ${plan.maxTokens}`, { actual: tokens, expected: `1 … ${plan.maxTokens}` });
  if (values.length !== tokens * plan.hidden) throw new UsageError("BAD_ARGUMENT", `${what} must hold tokens × hidden values`, { expected: tokens * plan.hidden, actual: values.length });
}
