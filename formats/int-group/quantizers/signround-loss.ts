import type { Hessian } from "../../second-order/hessian.js";
import { matmulAdd } from "../../second-order/matmul.js";

/**
 * SignRound's loss on the CPU: the normaliser and the (normalised) layer loss with its gradient
 * factor ΔW·H. signround-grad.ts's SignRoundLayer evaluates it; kernels/signround sums the same
 * per-row partials in the same order on the GPU.
 */

/**
 * Loss normaliser: N·tr(H) with a Hessian, N·K without. Either way the loss is in "weight MSE"
 * units: the two modes agree when H ∝ I, and the number does not depend on the layer's size,
 * on how many tokens built H, or on H's scale.
 */
export function lossNormaliser(outFeatures: number, inFeatures: number, hessian: Hessian | undefined): number {
  if (hessian === undefined) return Math.max(outFeatures * inFeatures, 1);
  let trace = 0;
  for (let k = 0; k < inFeatures; k++) trace += hessian.data[k * inFeatures + k]!;
  return trace > 0 ? outFeatures * trace : 1;
}

/**
 * tr(ΔW H ΔWᵀ) / norm (= ‖X ΔWᵀ‖² / norm for H = XᵀX), or Σ ΔW² / norm without H.
 * `grad` receives ΔW·H (pass `delta` itself when there is no H); `norm` defaults to lossNormaliser.
 * Summed per row (columns in order), then the row sums in row order: the order the GPU's
 * per-row partials (kernels/signround) are summed in, so that both give the same bits.
 */
export function layerLoss(delta: Float64Array, outFeatures: number, inFeatures: number, hessian: Hessian | undefined, grad?: Float64Array, norm?: number): number {
  const scale = norm ?? lossNormaliser(outFeatures, inFeatures, hessian);
  let product = delta;
  if (hessian !== undefined) {
    product = grad !== undefined && grad !== delta ? grad.fill(0) : new Float64Array(delta.length);
    matmulAdd(product, delta, hessian.data, outFeatures, inFeatures, inFeatures);
  }
  let sum = 0;
  for (let row = 0; row < outFeatures; row++) {
    let rowSum = 0;
    const end = (row + 1) * inFeatures;
    for (let i = row * inFeatures; i < end; i++) rowSum += delta[i]! * product[i]!;
    sum += rowSum;
  }
  return sum / scale;
}
