import type { Hessian } from "../../formats/second-order/hessian.js";

export interface LayerErrors {
  /** mean((Ŵ − W)²) */
  weightMse: number;
  /**
   * tr(ΔW H ΔWᵀ) / tr(W H Wᵀ): the layer's output error relative to its output energy on the
   * calibration inputs (undefined without a Hessian). Scale-free, so layers and models compare.
   */
  relativeOutputError?: number;
}

/** Weight and Hessian-weighted errors of a quantized layer (W, Ŵ: [N][K] row-major). */
export function layerErrors(weight: Float32Array, quantized: Float32Array, N: number, K: number, hessian: Hessian | undefined): LayerErrors {
  let sum = 0;
  for (let i = 0; i < weight.length; i++) sum += (quantized[i]! - weight[i]!) ** 2;
  const weightMse = weight.length === 0 ? 0 : sum / weight.length;
  if (hessian === undefined) return { weightMse };
  const delta = new Float64Array(K);
  const w = new Float64Array(K);
  let errorEnergy = 0;
  let outputEnergy = 0;
  const h = hessian.data;
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < K; k++) {
      w[k] = weight[n * K + k]!;
      delta[k] = quantized[n * K + k]! - w[k]!;
    }
    errorEnergy += quadratic(h, delta, K);
    outputEnergy += quadratic(h, w, K);
  }
  return { weightMse, relativeOutputError: outputEnergy === 0 ? 0 : errorEnergy / outputEnergy };
}

/** xᵀ H x */
function quadratic(h: Float64Array, x: Float64Array, K: number): number {
  let total = 0;
  for (let i = 0; i < K; i++) {
    const xi = x[i]!;
    if (xi === 0) continue;
    let row = 0;
    const base = i * K;
    for (let j = 0; j < K; j++) row += h[base + j]! * x[j]!;
    total += xi * row;
  }
  return total;
}
