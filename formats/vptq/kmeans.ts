import { UsageError } from "../errors.js";
import { assignNearest, centroidMoves, trackNothing, type CentroidMoves } from "./assign.js";
import { buildKdTree } from "./kd-tree.js";
import { kMeansPlusPlus, randomInit, seedCentroid, type InitData } from "./kmeans-init.js";
import { mulberry32 } from "../random.js";

export type { InitData } from "./kmeans-init.js";

/**
 * Weighted k-means (Lloyd) for VPTQ codebooks: minimises Σ w_i·|x_i − c(i)|², the diagonal
 * term of the Hessian-weighted error tr(ΔW·H·ΔWᵀ) when w_i = H[c,c] of the vector's column
 * (VPTQ tech report §3.2.1). The reference runs cuML KMeans(init='random', n_init=1,
 * random_state=0); we offer that init and k-means++ (Arthur & Vassilvitskii 2007, D² sampling
 * weighted by w), and make both deterministic for a given seed.
 *
 * Exactness and cost: every assignment is exact, but a vector is searched for only when the
 * centroids it remembers can no longer be proven nearest (assign.ts); k-means++ visits only the
 * k-d tree nodes a new centre can touch (kmeans-init.ts).
 *
 * Vectors from `partialFrom` on have only `partialDims` real coordinates (the rest is padding):
 * distances and means use the real ones only, so padding never pulls a centroid.
 */

export type KMeansInit = "kmeans++" | "random";

export interface KMeansData {
  /** [count][dim] row-major. */
  vectors: Float64Array;
  count: number;
  dim: number;
  /** Non-negative weight of each vector. */
  weights: Float64Array;
  /** First vector with only `partialDims` real coordinates (default: count, none). */
  partialFrom?: number;
  partialDims?: number;
}

export interface KMeansOptions {
  k: number;
  init: KMeansInit;
  seed: number;
  /** Assignment steps at most (each followed by a mean update unless it is the last). */
  maxIterations: number;
  /** Stop when the objective falls by less than this fraction of itself. */
  tolerance: number;
  /**
   * Called with the objective after every assignment step (the values `objectives` holds), and
   * how many vectors that step had to search (the others were proven to keep their centroid).
   */
  onIteration?: (iteration: number, objective: number, searched: number) => void;
  /** Where Lloyd's iterations run (the GPU: kernels/kmeans/lloyd-gpu.ts); here by default. */
  backend?: KMeansBackend;
}

/**
 * Lloyd's iterations from given initial centroids (updated in place), with exactly this file's
 * semantics: exact nearest centroid (ties to the lower index, distances summed in coordinate
 * order), means summed in vector order, objective by `objectiveSum`, empty clusters re-seeded
 * by `reseedEmpty`, the same stopping rule. A backend that keeps them gives the same bits.
 */
export interface KMeansBackend {
  readonly description: string;
  lloyd(data: InitData, centroids: Float64Array, options: KMeansOptions): Omit<KMeansResult, "centroids">;
  /** kmeans-init.ts kMeansPlusPlus's centres for the same stream, bit for bit, where the backend can seed (the GPU's); absent: the CPU seeds. */
  plusPlus?(data: InitData, k: number, random: () => number): Float64Array;
}

export interface KMeansResult {
  /** [k][dim]; coordinates no vector ever had stay at their initial value. */
  centroids: Float64Array;
  /** Nearest centroid of each vector under `centroids`. */
  labels: Int32Array;
  /** Σ w·d² after each assignment step: non-increasing. */
  objectives: number[];
  converged: boolean;
  /** Empty clusters re-seeded over all iterations. */
  reseeded: number;
}

export function weightedKMeans(data: KMeansData, options: KMeansOptions): KMeansResult {
  const { count, dim, vectors, weights } = data;
  const partialFrom = data.partialFrom ?? count;
  const partialDims = data.partialDims ?? dim;
  const { k } = options;
  if (!Number.isInteger(k) || k < 1 || k > count) throw new UsageError("BAD_ARGUMENT", "k-means needs 1 ≤ k ≤ the number of vectors", { expected: `1 … ${count}`, actual: k });
  if (vectors.length !== count * dim || weights.length !== count) throw new UsageError("BAD_ARGUMENT", "k-means data is not count × dim with one weight per vector", { expected: count * dim, actual: vectors.length });
  const set: InitData = { vectors, count, dim, weights, partialFrom, partialDims };
  const random = mulberry32(options.seed);
  const plusPlus = options.backend?.plusPlus?.bind(options.backend) ?? kMeansPlusPlus;
  const centroids = options.init === "kmeans++" ? plusPlus(set, k, random) : randomInit(set, k, random);
  return { centroids, ...(options.backend ?? cpuLloyd).lloyd(set, centroids, options) };
}

/** Lloyd's iterations in host memory, with k-d tree searches and distance bounds (assign.ts). */
export const cpuLloyd: KMeansBackend = {
  description: "cpu",
  lloyd(set, centroids, options) {
    const { count, dim, weights } = set;
    const { k } = options;
    const labels = new Int32Array(count);
    const tracked = trackNothing(count);
    let moves: CentroidMoves = { largestOther: 0, movers: new Int32Array(0) };
    const objectives: number[] = [];
    const distances = new Float64Array(count);
    let converged = false;
    let reseeded = 0;
    for (let iteration = 0; iteration < options.maxIterations; iteration++) {
      const tree = buildKdTree(centroids, k, dim);
      const searched = assignNearest(set, centroids, tree, tracked, moves, labels, distances);
      const objective = objectiveSum(weights, distances);
      objectives.push(objective);
      options.onIteration?.(iteration, objective, searched);
      if (lloydConverged(objectives, options.tolerance)) {
        converged = true;
        break;
      }
      if (iteration === options.maxIterations - 1) break;
      const before = centroids.slice();
      const counts = updateMeans(set, k, labels, centroids);
      reseeded += reseedEmpty(set, k, labels, distances, counts, centroids);
      moves = centroidMoves(before, centroids, dim);
    }
    return { labels, objectives, converged, reseeded };
  },
};

/** The stopping rule: a zero objective, or a fall of at most `tolerance` of the previous one. */
export function lloydConverged(objectives: readonly number[], tolerance: number): boolean {
  const objective = objectives[objectives.length - 1]!;
  const previous = objectives[objectives.length - 2];
  return objective === 0 || (previous !== undefined && previous - objective <= tolerance * previous);
}

/** Vectors per partial sum of the objective. */
export const OBJECTIVE_CHUNK = 4096;

/**
 * Σ w_i·d_i as a fixed tree: a sequential sum (products rounded, then added) within each chunk of
 * OBJECTIVE_CHUNK vectors, then the chunk sums in order. A parallel device sums each chunk in one
 * thread and gives the same bits.
 */
export function objectiveSum(weights: Float64Array, distancesSquared: Float64Array): number {
  let total = 0;
  for (let from = 0; from < weights.length; from += OBJECTIVE_CHUNK) {
    let chunk = 0;
    const to = Math.min(from + OBJECTIVE_CHUNK, weights.length);
    for (let i = from; i < to; i++) chunk += weights[i]! * distancesSquared[i]!;
    total += chunk;
  }
  return total;
}

/** Moves every centroid coordinate to the weighted mean of the real coordinates assigned to it. Returns the vectors per cluster. */
function updateMeans(data: InitData, k: number, labels: Int32Array, centroids: Float64Array): Int32Array {
  const { dim, vectors, weights } = data;
  const sums = new Float64Array(k * dim);
  const weightSums = new Float64Array(k * dim);
  const counts = new Int32Array(k);
  for (let i = 0; i < data.count; i++) {
    const label = labels[i]!;
    const w = weights[i]!;
    counts[label]!++;
    const active = i < data.partialFrom ? dim : data.partialDims;
    for (let d = 0; d < active; d++) {
      sums[label * dim + d]! += w * vectors[i * dim + d]!;
      weightSums[label * dim + d]! += w;
    }
  }
  // A coordinate with no weight behind it keeps its value: any value is optimal for it.
  for (let j = 0; j < k * dim; j++) if (weightSums[j]! > 0) centroids[j] = sums[j]! / weightSums[j]!;
  return counts;
}

/**
 * Gives each empty cluster the vector that costs most where it is (largest w·d², ties to the
 * lower index), taken only from clusters that keep another member, so no cluster empties in
 * turn. Deterministic, and the objective can only fall. Returns how many were re-seeded.
 */
export function reseedEmpty(data: InitData, k: number, labels: Int32Array, distances: Float64Array, counts: Int32Array, centroids: Float64Array): number {
  const empty: number[] = [];
  for (let j = 0; j < k; j++) if (counts[j] === 0) empty.push(j);
  if (empty.length === 0) return 0;
  const { weights } = data;
  const cost = (i: number): number => weights[i]! * distances[i]!;
  const order = Array.from({ length: data.count }, (_, i) => i).filter((i) => distances[i]! > 0);
  order.sort((a, b) => cost(b) - cost(a) || distances[b]! - distances[a]! || a - b);
  let taken = 0;
  for (const i of order) {
    if (taken === empty.length) break;
    if (counts[labels[i]!]! < 2) continue;
    const target = empty[taken++]!;
    counts[labels[i]!]!--;
    counts[target] = 1;
    labels[i] = target;
    distances[i] = 0;
    seedCentroid(data, i, centroids, target);
  }
  return taken;
}
