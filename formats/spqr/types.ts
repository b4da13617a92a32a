/**
 * The SpQR representation (Dettmers et al. 2023; Vahe1994/SpQR): a linear weight [m, n] whose
 * columns are permuted (stored column j is original column perm[j]), quantized to `bits`-bit
 * codes with one asymmetric min-max grid per (row, group of beta2 columns), whose scales and
 * zeros are themselves quantized to 3-bit codes over groups of beta1 consecutive rows with fp16
 * second-order statistics per (beta1 rows × beta2 columns) tile, plus a sparse set of fp16
 * outliers that are ADDED to the dense value at their position (whose code encodes 0).
 *
 * Everything here is in permuted column space, as the Hugging Face layout and the legacy
 * `save_quant_dict` store it. Index conventions follow the legacy flattening:
 *   scale/zero codes:      [G][m]      index g·m + r            (G = n / beta2)
 *   second-order stats:    [G][m/beta1] index g·(m/beta1) + t
 * Source: ../shared/ref/vptq-spqr.md part 2; ../shared/vectors/spqr/README.md.
 */
export interface SpqrParams {
  /** Weight code width; the HF layout holds 3 only. */
  bits: number;
  /** Rows per second-order group and per tile (HF `beta1`, SpQR `qq_groupsize`). */
  beta1: number;
  /** Columns per first-order group and per tile (HF `beta2`, SpQR `groupsize`). */
  beta2: number;
}

/** The paper's and the HF layout's configuration. */
export const SPQR_DEFAULTS: SpqrParams = { bits: 3, beta1: 16, beta2: 16 };

/** Outliers in CSR over rows, columns in permuted space. */
export interface SpqrOutliers {
  /** [m + 1], monotone, rowOffsets[m] = nnz. */
  rowOffsets: Int32Array;
  /** [nnz] permuted column of each outlier, ascending within a row. */
  cols: Uint16Array;
  /** [nnz] fp16 bit patterns. */
  values: Uint16Array;
}

export interface SpqrTensor {
  params: SpqrParams;
  /** m */
  outFeatures: number;
  /** n */
  inFeatures: number;
  /** [n]: stored column j is original column perm[j]. */
  perm: Uint16Array;
  /** [m·n] row-major codes, permuted columns. */
  codes: Uint8Array;
  /** [G·m] 3-bit first-order scale codes. */
  scaleCodes: Uint8Array;
  /** [G·m] 3-bit first-order zero codes. */
  zeroCodes: Uint8Array;
  /** [G·m/beta1] fp16 bits: scale of the scales (s_s), zero of the scales (s_z), scale of the zeros (z_s), zero of the zeros (z_z). */
  scaleScale: Uint16Array;
  scaleZero: Uint16Array;
  zeroScale: Uint16Array;
  zeroZero: Uint16Array;
  outliers: SpqrOutliers;
  /**
   * How the HF layout stores (or stored) the outliers: plain CSR over rows, or PTCSR (16-row
   * blocks, interleaved, zero-padded). The values are the same; the original host dequantizer
   * differs in one detail (see reference.ts), and an export writes what was read. Default "csr".
   */
  outlierStorage?: "csr" | "ptcsr";
}

/** Statistic code width (SpQR's qq_scale_bits = qq_zero_bits; the HF layout holds 3). */
export const STAT_BITS = 3;

export function firstOrderGroups(t: Pick<SpqrTensor, "inFeatures" | "params">): number {
  return t.inFeatures / t.params.beta2;
}

/**
 * The paper's bits per weight (SpQR main.py get_average_number_of_bits, round_zero false):
 * wbits + (3 + 3)/beta2 + 2·(16 + 16)/(beta1·beta2) + 32·outlier share. The HF layout itself
 * stores exactly 4 bits per weight for the dense part (64-bit words of 16 codes), plus 32 bits
 * per outlier, plus the permutation; `storedBitsPerWeight` counts those bytes.
 */
export function paperBitsPerWeight(t: Pick<SpqrTensor, "params" | "outFeatures" | "inFeatures"> & { outlierCount: number }): number {
  const { bits, beta1, beta2 } = t.params;
  const share = t.outlierCount / (t.outFeatures * t.inFeatures);
  return bits + (2 * STAT_BITS) / beta2 + (2 * (16 + 16)) / (beta1 * beta2) + 32 * share;
}
