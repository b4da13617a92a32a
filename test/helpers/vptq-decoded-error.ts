import { halfPrecisionValues } from "../../formats/dense/float-bits.js";
import type { Hessian } from "../../formats/second-order/index.js";
import { dequantizeVptq } from "../../formats/vptq/reference.js";
import type { VptqTensor } from "../../formats/vptq/types.js";

/** tr(ΔW·(H + damp·I)·ΔWᵀ) of the reference decode (CUDA semantics) of `t` against `weight`. */
export function decodedError(t: VptqTensor, weight: Float32Array, h: Hessian, damp = 0): number {
  const { outFeatures: m, inFeatures: n } = t;
  const decoded = dequantizeVptq(t);
  const values = halfPrecisionValues(t.dtype);
  const delta = new Float64Array(n);
  let total = 0;
  for (let r = 0; r < m; r++) {
    for (let j = 0; j < n; j++) delta[j] = values[decoded[r * n + j]!]! - weight[r * n + j]!;
    for (let i = 0; i < n; i++) {
      let s = damp * delta[i]!;
      for (let j = 0; j < n; j++) s += h.data[i * n + j]! * delta[j]!;
      total += delta[i]! * s;
    }
  }
  return total;
}
