import { f64ToBf16Bit, f64ToF16Bit, halfPrecisionValues } from "../dense/float-bits.js";

/**
 * The VPTQ representation (Liu et al. 2024; microsoft/VPTQ): a linear weight [out, in] whose
 * columns are permuted (Q column k is original column perm[k]); each Q column is cut into
 * vectors of `vectorLen` consecutive output rows (rows zero-padded to a multiple of vectorLen),
 * each vector an index into a codebook of `numCentroids` fp16 vectors, optionally plus an index
 * into a residual codebook, the two looked-up vectors added. The first `outlierSize` Q columns
 * use their own codebook (vector length `outlierVectorLen`); the rest are split into `groupNum`
 * groups of `groupSize` columns, one codebook each. With `enableNorm`, W = Q·scale[j] + bias[j]
 * per ORIGINAL column j. Source: ../shared/ref/vptq-spqr.md part 1; ../shared/vectors/vptq/README.md.
 */
export interface VptqParams {
  /** Main vector length (vector_lens[1]). */
  vectorLen: number;
  /** Main codebook size k, a power of two (num_centroids[1]). */
  numCentroids: number;
  /** Residual codebook size, a power of two, or 0 for none (num_res_centroids[1] ≤ 0). */
  numResCentroids: number;
  groupNum: number;
  /** Non-outlier Q columns per codebook: (in − outlierSize) / groupNum. */
  groupSize: number;
  /** Leading Q columns sent to the outlier codebook (0: none). */
  outlierSize: number;
  /** Outlier vector length and codebook size (vector_lens[0], num_centroids[0]); 0 when no outliers. */
  outlierVectorLen: number;
  outlierNumCentroids: number;
  enableNorm: boolean;
  enablePerm: boolean;
}

/** 16-bit float codebooks and norms: fp16 (the VPTQ-community models) or bf16. */
export type VptqFloat = "F16" | "BF16";

export interface VptqTensor {
  params: VptqParams;
  outFeatures: number;
  inFeatures: number;
  dtype: VptqFloat;
  /** [groupNum · numCentroids · vectorLen] 16-bit float bits. */
  centroids: Uint16Array;
  /** [groupNum · numResCentroids · vectorLen], or undefined without a residual codebook. */
  resCentroids: Uint16Array | undefined;
  /** [groupNum · numIdx · groupSize] main indices (numIdx = ceil(out / vectorLen)). */
  mainIndices: Uint32Array;
  /** Same shape, residual indices; undefined without a residual codebook. */
  resIndices: Uint32Array | undefined;
  /** [outlierNumCentroids · outlierVectorLen], when outliers exist. */
  outlierCentroids: Uint16Array | undefined;
  /** [numOutlierIdx · outlierSize] (numOutlierIdx = ceil(out / outlierVectorLen)). */
  outlierIndices: Uint16Array | undefined;
  /** [in] Q column k is original column perm[k]; undefined when !enablePerm. */
  perm: Uint16Array | undefined;
  /** [in] by original column; undefined when !enableNorm. */
  weightScale: Uint16Array | undefined;
  weightBias: Uint16Array | undefined;
}

export function indexBits(k: number): number {
  return k > 0 ? Math.log2(k) : 0;
}

/** Rows of index vectors: ceil(out / vectorLen). */
export function vectorRows(outFeatures: number, vectorLen: number): number {
  return Math.ceil(outFeatures / vectorLen);
}

/**
 * The tech report's bits per weight (§C.2): index bits (ib + rb)/v over the non-outlier
 * weights and log2(k_o)/v_o over the outlier ones, plus the codebooks ((v·(k + k_res)·G +
 * v_o·k_o)·16 bits) and the norm (2·16 bits per column) spread over the layer.
 */
export function vptqBitsPerWeight(p: VptqParams, outFeatures: number, inFeatures: number): { indexBits: number; codebookBits: number; total: number } {
  const weights = outFeatures * inFeatures;
  const mainColumns = inFeatures - p.outlierSize;
  const indexBitCount = mainColumns * vectorRows(outFeatures, p.vectorLen) * (indexBits(p.numCentroids) + indexBits(p.numResCentroids)) + (p.outlierSize > 0 ? p.outlierSize * vectorRows(outFeatures, p.outlierVectorLen) * indexBits(p.outlierNumCentroids) : 0);
  const codebookBitCount = 16 * (p.vectorLen * (p.numCentroids + Math.max(0, p.numResCentroids)) * p.groupNum + p.outlierVectorLen * p.outlierNumCentroids) + (p.enableNorm ? 32 * inFeatures : 0);
  return { indexBits: indexBitCount / weights, codebookBits: codebookBitCount / weights, total: (indexBitCount + codebookBitCount) / weights };
}

/** Rounding to, and values of, the 16-bit dtype (correctly rounded, nearest even). */
export function floatCodec(dtype: VptqFloat): { round: (x: number) => number; value: (bits: number) => number } {
  const values = halfPrecisionValues(dtype);
  return { round: dtype === "F16" ? f64ToF16Bit : f64ToBf16Bit, value: (bits) => values[bits]! };
}
