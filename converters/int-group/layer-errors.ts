import type { Hessian } from "../../formats/second-order/hessian.js";
import { matmulAdd } from "../../formats/second-order/matmul.js";

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
  // xᵀHx for every row of W and of ΔW, through the blocked product (N·K² multiply-adds each,
  // as much as a SignRound step: a scalar loop here would cost more than the quantizer).
  const rows = Math.max(1, Math.min(N, ROWS_PER_CHUNK));
  const w = new Float64Array(rows * K);
  const delta = new Float64Array(rows * K);
  const product = new Float64Array(rows * K);
  let errorEnergy = 0;
  let outputEnergy = 0;
  for (let n0 = 0; n0 < N; n0 += rows) {
    const count = Math.min(rows, N - n0);
    for (let i = 0; i < count * K; i++) {
      w[i] = weight[n0 * K + i]!;
      delta[i] = quantized[n0 * K + i]! - w[i]!;
    }
    errorEnergy += quadraticRows(delta, hessian.data, product, count, K);
    outputEnergy += quadraticRows(w, hessian.data, product, count, K);
  }
  return { weightMse, relativeOutputError: outputEnergy === 0 ? 0 : errorEnergy / outputEnergy };
}

const ROWS_PER_CHUNK = 256;

/** Σ over the first `count` rows x of xᵀ H x (H symmetric), using `product` as scratch. */
function quadraticRows(x: Float64Array, h: Float64Array, product: Float64Array, count: number, K: number): number {
  product.fill(0, 0, count * K);
  matmulAdd(product, x, h, count, K, K);
  let total = 0;
  for (let i = 0; i < count * K; i++) total += x[i]! * product[i]!;
  return total;
}
