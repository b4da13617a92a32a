import type { GpuEngine } from "../engine.js";
import { launchBroadcastRows, launchCausalSoftmax, launchRope, launchSwiglu, type DeviceArray } from "../forward/launch.js";
import type { BlockBuffers } from "./buffers.js";
import { gemmOn, launchRmsNormKeep, sliceFrom } from "./launch.js";
import type { BlockGradPlan } from "./plan.js";

/**
 * model/block-grad/forward.ts forwardBlock on the device, step for step, with the window's input
 * already in tape.h1 (the residual stream starts as the input, as the CPU's input.slice()) and the
 * weights in buffers.weights. Leaves the whole tape on the device for backward-steps.ts.
 *
 * The products run through gemmF64 in their own summation order, and a linear with a bias that
 * feeds the residual stream adds the bias to the stream first (the CPU adds bias + x·Wᵀ to it):
 * the output agrees with the CPU's to float64 rounding, not bit for bit.
 */
export function forwardOnDevice(engine: GpuEngine, plan: BlockGradPlan, buffers: BlockBuffers, T: number): void {
  const { tape, frozen, weights, status } = buffers;
  const { hidden: H, qWidth, kvWidth, intermediate: I, heads, kvHeads, headDim } = plan;
  // y [T][out] = x · Wᵀ (+ bias), or y += x · Wᵀ (+ bias) into the residual stream.
  const linear = (key: "q" | "k" | "v" | "o" | "gate" | "up" | "down", x: DeviceArray, y: DeviceArray, accumulate: boolean): void => {
    const [outFeatures, inFeatures] = plan.shapes[key];
    const bias = frozen.bias[key];
    if (bias !== undefined) launchBroadcastRows(engine, y, bias, T, outFeatures, accumulate);
    const beta = accumulate || bias !== undefined ? 1 : 0;
    gemmOn(engine, `${key} forward`, T, outFeatures, inFeatures, 1, { array: x, ld: inFeatures }, { array: weights[key], ld: inFeatures, trans: true }, beta, { array: y, ld: outFeatures });
  };

  launchRmsNormKeep(engine, tape.h1, frozen.inputNorm, tape.x1, tape.invRms1, T, H, plan.eps, status);
  linear("q", tape.x1, tape.q, false);
  linear("k", tape.x1, tape.k, false);
  linear("v", tape.x1, tape.v, false);
  launchRope(engine, tape.q, frozen.cos, frozen.sin, T, heads, headDim);
  launchRope(engine, tape.k, frozen.cos, frozen.sin, T, kvHeads, headDim);

  // model/block-grad forwardBlock's attention (llama-forward.ts attention with probs kept), head by head: P_h = causal softmax(Q_h·K_gᵀ / √headDim) kept in probs, then
  // attended[:, h] = P_h·V_g (g = ⌊h / (heads / kvHeads)⌋).
  const group = heads / kvHeads;
  const scale = 1 / Math.sqrt(headDim);
  for (let h = 0; h < heads; h++) {
    const kvOffset = Math.floor(h / group) * headDim;
    const probsOffset = h * T * T;
    gemmOn(engine, "scores", T, T, headDim, scale, { array: tape.q, offset: h * headDim, ld: qWidth }, { array: tape.k, offset: kvOffset, ld: kvWidth, trans: true }, 0, { array: tape.probs, offset: probsOffset, ld: T });
    launchCausalSoftmax(engine, sliceFrom(tape.probs, probsOffset), T, status);
    gemmOn(engine, "P·V", T, headDim, T, 1, { array: tape.probs, offset: probsOffset, ld: T }, { array: tape.v, offset: kvOffset, ld: kvWidth }, 0, { array: tape.attended, offset: h * headDim, ld: qWidth });
  }
  // h1 = input + attended · Woᵀ (+ bias), in place on the input.
  linear("o", tape.attended, tape.h1, true);

  launchRmsNormKeep(engine, tape.h1, frozen.postAttentionNorm, tape.x2, tape.invRms2, T, H, plan.eps, status);
  linear("gate", tape.x2, tape.gate, false);
  linear("up", tape.x2, tape.up, false);
  // mixed = silu(gate) · up, keeping gate: forward.cu's SwiGLU works in place, so on a copy.
  engine.context.copy(tape.mixed.pointer, tape.gate.pointer, T * I * 8);
  launchSwiglu(engine, tape.mixed, tape.up, T * I);
  // output = h1 + mixed · Wdownᵀ (+ bias).
  engine.context.copy(tape.output.pointer, tape.h1.pointer, T * H * 8);
  linear("down", tape.mixed, tape.output, true);
}
