import { floatCodec, vectorRows, type VptqTensor } from "./types.js";

/**
 * Reference dequantization of a VPTQ layer, in either of the two semantics the runtimes have
 * (../shared/ref/vptq-spqr.md 1.6), bit for bit:
 *
 *   "cuda" (default): the CUDA dequant kernel; c = h(main + res) (__hadd2), W = h(c·s + b) with
 *                     ONE rounding (__hfma2 / __hfma for outlier columns)
 *   "torch":          the torch fallback (and vLLM's generic path); W = h(h(c·s) + b)
 *
 * Decode order: gather (+ residual) per vector of vectorLen output rows, drop the padding rows,
 * outlier columns in front, un-permute (W[:, perm[k]] = Q[:, k]), then scale and bias by the
 * original column. Without norm, W = c. Products of two 16-bit floats are exact in f64; sums go
 * through `roundSum`, so each result is rounded exactly once where the runtime rounds.
 */
export type VptqSemantics = "cuda" | "torch";

export function dequantizeVptq(t: VptqTensor, semantics: VptqSemantics = "cuda"): Uint16Array {
  const p = t.params;
  const out = t.outFeatures;
  const inFeatures = t.inFeatures;
  const { value, round } = floatCodec(t.dtype);
  const W = new Uint16Array(out * inFeatures);
  const numIdx = vectorRows(out, p.vectorLen);
  const vl = p.vectorLen;
  const column = new Uint16Array(out);
  for (let k = 0; k < inFeatures; k++) {
    // Q column k: 16-bit centroid values, one per output row.
    if (k < p.outlierSize) {
      const ovl = p.outlierVectorLen;
      for (let i = 0; i < out; i++) column[i] = t.outlierCentroids![t.outlierIndices![Math.floor(i / ovl) * p.outlierSize + k]! * ovl + (i % ovl)]!;
    } else {
      const kk = k - p.outlierSize;
      const g = Math.floor(kk / p.groupSize);
      const e = kk % p.groupSize;
      for (let i = 0; i < out; i++) {
        const r = Math.floor(i / vl);
        const at = (g * numIdx + r) * p.groupSize + e;
        const main = t.centroids[(g * p.numCentroids + t.mainIndices[at]!) * vl + (i % vl)]!;
        column[i] = t.resIndices === undefined ? main : roundSum(value(main), value(t.resCentroids![(g * p.numResCentroids + t.resIndices[at]!) * vl + (i % vl)]!), round);
      }
    }
    const j = t.perm === undefined ? k : t.perm[k]!;
    if (!p.enableNorm) {
      for (let i = 0; i < out; i++) W[i * inFeatures + j] = column[i]!;
      continue;
    }
    const s = value(t.weightScale![j]!);
    const b = value(t.weightBias![j]!);
    for (let i = 0; i < out; i++) {
      const c = value(column[i]!);
      W[i * inFeatures + j] = semantics === "torch" ? roundSum(value(round(c * s)), b, round) : roundSum(c * s, b, round);
    }
  }
  return W;
}

/**
 * round(x + y), correctly rounded, for doubles x and y that are exact (16-bit values, or the
 * product of two: ≤ 22 significant bits). Their f64 sum can be inexact when the exponents are
 * far apart; TwoSum gives its exact error, and rounding the sum to odd (an inexact sum with an
 * even last bit steps one f64 ulp toward the error) makes the final rounding to 16 bits exact,
 * as 53 ≥ 2·11 + 2 (Boldo & Melquiond). This is the fused c·s + b of the CUDA kernel, and an
 * ordinary 16-bit add.
 */
function roundSum(x: number, y: number, round: (v: number) => number): number {
  const sum = x + y;
  const yv = sum - x;
  const error = x - (sum - yv) + (y - yv);
  if (error === 0) return round(sum);
  f64[0] = sum;
  if ((f64Bits[0]! & 1n) === 1n) return round(sum);
  return round(nextToward(sum, error));
}

const f64 = new Float64Array(1);
const f64Bits = new BigInt64Array(f64.buffer);

function nextToward(x: number, direction: number): number {
  if (x === 0) return direction > 0 ? Number.MIN_VALUE : -Number.MIN_VALUE;
  f64[0] = x;
  f64Bits[0]! += (x > 0) === (direction > 0) ? 1n : -1n;
  return f64[0]!;
}
