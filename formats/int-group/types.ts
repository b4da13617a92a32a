/**
 * The integer group representation: what every integer layout (GPTQ v1/v2, AutoRound, AWQ,
 * later MatMulNBits and ggml) decodes to and every integer quantizer (RTN, GPTQ, SignRound)
 * produces. It holds the integer codes, per-group scales and *effective* zero points, so
 * repacking between layouts moves integers, never floats.
 *
 *   W[n][k] ≈ scale[g][n] · (code[n][k] − zero[g][n]),   g = gIdx[k] (or ⌊k / groupSize⌋)
 *
 * Conventions follow PyTorch `Linear`: `n` indexes output features (N rows), `k` input
 * features (K columns). Groups run along K.
 */

/** Code widths the GPTQ / AutoRound loaders accept (AWQ: 4 only; MatMulNBits: 2, 4, 8). */
export type IntBits = 2 | 3 | 4 | 8;
export const INT_BITS: readonly IntBits[] = [2, 3, 4, 8];

/** Storage type of the scales. Every value of these is exactly a float32. */
export type ScaleDType = "F16" | "BF16" | "F32";

export interface IntGroupParams {
  bits: IntBits;
  /** Input columns per group. Per-channel quantization (configs write -1) has groupSize = inFeatures. */
  groupSize: number;
  /**
   * Symmetric: every zero point is 2^(bits−1). Scales may then be negative (auto-round's
   * full-range symmetric grid puts the positive extreme on code 0): never take abs().
   */
  sym: boolean;
  scaleDtype: ScaleDType;
}

export interface IntGroupTensor {
  params: IntGroupParams;
  /** N: rows of the weight (output features). */
  outFeatures: number;
  /** K: columns of the weight (input features). */
  inFeatures: number;
  /** Code of weight (n, k) at n·K + k; unsigned, 0 … 2^bits − 1. */
  codes: Uint8Array;
  /** Scale of (group g, row n) at g·N + n, each exactly representable in `params.scaleDtype`. */
  scales: Float32Array;
  /**
   * Effective zero point of (g, n) at g·N + n: the integer subtracted from the code when
   * dequantizing, 0 … 2^bits. (2^bits itself only arises from a GPTQ v1 file whose packer
   * overflowed: its decoders read field + 1 without re-masking.)
   */
  zeros: Uint16Array;
  /** Group of each input column (act-order / desc_act); undefined means ⌊k / groupSize⌋. */
  gIdx: Int32Array | undefined;
}

/** Number of groups along K: ⌈K / groupSize⌉. */
export function groupCount(inFeatures: number, groupSize: number): number {
  return Math.ceil(inFeatures / groupSize);
}

/** Largest code: 2^bits − 1. */
export function maxCode(bits: IntBits): number {
  return (1 << bits) - 1;
}

/** The constant zero point of symmetric quantization: 2^(bits−1). */
export function symmetricZero(bits: IntBits): number {
  return 1 << (bits - 1);
}

/** Whether g_idx is the trivial ⌊k / groupSize⌋ (so layouts that cannot store one may omit it). */
export function isTrivialGIdx(gIdx: Int32Array | undefined, groupSize: number): boolean {
  if (gIdx === undefined) return true;
  for (let k = 0; k < gIdx.length; k++) if (gIdx[k] !== Math.floor(k / groupSize)) return false;
  return true;
}

/** Group of input column k. */
export function groupOf(tensor: IntGroupTensor, k: number): number {
  return tensor.gIdx === undefined ? Math.floor(k / tensor.params.groupSize) : tensor.gIdx[k]!;
}

/**
 * Bits per weight by the convention of the auto-round and GPTQ papers: code bits, plus a
 * 16-bit scale per group, plus a `bits`-wide zero per group when asymmetric (a symmetric zero
 * is a constant). A non-trivial g_idx adds its 32 bits per input column.
 */
export function bitsPerWeight(tensor: Pick<IntGroupTensor, "params" | "outFeatures" | "inFeatures" | "gIdx">): number {
  const { bits, groupSize, sym, scaleDtype } = tensor.params;
  const scaleBits = scaleDtype === "F32" ? 32 : 16;
  const perGroup = scaleBits + (sym ? 0 : bits);
  const nGroups = groupCount(tensor.inFeatures, groupSize);
  const weights = tensor.outFeatures * tensor.inFeatures;
  const gIdxBits = isTrivialGIdx(tensor.gIdx, groupSize) ? 0 : 32 * tensor.inFeatures;
  return weights === 0 ? 0 : bits + (perGroup * nGroups * tensor.outFeatures + gIdxBits) / weights;
}
