import type { ModelConfig } from "../../converters/hf/config.js";
import { addInto, attention, linear } from "../llama-forward.js";
import type { DecoderLayerWeights, Linear } from "../llama-weights.js";
import { applyRope, type RopeTable } from "../rope.js";

/**
 * One decoder block's forward, arithmetic for arithmetic LlamaForward.layer (llama-forward.ts:
 * same products through gemmAdd, same RMSNorm, rope, softmax and SwiGLU expressions, so the
 * output is bit-identical), keeping what backward.ts needs: the inverse RMS of both norms,
 * every linear's input, the rotated q and k, v, the attention probabilities and the MLP's
 * gate/up pre-activations.
 *
 * The seven linear weights are passed apart from the block (`BlockLinearWeights`) so that
 * SignRound can run the same block with fake-quantized weights; norms and biases stay the
 * block's own (frozen).
 */

export const BLOCK_LINEARS = ["q", "k", "v", "o", "gate", "up", "down"] as const;
export type BlockLinearKey = (typeof BLOCK_LINEARS)[number];
/** A weight [out][in] row-major per linear of the block. */
export type BlockLinearWeights = Record<BlockLinearKey, Float64Array>;

/** What is fixed while a block is tuned: its shape, norms, biases and the rope table. */
export interface BlockContext {
  config: ModelConfig;
  layer: DecoderLayerWeights;
  /** Covers at least the longest window. */
  rope: RopeTable;
}

/** Activations of one window, [tokens][features] row-major, float64. */
export interface BlockTape {
  tokens: number;
  /** 1/√(mean(x²) + eps) per token, of the input and of the post-attention residual. */
  invRms1: Float64Array;
  invRms2: Float64Array;
  /** Inputs of q/k/v, o, gate/up and down. */
  x1: Float64Array;
  attended: Float64Array;
  x2: Float64Array;
  mixed: Float64Array;
  /** q and k after rope, v. */
  q: Float64Array;
  k: Float64Array;
  v: Float64Array;
  /** Softmax probabilities per query head, [heads][tokens][tokens] (zero above the diagonal). */
  probs: Float64Array;
  /** Residual stream after attention; gate and up pre-activations. */
  h1: Float64Array;
  gate: Float64Array;
  up: Float64Array;
  /** The block's output hidden state. */
  output: Float64Array;
}

/** The block's own weights, as BlockLinearWeights. */
export function blockWeights(layer: DecoderLayerWeights): BlockLinearWeights {
  return { q: layer.q.weight, k: layer.k.weight, v: layer.v.weight, o: layer.o.weight, gate: layer.gate.weight, up: layer.up.weight, down: layer.down.weight };
}

/** Runs the block on `input` ([tokens][hidden], left untouched) with `weights` in place of its own. */
export function forwardBlock(ctx: BlockContext, weights: BlockLinearWeights, input: Float64Array, tokens: number): BlockTape {
  const { config, layer, rope } = ctx;
  const hidden = config.hiddenSize;
  const withWeight = (l: Linear, weight: Float64Array): Linear => ({ ...l, weight });
  const invRms1 = new Float64Array(tokens);
  const x1 = rmsNormKeep(input, tokens, hidden, layer.inputNorm, config.rmsNormEps, invRms1);
  const q = linear(withWeight(layer.q, weights.q), x1, tokens);
  const k = linear(withWeight(layer.k, weights.k), x1, tokens);
  const v = linear(withWeight(layer.v, weights.v), x1, tokens);
  applyRope(q, tokens, config.numHeads, rope);
  applyRope(k, tokens, config.numKvHeads, rope);
  const probs = new Float64Array(config.numHeads * tokens * tokens);
  const attended = attention(q, k, v, tokens, config.numHeads, config.numKvHeads, config.headDim, probs);
  const h1 = input.slice();
  addInto(h1, linear(withWeight(layer.o, weights.o), attended, tokens));
  const invRms2 = new Float64Array(tokens);
  const x2 = rmsNormKeep(h1, tokens, hidden, layer.postAttentionNorm, config.rmsNormEps, invRms2);
  const gate = linear(withWeight(layer.gate, weights.gate), x2, tokens);
  const up = linear(withWeight(layer.up, weights.up), x2, tokens);
  const mixed = new Float64Array(gate.length);
  for (let i = 0; i < gate.length; i++) {
    const g = gate[i]!;
    mixed[i] = (g / (1 + Math.exp(-g))) * up[i]!;
  }
  const output = h1.slice();
  addInto(output, linear(withWeight(layer.down, weights.down), mixed, tokens));
  return { tokens, invRms1, invRms2, x1, attended, x2, mixed, q, k, v, probs, h1, gate, up, output };
}

/** llama-forward's rmsNorm (same expression order), also writing each token's inverse RMS. */
function rmsNormKeep(x: Float64Array, tokens: number, size: number, weight: Float64Array, eps: number, invRms: Float64Array): Float64Array {
  const out = new Float64Array(tokens * size);
  for (let t = 0; t < tokens; t++) {
    let squares = 0;
    for (let i = 0; i < size; i++) squares += x[t * size + i]! ** 2;
    const scale = 1 / Math.sqrt(squares / size + eps);
    invRms[t] = scale;
    for (let i = 0; i < size; i++) out[t * size + i] = x[t * size + i]! * scale * weight[i]!;
  }
  return out;
}
