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

/** tr(ΔW H ΔWᵀ) and tr(W H Wᵀ) of a quantized layer. */
export interface LayerEnergies {
  errorEnergy: number;
  outputEnergy: number;
}

/**
 * Computes both quadratic forms of a layer (W, Ŵ: [N][K] row-major, H: K×K): N·K² multiply-adds
 * each, as much as a SignRound step. `cpuLayerEnergies` is the reference; the GPU's
 * (kernels/linalg/energies-gpu.ts) sums the products in cuBLAS's order, so the two agree to
 * float64 rounding, not bit for bit; the figure is a report, not part of any packed output.
 */
export type LayerEnergyBackend = (weight: Float32Array, quantized: Float32Array, N: number, K: number, hessian: Hessian) => LayerEnergies;

/** Weight and Hessian-weighted errors of a quantized layer (W, Ŵ: [N][K] row-major). */
export function layerErrors(weight: Float32Array, quantized: Float32Array, N: number, K: number, hessian: Hessian | undefined, energies: LayerEnergyBackend = cpuLayerEnergies): LayerErrors {
  let sum = 0;
  for (let i = 0; i < weight.length; i++) sum += (quantized[i]! - weight[i]!) ** 2;
  const weightMse = weight.length === 0 ? 0 : sum / weight.length;
  if (hessian === undefined) return { weightMse };
  const { errorEnergy, outputEnergy } = energies(weight, quantized, N, K, hessian);
  return { weightMse, relativeOutputError: outputEnergy === 0 ? 0 : errorEnergy / outputEnergy };
}

/** xᵀHx summed over every row of W and of ΔW, through the blocked product (a scalar loop would cost more than the quantizer). */
export function cpuLayerEnergies(weight: Float32Array, quantized: Float32Array, N: number, K: number, hessian: Hessian): LayerEnergies {
  const rows = Math.max(1, Math.min(N, ROWS_PER_CHUNK));
  const w = new Float64Array(rows * K);
  const delta = new Float64Array(rows * K);
  const product = new Float64Array(rows * K);
  let errorEnergy = 0;
  let outputEnergy = 0;
  for (let n0 = 0; n0 < N; n0 += rows) {
    const count = Math.min(rows, N - n0);
    fillRows(weight, quantized, n0 * K, count * K, w, delta);
    errorEnergy += quadraticRows(delta, hessian.data, product, count, K);
    outputEnergy += quadraticRows(w, hessian.data, product, count, K);
  }
  return { errorEnergy, outputEnergy };
}

const ROWS_PER_CHUNK = 256;

/** w = W[from …] and delta = Ŵ − W there, `elements` values each (element offsets), widened to float64. */
export function fillRows(weight: Float32Array, quantized: Float32Array, from: number, elements: number, w: Float64Array, delta: Float64Array): void {
  for (let i = 0; i < elements; i++) {
    w[i] = weight[from + i]!;
    delta[i] = quantized[from + i]! - w[i]!;
  }
}

/** Σ over the first `count` rows x of xᵀ H x (H symmetric), using `product` as scratch. */
function quadraticRows(x: Float64Array, h: Float64Array, product: Float64Array, count: number, K: number): number {
  product.fill(0, 0, count * K);
  matmulAdd(product, x, h, count, K, K);
  return rowDots(x, product, count * K);
}

/** Σ x[i]·p[i] over the first `elements` values, in index order. */
export function rowDots(x: Float64Array, p: Float64Array, elements: number): number {
  let total = 0;
  for (let i = 0; i < elements; i++) total += x[i]! * p[i]!;
  return total;
}
