import { KD_LEAF_SIZE, buildKdTree, type KdTree } from "./kd-tree.js";

/**
 * k-means initialisations, deterministic for a seed: cuML's init='random' (k distinct vectors,
 * uniformly) and weighted k-means++ (Arthur & Vassilvitskii 2007: the first centre ∝ w, each
 * next ∝ w·D², D the distance to the nearest centre so far).
 *
 * k-means++ is n·k distance evaluations done plainly: 2.7·10¹¹ for k = 65536 over 0.5M
 * vectors. Here the vectors sit in a k-d tree whose nodes know their bounding box and the
 * largest D² inside; a new centre only visits the nodes whose box is nearer to it than that
 * largest D, which late in the run is a small neighbourhood.
 */

export interface InitData {
  /** [count][dim] row-major. */
  vectors: Float64Array;
  count: number;
  dim: number;
  weights: Float64Array;
  /** Vectors from here on have only `partialDims` real coordinates (the rest is 0). */
  partialFrom: number;
  partialDims: number;
}

/**
 * Makes vector i centroid j. A partial vector has no value on its missing coordinates (its
 * padding is not data), so there the centroid takes the mean of the full vectors, where a full
 * vector can still find it; the mean update only moves coordinates some vector has.
 */
export function seedCentroid(data: InitData, i: number, centroids: Float64Array, j: number): void {
  const { dim } = data;
  centroids.set(data.vectors.subarray(i * dim, (i + 1) * dim), j * dim);
  if (i < data.partialFrom || data.partialDims === dim) return;
  for (let d = data.partialDims; d < dim; d++) {
    let sum = 0;
    for (let v = 0; v < data.partialFrom; v++) sum += data.vectors[v * dim + d]!;
    centroids[j * dim + d] = data.partialFrom > 0 ? sum / data.partialFrom : 0;
  }
}

/** k distinct vectors chosen uniformly (a partial Fisher–Yates shuffle). */
export function randomInit(data: InitData, k: number, random: () => number): Float64Array {
  const order = Int32Array.from({ length: data.count }, (_, i) => i);
  const centroids = new Float64Array(k * data.dim);
  for (let j = 0; j < k; j++) {
    const pick = j + Math.floor(random() * (data.count - j));
    const chosen = order[pick]!;
    order[pick] = order[j]!;
    order[j] = chosen;
    seedCentroid(data, chosen, centroids, j);
  }
  return centroids;
}

/** Weighted k-means++. */
export function kMeansPlusPlus(data: InitData, k: number, random: () => number): Float64Array {
  const { count, dim, vectors, weights, partialFrom, partialDims } = data;
  const centroids = new Float64Array(k * dim);
  // Full vectors live in the tree (positions 0 … partialFrom−1 in tree order); partial vectors
  // (the box bound does not hold on coordinates they lack) are measured one by one, after them.
  const tree = new SeedingTree(buildKdTree(vectors.subarray(0, partialFrom * dim), partialFrom, dim), weights, count);
  const { nearestSquared, sampler } = tree;
  for (let i = partialFrom; i < count; i++) sampler.set(i, weights[i]!);
  let fallback = 0;
  for (let j = 0; j < k; j++) {
    let drawn = sampler.sample(random());
    // Nothing left to draw (fewer distinct vectors than k, or all weights 0): the next vector not yet a centre.
    if (drawn < 0) {
      while (fallback < count && nearestSquared[fallback] === 0) fallback++;
      drawn = fallback < count ? fallback : j % count;
    }
    const centre = centroids.subarray(j * dim, (j + 1) * dim);
    if (drawn < partialFrom) centre.set(tree.points.subarray(drawn * dim, (drawn + 1) * dim));
    else seedCentroid(data, drawn, centroids, j);
    tree.addCentre(centre);
    for (let i = partialFrom; i < count; i++) {
      let squared = 0;
      for (let d = 0; d < partialDims; d++) squared += (vectors[i * dim + d]! - centre[d]!) ** 2;
      if (squared >= nearestSquared[i]!) continue;
      nearestSquared[i] = squared;
      sampler.set(i, weights[i]! * squared);
    }
  }
  return centroids;
}

/**
 * The full vectors in k-d tree order, each node knowing its bounding box and the largest D²
 * below it. Indices 0 … tree.count−1 of the per-vector arrays are tree positions; the rest (the
 * partial vectors) are the caller's.
 */
class SeedingTree {
  readonly points: Float64Array;
  readonly ids: Int32Array;
  readonly nearestSquared: Float64Array;
  readonly sampler: SumTree;
  private readonly low: Float64Array;
  private readonly high: Float64Array;
  private readonly largest: Float64Array;
  private readonly weightAt: Float64Array;
  private centre: Float64Array = new Float64Array(0);

  constructor(private readonly tree: KdTree, weights: Float64Array, count: number) {
    this.points = tree.points;
    this.ids = tree.ids;
    this.nearestSquared = new Float64Array(count).fill(Infinity);
    this.sampler = new SumTree(count);
    this.weightAt = Float64Array.from(tree.ids, (id) => weights[id]!);
    for (let p = 0; p < tree.count; p++) this.sampler.set(p, this.weightAt[p]!);
    const nodes = tree.splitDim.length;
    this.low = new Float64Array(nodes * tree.dim);
    this.high = new Float64Array(nodes * tree.dim);
    this.largest = new Float64Array(nodes).fill(Infinity);
    if (tree.count > 0) this.fitBox(0, 0, tree.count);
  }

  /** Lowers D² of every vector the new centre is nearer to. */
  addCentre(centre: Float64Array): void {
    this.centre = centre;
    if (this.tree.count > 0) this.visit(0, 0, this.tree.count);
  }

  private fitBox(node: number, lo: number, hi: number): void {
    const { dim, points } = this.tree;
    const at = node * dim;
    if (hi - lo <= KD_LEAF_SIZE) {
      this.low.fill(Infinity, at, at + dim);
      this.high.fill(-Infinity, at, at + dim);
      for (let p = lo; p < hi; p++) {
        for (let d = 0; d < dim; d++) {
          this.low[at + d] = Math.min(this.low[at + d]!, points[p * dim + d]!);
          this.high[at + d] = Math.max(this.high[at + d]!, points[p * dim + d]!);
        }
      }
      return;
    }
    const mid = (lo + hi) >> 1;
    this.fitBox(2 * node + 1, lo, mid);
    this.fitBox(2 * node + 2, mid, hi);
    for (let d = 0; d < dim; d++) {
      this.low[at + d] = Math.min(this.low[(2 * node + 1) * dim + d]!, this.low[(2 * node + 2) * dim + d]!);
      this.high[at + d] = Math.max(this.high[(2 * node + 1) * dim + d]!, this.high[(2 * node + 2) * dim + d]!);
    }
  }

  /** Returns the node's largest D² after the visit. */
  private visit(node: number, lo: number, hi: number): number {
    const { dim, points } = this.tree;
    const c = this.centre;
    const at = node * dim;
    let boxSquared = 0;
    for (let d = 0; d < dim; d++) {
      const below = this.low[at + d]! - c[d]!;
      const above = c[d]! - this.high[at + d]!;
      if (below > 0) boxSquared += below * below;
      else if (above > 0) boxSquared += above * above;
    }
    // Every vector below is at least boxSquared from the centre and at most `largest` from its
    // own: none can move.
    if (boxSquared >= this.largest[node]!) return this.largest[node]!;
    let largest = 0;
    if (hi - lo <= KD_LEAF_SIZE) {
      for (let p = lo; p < hi; p++) {
        let squared = 0;
        for (let d = 0; d < dim; d++) {
          const diff = points[p * dim + d]! - c[d]!;
          squared += diff * diff;
        }
        if (squared < this.nearestSquared[p]!) {
          this.nearestSquared[p] = squared;
          this.sampler.set(p, this.weightAt[p]! * squared);
        }
        if (this.nearestSquared[p]! > largest) largest = this.nearestSquared[p]!;
      }
    } else {
      const mid = (lo + hi) >> 1;
      largest = Math.max(this.visit(2 * node + 1, lo, mid), this.visit(2 * node + 2, mid, hi));
    }
    this.largest[node] = largest;
    return largest;
  }
}

/**
 * Sampling ∝ non-negative values with updates in O(log n). Every update recomputes the sums on
 * its path from the children (never by adding a delta), so no rounding drift accumulates.
 */
class SumTree {
  private readonly leaves: number;
  private readonly sums: Float64Array;
  constructor(size: number) {
    let leaves = 1;
    while (leaves < size) leaves *= 2;
    this.leaves = leaves;
    this.sums = new Float64Array(2 * leaves);
  }
  set(i: number, value: number): void {
    let node = this.leaves + i;
    this.sums[node] = value;
    for (node >>= 1; node >= 1; node >>= 1) this.sums[node] = this.sums[2 * node]! + this.sums[2 * node + 1]!;
  }
  /** Index drawn with probability value/total for a uniform u ∈ [0, 1); −1 when the total is 0. */
  sample(u: number): number {
    if (!(this.sums[1]! > 0)) return -1;
    let target = u * this.sums[1]!;
    let node = 1;
    while (node < this.leaves) {
      const left = this.sums[2 * node]!;
      // Rounding can leave the target past a zero child: never descend into one.
      if ((target < left && left > 0) || !(this.sums[2 * node + 1]! > 0)) node = 2 * node;
      else {
        target -= left;
        node = 2 * node + 1;
      }
    }
    return node - this.leaves;
  }
}

/** mulberry32: a small, fast 32-bit generator; same seed, same stream on every platform. */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
