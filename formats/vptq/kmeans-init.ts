
/**
 * k-means initialisations, deterministic for a seed: cuML's init='random' (k distinct vectors,
 * uniformly) and weighted k-means++ (Arthur & Vassilvitskii 2007: the first centre ∝ w, each
 * next ∝ w·D², D the distance to the nearest centre so far).
 *
 * k-means++ is n·k distance evaluations done plainly: 2.7·10¹¹ for k = 65536 over 0.5M
 * vectors; the triangle inequality (kMeansPlusPlus) removes most of them, exactly.
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

/**
 * Weighted k-means++, exact, with the triangle-inequality pruning of Raff (2021, "Exact
 * acceleration of k-means++ and k-means‖"). Every full vector belongs to the cluster of its
 * nearest centre so far, at distance D; each cluster knows its largest D (its radius R). A new
 * centre c can take a vector x of cluster m only if |x − c| < D(x) ≤ R_m, and
 * |x − c| ≥ |c_m − c| − D(x), so clusters with |c_m − c| ≥ 2·R_m are skipped whole, and inside
 * a scanned cluster only members with 2·D(x) > |c_m − c| are measured. Centres never move while
 * seeding, so a member's D stays fixed while it stays: each member list is kept sorted by D,
 * largest first, and a scan stops at the first member that cannot move. Late in the run a new
 * centre touches a few neighbouring clusters, and only their outer members.
 *
 * Partial vectors (the triangle inequality of the full space does not bound their distance over
 * their real coordinates) are measured against every centre, one by one: there is one per column.
 */
export function kMeansPlusPlus(data: InitData, k: number, random: () => number): Float64Array {
  const { count, dim, vectors, weights, partialFrom, partialDims } = data;
  const centroids = new Float64Array(k * dim);
  const nearestSquared = new Float64Array(count).fill(Infinity);
  const sampler = new SumTree(count);
  for (let i = 0; i < count; i++) sampler.set(i, weights[i]!);
  const clusters = new ClusterSet(dim, k, nearestSquared, weights, sampler);
  let fallback = 0;
  for (let j = 0; j < k; j++) {
    let drawn = sampler.sample(random());
    // Nothing left to draw (fewer distinct vectors than k, or all weights 0): the next vector not yet a centre.
    if (drawn < 0) {
      while (fallback < count && nearestSquared[fallback] === 0) fallback++;
      drawn = fallback < count ? fallback : j % count;
    }
    seedCentroid(data, drawn, centroids, j);
    const centre = centroids.subarray(j * dim, (j + 1) * dim);
    if (j === 0) clusters.seedFirst(centre, vectors, partialFrom);
    else clusters.addCentre(centroids);
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
 * The full vectors grouped by nearest centre so far. Each cluster is one Float64Array of
 * records [D², id, x₀ … x_{dim−1}], sorted by D² descending (ties: lower id first), so a scan
 * reads memory in order. A cluster only ever loses members after it is made: the records
 * before `starts[m]` are left behind, and the array is copied smaller once they are the larger part.
 */
class ClusterSet {
  private readonly stride: number;
  private readonly records: Float64Array[] = [];
  private readonly starts: Int32Array;
  /** Largest D² among each centre's members (its first record's). */
  private readonly radiusSquared: Float64Array;
  /** Records moving to the new centre, and the records that stay during one scan. */
  private taken: Float64Array;
  private kept: Float64Array;

  /** `nearestSquared` and `sampler` are by vector id, as the caller draws from them. */
  constructor(
    private readonly dim: number,
    k: number,
    private readonly nearestSquared: Float64Array,
    private readonly weights: Float64Array,
    private readonly sampler: SumTree,
  ) {
    this.stride = dim + 2;
    this.radiusSquared = new Float64Array(k);
    this.starts = new Int32Array(k);
    this.taken = new Float64Array(1024 * this.stride);
    this.kept = new Float64Array(1024 * this.stride);
  }

  /** The first centre owns every full vector (the first `fullCount` of `vectors`). */
  seedFirst(centre: Float64Array, vectors: Float64Array, fullCount: number): void {
    const { dim, stride } = this;
    const all = new Float64Array(fullCount * stride);
    for (let i = 0; i < fullCount; i++) {
      const at = i * stride;
      all.set(vectors.subarray(i * dim, (i + 1) * dim), at + 2);
      all[at + 1] = i;
      all[at] = squaredTo(all, at + 2, centre, dim, 0);
      this.setNearest(i, all[at]!);
    }
    this.pushCluster(all, fullCount);
  }

  /** Moves to the new centre (index `records.length`) every full vector nearer to it than to its own centre. */
  addCentre(centroids: Float64Array): void {
    const { dim, stride } = this;
    const j = this.records.length;
    const centre = centroids.subarray(j * dim, (j + 1) * dim);
    let takenCount = 0;
    for (let m = 0; m < j; m++) {
      const limit = 4 * this.radiusSquared[m]!;
      // |c_m − c|², abandoned once it reaches 4·R_m²: the cluster cannot lose a member.
      let between = 0;
      for (let d = 0; d < dim && between < limit; d++) between += (centroids[m * dim + d]! - centre[d]!) ** 2;
      if (between >= limit) continue;
      const list = this.records[m]!;
      const start = this.starts[m]!;
      let keptCount = 0;
      let at = start;
      // 2·D(x) ≤ |c_m − c| ⇒ |x − c| ≥ D(x): x and every member after it stay.
      for (; at < list.length && 4 * list[at]! > between; at += stride) {
        const own = list[at]!;
        const squared = squaredTo(list, at + 2, centre, dim, own);
        if (squared < own) {
          this.taken = ensure(this.taken, (takenCount + 1) * stride);
          copyRecord(list, at, this.taken, takenCount * stride, stride);
          this.taken[takenCount * stride] = squared;
          this.setNearest(list[at + 1]!, squared);
          takenCount++;
        } else {
          this.kept = ensure(this.kept, (keptCount + 1) * stride);
          copyRecord(list, at, this.kept, keptCount * stride, stride);
          keptCount++;
        }
      }
      const scanned = (at - start) / stride;
      if (keptCount === scanned) continue;
      // The members that stay close up at the end of the scanned prefix, in order.
      const newStart = at - keptCount * stride;
      list.set(this.kept.subarray(0, keptCount * stride), newStart);
      this.starts[m] = newStart;
      if (newStart > 64 * stride && 2 * newStart > list.length) {
        this.records[m] = list.slice(newStart);
        this.starts[m] = 0;
      }
      const rest = this.records[m]!;
      this.radiusSquared[m] = this.starts[m]! < rest.length ? rest[this.starts[m]!]! : 0;
    }
    this.pushCluster(this.taken, takenCount);
  }

  /** Appends a cluster made of the first `count` records of `source`, sorted. */
  private pushCluster(source: Float64Array, count: number): void {
    const { stride } = this;
    const order = Array.from({ length: count }, (_, r) => r);
    order.sort((a, b) => source[b * stride]! - source[a * stride]! || source[a * stride + 1]! - source[b * stride + 1]!);
    const sorted = new Float64Array(count * stride);
    for (let r = 0; r < count; r++) sorted.set(source.subarray(order[r]! * stride, (order[r]! + 1) * stride), r * stride);
    this.radiusSquared[this.records.length] = count > 0 ? sorted[0]! : 0;
    this.records.push(sorted);
  }

  private setNearest(id: number, squared: number): void {
    this.nearestSquared[id] = squared;
    this.sampler.set(id, this.weights[id]! * squared);
  }
}

/** |a[at …] − c|² over dim coordinates, abandoned (returning a value ≥ `bound`) once it reaches a positive `bound`. */
function squaredTo(a: Float64Array, at: number, c: Float64Array, dim: number, bound: number): number {
  let squared = 0;
  for (let d = 0; d < dim; d++) {
    squared += (a[at + d]! - c[d]!) ** 2;
    if (bound > 0 && squared >= bound) return squared;
  }
  return squared;
}

/** Plain loop: `subarray` + `set` would allocate a view per record. */
function copyRecord(from: Float64Array, fromAt: number, to: Float64Array, toAt: number, stride: number): void {
  for (let t = 0; t < stride; t++) to[toAt + t] = from[fromAt + t]!;
}

/** `buffer`, or a copy at least twice as large when it is shorter than `length`. */
function ensure(buffer: Float64Array, length: number): Float64Array {
  if (buffer.length >= length) return buffer;
  const grown = new Float64Array(Math.max(length, 2 * buffer.length));
  grown.set(buffer);
  return grown;
}

/**
 * Sampling ∝ non-negative values with updates in O(log n). Every update recomputes the sums on
 * its path from the children (never by adding a delta), so no rounding drift accumulates.
 */
export class SumTree {
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
