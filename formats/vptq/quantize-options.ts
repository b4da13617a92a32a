import type { DeferredUpdates } from "../second-order/gptq-loop.js";
import { FormatError, UsageError } from "../errors.js";
import type { Hessian } from "../second-order/hessian.js";
import type { PrepareOptions } from "../second-order/prepare.js";
import type { CodebookSearch } from "./codebook.js";
import type { KMeansBackend, KMeansInit } from "./kmeans.js";
import type { VptqResidentLoop } from "./resident.js";
import { vectorRows, type VptqFloat, type VptqParams } from "./types.js";

/**
 * The VPTQ quantizer's options, their defaults and validation, and the column partition they
 * imply (get_group_setting in microsoft/VPTQ branch `algorithm`, ../shared/ref/vptq-spqr.md 1.2).
 */

export type VptqKMeansWeighting = "hessian" | "uniform";

export interface VptqQuantizeOptions {
  /** Output rows per vector (vector_lens[1]). Default 8. */
  vectorLen?: number;
  /** Main codebook size k, a power of two 2…65536. Default 256. */
  numCentroids?: number;
  /** Residual codebook size, a power of two 2…65536, or 0 for none. Default 0. */
  numResCentroids?: number;
  /** Codebooks over the non-outlier columns (each owns (in − outlierSize)/groupNum). Default 1. */
  groupNum?: number;
  /** Percent of columns (highest diag H first, under act-order) sent to the outlier codebook. Default 0. */
  outlierPercent?: number;
  /** Outlier vector length and codebook size, used only when there are outlier columns. Defaults 4, 256. */
  outlierVectorLen?: number;
  outlierNumCentroids?: number;
  /** Per-column min-max norm, W = Q·scale + bias. Default true (the CUDA kernels require it). */
  enableNorm?: boolean;
  /** Act-order column permutation. Default true. */
  enablePerm?: boolean;
  /** Fraction of mean(diag H) added to diag H: VPTQ's regularize_H adds 1e-2 after dividing by that mean. Default 0.01. */
  percDamp?: number;
  /** Columns per deferred error update; changes rounding only. Default 128. */
  blockSize?: number;
  /** Where the GPTQ loop's deferred updates run (the GPU: kernels/linalg/gptq-deferred.ts); host memory by default. */
  deferred?: DeferredUpdates;
  /** H's Cholesky / inverse factor (the GPU: kernels/linalg/cholesky-gpu.ts); the CPU's by default. */
  factorize?: PrepareOptions["factorize"];
  /** Where k-means's Lloyd iterations run (the GPU: kernels/kmeans/lloyd-gpu.ts); the CPU's by default. Same results either way. */
  kmeansBackend?: KMeansBackend;
  /** Where each column's nearest-centroid searches run (the GPU: kernels/kmeans/search-gpu.ts); the k-d tree by default. Same indices either way. */
  codebookSearch?: CodebookSearch;
  /** The whole GPTQ loop on a device (kernels/second-order/vptq-columns-gpu.ts) when refining and it accepts the layout; runGptqLoop by default. Same result either way. */
  residentLoop?: VptqResidentLoop;
  kmeansInit?: KMeansInit;
  /** Lloyd assignment steps at most (the reference's kiter). Default 100. */
  kmeansIterations?: number;
  /** Stop when the k-means objective falls by less than this fraction (the reference's ktol). Default 1e-5. */
  kmeansTolerance?: number;
  /** Sample weight of a vector: diag H of its column ("hessian", kmeans_mode hessian) or 1. Default "hessian". */
  kmeansWeighting?: VptqKMeansWeighting;
  /** Seed of the k-means initialisation (uint32). Default 0. */
  seed?: number;
  /**
   * With the norm, quantize against D·H·D (D = the column scales): the Hessian of the normalised
   * weight, so that the loop and k-means minimise the true tr(ΔW·H·ΔWᵀ). The reference uses H
   * itself, weighing every normalised column's error as if its scale were 1. Default true.
   */
  normHessian?: boolean;
  /**
   * After the loop, refit the main (and residual) codebooks by least squares to the loop's
   * objective (codebook-refit.ts). "auto" (the default): without a residual codebook only, where
   * it lowered docs-llama-16m's perplexity (v4 k256: 32.76 → 31.94 on docs-valid, 180.8 → 175.9
   * on a validation text); with a residual k16 it raised it (23.62 → 23.75, 158.0 → 160.3)
   * although the calibration loss fell (bench/RESULTS.md).
   */
  refitCodebooks?: boolean | "auto";
  /**
   * Rounds of the refit, when it runs: each after the first runs the loop again from the start
   * against the refitted codebooks, then refits them again. Default 2, chosen on a validation
   * text (docs-llama-16m v4 k256 on tinystories-valid-head: 175.9, 172.4, 175.9 for 1, 2, 3).
   */
  refitRounds?: number;
  /** false: every vector takes its nearest centroid with no error propagation (an ablation). Default true. */
  refine?: boolean;
  /** Codebook and norm dtype. Default "F16" (the published models). */
  dtype?: VptqFloat;
  /** Named in errors. */
  layerName?: string;
}

/** Options that choose where work runs, not what it computes: no defaults. */
type DeviceOptionKey = "layerName" | "deferred" | "factorize" | "kmeansBackend" | "codebookSearch" | "residentLoop";

export const VPTQ_QUANTIZE_DEFAULTS: Readonly<Required<Omit<VptqQuantizeOptions, DeviceOptionKey>>> = Object.freeze({
  vectorLen: 8,
  numCentroids: 256,
  numResCentroids: 0,
  groupNum: 1,
  outlierPercent: 0,
  outlierVectorLen: 4,
  outlierNumCentroids: 256,
  enableNorm: true,
  enablePerm: true,
  percDamp: 0.01,
  blockSize: 128,
  kmeansInit: "kmeans++",
  kmeansIterations: 100,
  kmeansTolerance: 1e-5,
  kmeansWeighting: "hessian",
  seed: 0,
  refine: true,
  normHessian: true,
  refitCodebooks: "auto",
  refitRounds: 2,
  dtype: "F16",
});

export type ResolvedVptqOptions = Required<Omit<VptqQuantizeOptions, DeviceOptionKey>> & Pick<VptqQuantizeOptions, "deferred" | "factorize" | "kmeansBackend" | "codebookSearch" | "residentLoop"> & { layerName: string | undefined };

/** Options with their defaults filled in. */
export function resolveVptqOptions(options: VptqQuantizeOptions): ResolvedVptqOptions {
  return { ...VPTQ_QUANTIZE_DEFAULTS, ...definedOnly(options), layerName: options.layerName, deferred: options.deferred, factorize: options.factorize, kmeansBackend: options.kmeansBackend, codebookSearch: options.codebookSearch, residentLoop: options.residentLoop };
}

function definedOnly(options: VptqQuantizeOptions): Partial<VptqQuantizeOptions> {
  return Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
}

function badArgument(o: ResolvedVptqOptions, detail: string, actual: unknown, expected?: unknown): UsageError {
  return new UsageError("BAD_ARGUMENT", detail, { ...(o.layerName === undefined ? {} : { tensor: o.layerName }), actual, ...(expected === undefined ? {} : { expected }) });
}

/** The column partition of get_group_setting, and every option that shapes the tensor. */
export function planLayout(rows: number, inFeatures: number, o: ResolvedVptqOptions): VptqParams {
  const isCount = (v: number, min: number): boolean => Number.isSafeInteger(v) && v >= min;
  if (!isCount(rows, 1) || !isCount(inFeatures, 1)) throw badArgument(o, "weight dimensions must be positive integers", [rows, inFeatures]);
  // perm is stored as uint16 and the CUDA kernels read it so.
  if (inFeatures > 65536) throw badArgument(o, "VPTQ stores the permutation as uint16: in features must be ≤ 65536", inFeatures);
  const isBookSize = (k: number): boolean => isCount(k, 2) && k <= 65536 && (k & (k - 1)) === 0;
  if (!isBookSize(o.numCentroids)) throw badArgument(o, "numCentroids must be a power of two 2…65536", o.numCentroids);
  if (o.numResCentroids !== 0 && !isBookSize(o.numResCentroids)) throw badArgument(o, "numResCentroids must be 0 (none) or a power of two 2…65536", o.numResCentroids);
  if (!isCount(o.vectorLen, 1)) throw badArgument(o, "vectorLen must be a positive integer", o.vectorLen);
  if (!isCount(o.groupNum, 1)) throw badArgument(o, "groupNum must be a positive integer", o.groupNum);
  if (!(o.outlierPercent >= 0 && o.outlierPercent < 100)) throw badArgument(o, "outlierPercent must be in [0, 100)", o.outlierPercent);
  let outlierSize = Math.ceil((o.outlierPercent / 100) * inFeatures);
  const remainder = (inFeatures - outlierSize) % o.groupNum;
  if (remainder !== 0 && outlierSize === 0) throw badArgument(o, "groupNum must divide in features when there are no outlier columns", o.groupNum, `a divisor of ${inFeatures}`);
  // As get_group_setting: the outlier block takes the columns the groups cannot share evenly.
  outlierSize += remainder;
  const groupSize = (inFeatures - outlierSize) / o.groupNum;
  if (groupSize < 1) throw badArgument(o, "no columns left for the groups after the outlier columns", { outlierSize, groupNum: o.groupNum });
  const groupVectors = vectorRows(rows, o.vectorLen) * groupSize;
  if (o.numCentroids > groupVectors) throw badArgument(o, "numCentroids exceeds the vectors of one group: a codebook cannot have more centroids than vectors to fit", o.numCentroids, `≤ ${groupVectors}`);
  if (o.numResCentroids > groupVectors) throw badArgument(o, "numResCentroids exceeds the vectors of one group", o.numResCentroids, `≤ ${groupVectors}`);
  if (outlierSize > 0) {
    if (!isCount(o.outlierVectorLen, 1)) throw badArgument(o, "outlierVectorLen must be a positive integer", o.outlierVectorLen);
    if (!isBookSize(o.outlierNumCentroids)) throw badArgument(o, "outlierNumCentroids must be a power of two 2…65536", o.outlierNumCentroids);
    const outlierVectors = vectorRows(rows, o.outlierVectorLen) * outlierSize;
    if (o.outlierNumCentroids > outlierVectors) throw badArgument(o, "outlierNumCentroids exceeds the outlier vectors", o.outlierNumCentroids, `≤ ${outlierVectors}`);
  }
  return {
    vectorLen: o.vectorLen,
    numCentroids: o.numCentroids,
    numResCentroids: o.numResCentroids,
    groupNum: o.groupNum,
    groupSize,
    outlierSize,
    outlierVectorLen: outlierSize > 0 ? o.outlierVectorLen : 0,
    outlierNumCentroids: outlierSize > 0 ? o.outlierNumCentroids : 0,
    enableNorm: o.enableNorm,
    enablePerm: o.enablePerm,
  };
}

export function checkArguments(weight: Float32Array, rows: number, inFeatures: number, hessian: Hessian, o: ResolvedVptqOptions): void {
  if (weight.length !== rows * inFeatures) throw badArgument(o, "weight length does not match out × in", weight.length, rows * inFeatures);
  if (!Number.isFinite(o.percDamp) || o.percDamp < 0) throw badArgument(o, "percDamp must be a finite number ≥ 0", o.percDamp);
  if (!Number.isSafeInteger(o.blockSize) || o.blockSize < 1) throw badArgument(o, "blockSize must be a positive integer", o.blockSize);
  if (!Number.isSafeInteger(o.kmeansIterations) || o.kmeansIterations < 1) throw badArgument(o, "kmeansIterations must be a positive integer", o.kmeansIterations);
  if (!Number.isSafeInteger(o.refitRounds) || o.refitRounds < 1) throw badArgument(o, "refitRounds must be a positive integer", o.refitRounds);
  if (!(o.kmeansTolerance >= 0 && o.kmeansTolerance < 1)) throw badArgument(o, "kmeansTolerance must be in [0, 1)", o.kmeansTolerance);
  if (!Number.isInteger(o.seed) || o.seed < 0 || o.seed > 0xffffffff) throw badArgument(o, "seed must be an integer 0…2³²−1", o.seed);
  const oneOf = (name: string, value: unknown, allowed: readonly unknown[]): void => {
    if (!allowed.includes(value)) throw badArgument(o, `unknown ${name}`, value, allowed);
  };
  oneOf("kmeansInit", o.kmeansInit, ["kmeans++", "random"]);
  oneOf("kmeansWeighting", o.kmeansWeighting, ["hessian", "uniform"]);
  oneOf("dtype", o.dtype, ["F16", "BF16"]);
  oneOf("refitCodebooks", o.refitCodebooks, [true, false, "auto"]);
  oneOf("normHessian", o.normHessian, [true, false]);
  const tensor = o.layerName === undefined ? {} : { tensor: o.layerName };
  if (hessian.size !== inFeatures || hessian.data.length !== inFeatures * inFeatures) throw new FormatError("SHAPE_SIZE_MISMATCH", "Hessian size does not match the layer's input features", { ...tensor, expected: inFeatures, actual: hessian.size });
  for (let i = 0; i < weight.length; i++) {
    if (!Number.isFinite(weight[i]!)) throw new FormatError("PACKED_VALUE_INVALID", `weight is not finite at row ${Math.floor(i / inFeatures)}, column ${i % inFeatures}`, { ...tensor, actual: weight[i] });
  }
}
