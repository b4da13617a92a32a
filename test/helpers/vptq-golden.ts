import type { VptqParams } from "../../formats/vptq/types.js";

/** A VPTQ golden file's `params` metadata: the original VQuantLinear arguments (../shared/vectors/vptq/README.md). */
export interface VptqCaseParams {
  in_features: number;
  out_features: number;
  vector_lens: [number, number];
  num_centroids: [number, number];
  num_res_centroids: [number, number];
  group_num: number;
  group_size: number;
  outlier_size: number;
  enable_norm: boolean;
  enable_perm: boolean;
}

/** lmpack's parameters for a golden case: index 1 of each pair is the main codebook, index 0 the outlier one (−1: none). */
export function vptqParamsOf(c: VptqCaseParams): VptqParams {
  return {
    vectorLen: c.vector_lens[1],
    numCentroids: c.num_centroids[1],
    numResCentroids: Math.max(0, c.num_res_centroids[1]),
    groupNum: c.group_num,
    groupSize: c.group_size,
    outlierSize: c.outlier_size,
    outlierVectorLen: c.outlier_size > 0 ? c.vector_lens[0] : 0,
    outlierNumCentroids: c.outlier_size > 0 ? c.num_centroids[0] : 0,
    enableNorm: c.enable_norm,
    enablePerm: c.enable_perm,
  };
}
