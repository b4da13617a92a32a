import { KernelError } from "../../formats/errors.js";
import type { DevicePointer } from "../cuda/driver.js";
import type { GpuEngine } from "../engine.js";
import { gemmF64, gemmF64Batched } from "../linalg/dgemm.js";
import type { DeviceLinear } from "./device-model.js";
import { launchBroadcastRows, launchCausalSoftmax, type DeviceArray } from "./launch.js";
import type { ForwardPlan } from "./plan.js";
import type { LayerActivations } from "./resident-states.js";

/** The GPU forward's two product steps (gpu-forward.ts runLayer), over one window or a batch of them. */

/**
 * y [tokens][out] = x · Wᵀ + b, or y += x · Wᵀ + b into the residual stream (`accumulate`: the
 * CPU's addInto of linear's result, folded into the product as beta = 1).
 */
export function linearOn(engine: GpuEngine, layer: DeviceLinear, x: DeviceArray, y: DeviceArray, tokens: number, accumulate: boolean): void {
  const { inFeatures, outFeatures } = layer;
  if (x.elements < tokens * inFeatures || y.elements < tokens * outFeatures) throw new KernelError("LAUNCH_REFUSED", "gpu forward: a linear layer's activations are shorter than the window", { expected: [tokens * inFeatures, tokens * outFeatures], actual: [x.elements, y.elements] });
  if (layer.bias !== undefined) launchBroadcastRows(engine, y, layer.bias, tokens, outFeatures, accumulate);
  const beta = accumulate || layer.bias !== undefined ? 1 : 0;
  gemmF64(engine, { m: tokens, n: outFeatures, k: inFeatures, alpha: 1, beta, a: x.pointer, lda: inFeatures, b: layer.weight.pointer, ldb: inFeatures, transB: true, c: y.pointer, ldc: outFeatures });
}

/**
 * llama-forward.ts attention, head by head: scores = Q_h·K_gᵀ / √headDim (g = ⌊h / (heads /
 * kvHeads)⌋), the causal softmax, then attended[:, h] = P·V_g. Q, K, V and the output are read
 * and written in place through their row strides (qOut, kvOut), as the CPU's gemmAdd views.
 * Several windows back to back are one strided batch per product (window w's scores at w·T²); a
 * batch of one is gemmF64's own call.
 */
export function attentionOn(engine: GpuEngine, plan: ForwardPlan, act: LayerActivations, T: number, windows: number): void {
  const { heads, kvHeads, headDim, qOut, kvOut } = plan;
  const group = heads / kvHeads;
  const scale = 1 / Math.sqrt(headDim);
  if (act.scores.elements < windows * T * T) throw new KernelError("LAUNCH_REFUSED", "gpu forward: the scores buffer is smaller than the batch's", { expected: windows * T * T, actual: act.scores.elements });
  const strides = (a: number, b: number, c: number) => ({ batch: windows, strideA: a, strideB: b, strideC: c });
  for (let h = 0; h < heads; h++) {
    const kvOffset = Math.floor(h / group) * headDim;
    gemmF64Batched(engine, { m: T, n: T, k: headDim, alpha: scale, beta: 0, a: at(act.q, h * headDim), lda: qOut, b: at(act.k, kvOffset), ldb: kvOut, transB: true, c: act.scores.pointer, ldc: T, ...strides(T * qOut, T * kvOut, T * T) });
    launchCausalSoftmax(engine, act.scores, T, act.status, windows);
    gemmF64Batched(engine, { m: T, n: headDim, k: T, alpha: 1, beta: 0, a: act.scores.pointer, lda: T, b: at(act.v, kvOffset), ldb: kvOut, c: at(act.attended, h * headDim), ldc: qOut, ...strides(T * T, T * kvOut, T * qOut) });
  }
}

/** The device address of element `offset` of a float64 array. */
function at(array: DeviceArray, offset: number): DevicePointer {
  return array.pointer + BigInt(offset * 8);
}
