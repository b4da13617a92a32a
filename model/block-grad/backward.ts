import { gemmAdd, type MatrixView } from "../../formats/second-order/matmul.js";
import type { RopeTable } from "../rope.js";
import type { BlockContext, BlockLinearWeights, BlockTape } from "./forward.js";

/**
 * Reverse mode through one decoder block (forward.ts), for SignRound's block-wise objective:
 * given ∂loss/∂output, adds ∂loss/∂W of the seven linears into `grads`. Norm weights and biases
 * are frozen (no gradient is formed for them) and the block's input is data, so the gradient
 * stops at the q/k/v inputs: ∂loss/∂input is never computed.
 *
 * Per token, with y = x·r·w (RMSNorm, r = 1/√(mean(x²) + eps)):
 *   ∂x_j = r·ĝ_j − (r³/n)·x_j·Σ_i ĝ_i·x_i,  ĝ = w ⊙ ∂y
 * SwiGLU m = silu(g)·u: ∂g = ∂m·u·σ(g)·(1 + g·(1 − σ(g))), ∂u = ∂m·silu(g).
 * Attention per head, P = softmax(c·q kᵀ) causal, out = P v:
 *   ∂P = ∂out vᵀ, ∂S = P ⊙ (∂P − rowsum(∂P ⊙ P)), ∂q = c·∂S k, ∂k += c·∂Sᵀ q, ∂v += Pᵀ ∂out
 * (kv heads shared by a query group accumulate over the group). Rope is a rotation, so its
 * backward is the rotation by −angle. For y = x Wᵀ: ∂W += ∂yᵀ x, ∂x = ∂y W.
 */

const view = (data: Float64Array, rowStride: number, offset = 0, transposed = false): MatrixView => ({ data, offset, rowStride, transposed });

/** Adds ∂loss/∂W of every linear into `grads` (same shapes as the weights). */
export function backwardBlock(ctx: BlockContext, weights: BlockLinearWeights, tape: BlockTape, dOutput: Float64Array, grads: BlockLinearWeights): void {
  const { config, layer } = ctx;
  const T = tape.tokens;
  const H = config.hiddenSize;
  const I = layer.gate.outFeatures;
  const qWidth = config.numHeads * config.headDim;
  const kvWidth = config.numKvHeads * config.headDim;

  // MLP: output = h1 + mixed · Wdownᵀ.
  addWeightGrad(grads.down, dOutput, tape.mixed, T, H, I);
  const dMixed = inputGrad(dOutput, weights.down, T, H, I);
  const dGate = new Float64Array(T * I);
  const dUp = new Float64Array(T * I);
  for (let i = 0; i < T * I; i++) {
    const g = tape.gate[i]!;
    const sigma = 1 / (1 + Math.exp(-g));
    dUp[i] = dMixed[i]! * g * sigma;
    dGate[i] = dMixed[i]! * tape.up[i]! * sigma * (1 + g * (1 - sigma));
  }
  addWeightGrad(grads.gate, dGate, tape.x2, T, I, H);
  addWeightGrad(grads.up, dUp, tape.x2, T, I, H);
  const dX2 = inputGrad(dGate, weights.gate, T, I, H);
  gemmAdd(view(dX2, H), view(dUp, I), view(weights.up, H), T, I, H);
  // Residual: h1 feeds the output directly and through the post-attention norm.
  const dH1 = dOutput.slice();
  rmsNormBackwardAdd(dH1, dX2, tape.h1, tape.invRms2, layer.postAttentionNorm, T, H);

  // Attention: h1 = input + attended · Woᵀ.
  addWeightGrad(grads.o, dH1, tape.attended, T, H, qWidth);
  const dAttended = inputGrad(dH1, weights.o, T, H, qWidth);
  const { dq, dk, dv } = attentionBackward(tape, dAttended, config.numHeads, config.numKvHeads, config.headDim);
  ropeBackward(dq, T, config.numHeads, ctx.rope);
  ropeBackward(dk, T, config.numKvHeads, ctx.rope);
  addWeightGrad(grads.q, dq, tape.x1, T, qWidth, H);
  addWeightGrad(grads.k, dk, tape.x1, T, kvWidth, H);
  addWeightGrad(grads.v, dv, tape.x1, T, kvWidth, H);
}

/** ∂W[out][in] += Σ_t ∂y[t][out]·x[t][in]. */
function addWeightGrad(grad: Float64Array, dy: Float64Array, x: Float64Array, tokens: number, outFeatures: number, inFeatures: number): void {
  gemmAdd(view(grad, inFeatures), view(dy, outFeatures, 0, true), view(x, inFeatures), outFeatures, tokens, inFeatures);
}

/** ∂x[t][in] = Σ_out ∂y[t][out]·W[out][in]. */
function inputGrad(dy: Float64Array, weight: Float64Array, tokens: number, outFeatures: number, inFeatures: number): Float64Array {
  const dx = new Float64Array(tokens * inFeatures);
  gemmAdd(view(dx, inFeatures), view(dy, outFeatures), view(weight, inFeatures), tokens, outFeatures, inFeatures);
  return dx;
}

/** dX += ∂(RMSNorm(x)·w)/∂x applied to dY (see the header). */
function rmsNormBackwardAdd(dX: Float64Array, dY: Float64Array, x: Float64Array, invRms: Float64Array, weight: Float64Array, tokens: number, size: number): void {
  for (let t = 0; t < tokens; t++) {
    const at = t * size;
    const r = invRms[t]!;
    let dot = 0;
    for (let i = 0; i < size; i++) dot += dY[at + i]! * weight[i]! * x[at + i]!;
    const coef = (r * r * r * dot) / size;
    for (let i = 0; i < size; i++) dX[at + i]! += r * dY[at + i]! * weight[i]! - coef * x[at + i]!;
  }
}

/** ∂q (rotated), ∂k (rotated, summed over each kv head's query group) and ∂v from ∂attended. */
function attentionBackward(tape: BlockTape, dOut: Float64Array, heads: number, kvHeads: number, headDim: number): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const T = tape.tokens;
  const qStride = heads * headDim;
  const kvStride = kvHeads * headDim;
  const dq = new Float64Array(T * qStride);
  const dk = new Float64Array(T * kvStride);
  const dv = new Float64Array(T * kvStride);
  const dScores = new Float64Array(T * T);
  const group = heads / kvHeads;
  const c = 1 / Math.sqrt(headDim);
  for (let h = 0; h < heads; h++) {
    const kvOffset = Math.floor(h / group) * headDim;
    const qOffset = h * headDim;
    const probs = view(tape.probs, T, h * T * T);
    // ∂v += Pᵀ ∂out_h
    gemmAdd(view(dv, kvStride, kvOffset), { ...probs, transposed: true }, view(dOut, qStride, qOffset), T, T, headDim);
    // ∂P = ∂out_h vᵀ, then ∂S in place (zero above the diagonal, where P is).
    dScores.fill(0);
    gemmAdd(view(dScores, T), view(dOut, qStride, qOffset), view(tape.v, kvStride, kvOffset, true), T, headDim, T);
    const P = tape.probs;
    const base = h * T * T;
    for (let t = 0; t < T; t++) {
      const row = t * T;
      let dot = 0;
      for (let s = 0; s <= t; s++) dot += dScores[row + s]! * P[base + row + s]!;
      for (let s = 0; s <= t; s++) dScores[row + s] = P[base + row + s]! * (dScores[row + s]! - dot);
      dScores.fill(0, row + t + 1, row + T);
    }
    gemmAdd(view(dq, qStride, qOffset), view(dScores, T), view(tape.k, kvStride, kvOffset), T, T, headDim, c);
    gemmAdd(view(dk, kvStride, kvOffset), view(dScores, T, 0, true), view(tape.q, qStride, qOffset), T, T, headDim, c);
  }
  return { dq, dk, dv };
}

/** Transpose of applyRope (rope.ts) in place: rotation by the opposite angle. */
function ropeBackward(dx: Float64Array, tokens: number, heads: number, table: RopeTable): void {
  const { headDim, cos, sin } = table;
  const half = headDim / 2;
  for (let t = 0; t < tokens; t++) {
    for (let h = 0; h < heads; h++) {
      const at = (t * heads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const cs = cos[t * half + i]!;
        const sn = sin[t * half + i]!;
        const a = dx[at + i]!;
        const b = dx[at + half + i]!;
        dx[at + i] = a * cs + b * sn;
        dx[at + half + i] = b * cs - a * sn;
      }
    }
  }
}
