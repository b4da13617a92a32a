import type { GpuEngine } from "../engine.js";
import type { DeviceArray } from "../forward/launch.js";
import type { BlockBuffers } from "./buffers.js";
import { gemmOn, launchCausalSoftmaxBackward, launchRmsNormBackwardAdd, launchRopeBackward, launchSwigluBackward } from "./launch.js";
import type { BlockGradPlan } from "./plan.js";

/**
 * model/block-grad/backward.ts backwardBlock on the device, step for step: from ∂loss/∂output in
 * scratch.dOutput and the tape forward-steps.ts left, adds ∂loss/∂W of the seven linears into
 * buffers.grads (beta = 1, as the CPU's gemmAdd into `grads`). Norm weights and biases are frozen
 * and the gradient stops at the q/k/v inputs, as the CPU's. The header of backward.ts has the
 * formulas; each step below names the CPU line it mirrors.
 */
export function backwardOnDevice(engine: GpuEngine, plan: BlockGradPlan, buffers: BlockBuffers, T: number): void {
  const { tape, scratch, frozen, weights, grads, status } = buffers;
  const { hidden: H, qWidth, kvWidth, intermediate: I, heads, kvHeads, headDim } = plan;
  // addWeightGrad: ∂W[out][in] += Σ_t ∂y[t][out]·x[t][in] = ∂yᵀ·x.
  const addWeightGrad = (key: "q" | "k" | "v" | "o" | "gate" | "up" | "down", dy: DeviceArray, x: DeviceArray): void => {
    const [outFeatures, inFeatures] = plan.shapes[key];
    gemmOn(engine, `${key} weight grad`, outFeatures, inFeatures, T, 1, { array: dy, ld: outFeatures, trans: true }, { array: x, ld: inFeatures }, 1, { array: grads[key], ld: inFeatures });
  };
  // inputGrad: ∂x[t][in] (+)= Σ_out ∂y[t][out]·W[out][in] = ∂y·W.
  const inputGrad = (key: "o" | "gate" | "up" | "down", dy: DeviceArray, dx: DeviceArray, beta: 0 | 1): void => {
    const [outFeatures, inFeatures] = plan.shapes[key];
    gemmOn(engine, `${key} input grad`, T, inFeatures, outFeatures, 1, { array: dy, ld: outFeatures }, { array: weights[key], ld: inFeatures }, beta, { array: dx, ld: inFeatures });
  };

  // MLP: output = h1 + mixed · Wdownᵀ.
  addWeightGrad("down", scratch.dOutput, tape.mixed);
  inputGrad("down", scratch.dOutput, scratch.dGate, 0);
  launchSwigluBackward(engine, tape.gate, tape.up, scratch.dGate, scratch.dUp, T * I);
  addWeightGrad("gate", scratch.dGate, tape.x2);
  addWeightGrad("up", scratch.dUp, tape.x2);
  inputGrad("gate", scratch.dGate, scratch.dX2, 0);
  inputGrad("up", scratch.dUp, scratch.dX2, 1);
  // Residual: h1 feeds the output directly and through the post-attention norm.
  engine.context.copy(scratch.dH1.pointer, scratch.dOutput.pointer, T * H * 8);
  launchRmsNormBackwardAdd(engine, scratch.dH1, scratch.dX2, tape.h1, tape.invRms2, frozen.postAttentionNorm, T, H, status);

  // Attention: h1 = input + attended · Woᵀ.
  addWeightGrad("o", scratch.dH1, tape.attended);
  inputGrad("o", scratch.dH1, scratch.dAttended, 0);
  // attentionBackward: ∂k and ∂v accumulate over each kv head's query group, so they start at 0;
  // every ∂q column block is written once (beta = 0).
  engine.context.zero(scratch.dk.pointer, T * kvWidth * 8);
  engine.context.zero(scratch.dv.pointer, T * kvWidth * 8);
  const group = heads / kvHeads;
  const c = 1 / Math.sqrt(headDim);
  for (let h = 0; h < heads; h++) {
    const kvOffset = Math.floor(h / group) * headDim;
    const qOffset = h * headDim;
    const probsOffset = h * T * T;
    const dOutH = { array: scratch.dAttended, offset: qOffset, ld: qWidth };
    // ∂v += Pᵀ ∂out_h
    gemmOn(engine, "dv", T, headDim, T, 1, { array: tape.probs, offset: probsOffset, ld: T, trans: true }, dOutH, 1, { array: scratch.dv, offset: kvOffset, ld: kvWidth });
    // ∂P = ∂out_h vᵀ, then ∂S in place (zero above the diagonal).
    gemmOn(engine, "dP", T, T, headDim, 1, dOutH, { array: tape.v, offset: kvOffset, ld: kvWidth, trans: true }, 0, { array: scratch.dScores, ld: T });
    launchCausalSoftmaxBackward(engine, scratch.dScores, tape.probs, probsOffset, T, status);
    // ∂q_h = c·∂S k,  ∂k += c·∂Sᵀ q_h
    gemmOn(engine, "dq", T, headDim, T, c, { array: scratch.dScores, ld: T }, { array: tape.k, offset: kvOffset, ld: kvWidth }, 0, { array: scratch.dq, offset: qOffset, ld: qWidth });
    gemmOn(engine, "dk", T, headDim, T, c, { array: scratch.dScores, ld: T, trans: true }, { array: tape.q, offset: qOffset, ld: qWidth }, 1, { array: scratch.dk, offset: kvOffset, ld: kvWidth });
  }
  launchRopeBackward(engine, scratch.dq, frozen.cos, frozen.sin, T, heads, headDim);
  launchRopeBackward(engine, scratch.dk, frozen.cos, frozen.sin, T, kvHeads, headDim);
  addWeightGrad("q", scratch.dq, tape.x1);
  addWeightGrad("k", scratch.dk, tape.x1);
  addWeightGrad("v", scratch.dv, tape.x1);
}
