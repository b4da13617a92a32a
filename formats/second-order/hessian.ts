/**
 * Second-order statistics of a linear layer's inputs: H = XᵀX over calibration tokens
 * (any positive factor: the quantizers are invariant to it). Quantizers take H through
 * `HessianSource`, so where it comes from (a calibration run, a stored file, a proxy) is
 * not their business.
 */
export interface Hessian {
  /** K: the layer's input features. */
  size: number;
  /** K×K, row-major, symmetric positive semi-definite. */
  data: Float64Array;
  /** Calibration tokens accumulated, when known. */
  nSamples?: number;
}

export interface HessianSource {
  /** H for the inputs of linear `linearName` (e.g. "model.layers.0.self_attn.q_proj"), or undefined when none is known. */
  get(linearName: string, inFeatures: number): Promise<Hessian | undefined>;
}
