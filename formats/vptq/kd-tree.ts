import { KD_LEAF_SIZE, type KdTree } from "./kd-tree-build.js";

export { buildKdTree, KD_LEAF_SIZE, type KdTree } from "./kd-tree-build.js";

/**
 * A k-d tree over points (codebook centroids, or k-means++'s data), with exact searches:
 * nearest (warm-startable), and the m nearest. Cells are pruned by the incremental distance to
 * the cell (Arya & Mount 1993). Answers are the exact arg-min of the squared Euclidean distance,
 * never approximate. Ties go to the lower point index, and a distance is always the sequential
 * float64 sum Σ_d (q_d − p_d)² in coordinate order: a brute-force scan (the GPU's,
 * kernels/kmeans) computes the same values and so picks the same points.
 *
 * A query may be partial: only its first `activeDims` coordinates are compared (the last
 * vector of a column whose output rows do not fill it: the padding rows do not exist in the
 * weight and are dropped by the decoder, so they must not steer the choice).
 *
 * In 8 dimensions a tree over 4096 points still visits about half of them per query (its cells
 * are split only once or twice per coordinate); assign.ts adds what makes k-means fast.
 */

/** The search's answer; its incoming values are a bound the search must beat (Infinity: none). */
export interface Nearest {
  index: number;
  distanceSquared: number;
}

// Search state lives at module level so the recursion passes only what changes per node.
let tree: KdTree;
let query: Float64Array;
let queryOffset = 0;
let queryDims = 0;
let bestIndex = -1;
let bestDistance = Infinity;
/** Cells at or beyond this squared distance cannot change the answer. */
let pruneDistance = Infinity;
let cellOffset = new Float64Array(16);
// m-nearest mode: a max-heap of the m best so far (root: the worst of them).
let heapCapacity = 0;
let heapSize = 0;
let heapIds = new Int32Array(0);
let heapDistances = new Float64Array(0);
let prefilled = 0;
let prefilledIds = new Int32Array(0);

/**
 * Nearest point to query[offset … offset+activeDims) over the first activeDims coordinates.
 * `result` comes in as a bound (e.g. the previous assignment, to prune from the start) and goes
 * out as the answer; an unbeaten bound is returned unchanged.
 */
export function nearestPoint(t: KdTree, q: Float64Array, offset: number, activeDims: number, result: Nearest): void {
  start(t, q, offset, activeDims, 0);
  bestIndex = result.index;
  bestDistance = result.distanceSquared;
  pruneDistance = bestDistance;
  searchNode(0, 0, t.count, 0);
  result.index = bestIndex;
  result.distanceSquared = bestDistance;
}

/**
 * The m points nearest to query[offset … offset+activeDims), nearest first, into
 * ids/distancesSquared. Returns how many were found: min(m, points).
 */
export function nearestPoints(t: KdTree, q: Float64Array, offset: number, activeDims: number, m: number, ids: Int32Array, distancesSquared: Float64Array, known = 0): number {
  start(t, q, offset, activeDims, m);
  // Warm start: the first `known` entries are distinct points with their distances; once they
  // fill the heap, the search only enters cells that can beat the worst of them.
  const count = Math.min(known, m);
  for (let r = 0; r < count; r++) accept(distancesSquared[r]!, ids[r]!);
  if (prefilledIds.length < count) prefilledIds = new Int32Array(m);
  prefilledIds.set(ids.subarray(0, count));
  prefilled = count;
  if (m > 0) searchNode(0, 0, t.count, 0);
  // Heap sort: pop the worst into the back.
  const found = heapSize;
  for (; heapSize > 0; siftDown()) {
    const last = heapSize - 1;
    ids[last] = heapIds[0]!;
    distancesSquared[last] = heapDistances[0]!;
    heapIds[0] = heapIds[last]!;
    heapDistances[0] = heapDistances[last]!;
    heapSize = last;
  }
  return found;
}

function start(t: KdTree, q: Float64Array, offset: number, activeDims: number, m: number): void {
  tree = t;
  query = q;
  queryOffset = offset;
  queryDims = activeDims;
  heapCapacity = m;
  heapSize = 0;
  prefilled = 0;
  pruneDistance = Infinity;
  if (heapIds.length < m) {
    heapIds = new Int32Array(m);
    heapDistances = new Float64Array(m);
  }
  if (cellOffset.length < t.dim) cellOffset = new Float64Array(t.dim);
  else cellOffset.fill(0, 0, t.dim);
}

function searchNode(node: number, lo: number, hi: number, boxDistance: number): void {
  if (hi - lo <= KD_LEAF_SIZE) {
    if (queryDims === 8) scanLeaf8(lo, hi);
    else scanLeaf(lo, hi);
    return;
  }
  const d = tree.splitDim[node]!;
  const mid = (lo + hi) >> 1;
  // A coordinate the query lacks never separates it from a cell: offset 0, both sides visited.
  const diff = d < queryDims ? query[queryOffset + d]! - tree.splitValue[node]! : 0;
  const old = cellOffset[d]!;
  const farDistance = boxDistance - old * old + diff * diff;
  // The far cell is entered unless it is surely farther than the bound. ≤ alone is not enough: a
  // cell exactly at the bound can hold a tie with a lower index, and farDistance, built by adding
  // and removing squares, may round a few ulps above the leaf's own sum for that tie. The slack
  // (1e-12 of every magnitude involved, ~10⁴ ulps) only costs a rare extra visit.
  const slack = 1e-12 * (pruneDistance + boxDistance + old * old + diff * diff);
  if (diff < 0) {
    searchNode(2 * node + 1, lo, mid, boxDistance);
    if (farDistance <= pruneDistance + slack) {
      cellOffset[d] = diff;
      searchNode(2 * node + 2, mid, hi, farDistance);
      cellOffset[d] = old;
    }
  } else {
    searchNode(2 * node + 2, mid, hi, boxDistance);
    if (farDistance <= pruneDistance + slack) {
      cellOffset[d] = diff;
      searchNode(2 * node + 1, lo, mid, farDistance);
      cellOffset[d] = old;
    }
  }
}

/** (distance, index) order: the nearer point, or the lower index at equal distance. */
function before(distanceA: number, idA: number, distanceB: number, idB: number): boolean {
  return distanceA < distanceB || (distanceA === distanceB && idA < idB);
}

/** A point at most pruneDistance away was met: kept if it beats the current answer in (distance, index) order. */
function accept(sum: number, id: number): void {
  if (heapCapacity === 0) {
    if (!before(sum, id, bestDistance, bestIndex < 0 ? 0x7fffffff : bestIndex)) return;
    bestDistance = sum;
    bestIndex = id;
    pruneDistance = sum;
    return;
  }
  // A warm-start point met again in the tree is already in the heap (or was pushed out by nearer ones).
  if (prefilled > 0 && wasPrefilled(id)) return;
  if (heapSize < heapCapacity) {
    // Sift up.
    let at = heapSize++;
    while (at > 0) {
      const parent = (at - 1) >> 1;
      if (before(sum, id, heapDistances[parent]!, heapIds[parent]!)) break;
      heapIds[at] = heapIds[parent]!;
      heapDistances[at] = heapDistances[parent]!;
      at = parent;
    }
    heapIds[at] = id;
    heapDistances[at] = sum;
  } else {
    if (!before(sum, id, heapDistances[0]!, heapIds[0]!)) return;
    heapIds[0] = id;
    heapDistances[0] = sum;
    siftDown();
  }
  if (heapSize === heapCapacity) pruneDistance = heapDistances[0]!;
}

function wasPrefilled(id: number): boolean {
  for (let r = 0; r < prefilled; r++) if (prefilledIds[r] === id) return true;
  return false;
}

function siftDown(): void {
  const id = heapIds[0]!;
  const distance = heapDistances[0]!;
  let at = 0;
  for (;;) {
    let child = 2 * at + 1;
    if (child >= heapSize) break;
    if (child + 1 < heapSize && before(heapDistances[child]!, heapIds[child]!, heapDistances[child + 1]!, heapIds[child + 1]!)) child++;
    if (before(heapDistances[child]!, heapIds[child]!, distance, id)) break;
    heapIds[at] = heapIds[child]!;
    heapDistances[at] = heapDistances[child]!;
    at = child;
  }
  heapIds[at] = id;
  heapDistances[at] = distance;
}

/** The common vector length, unrolled: about twice as fast as the loop in V8. */
function scanLeaf8(lo: number, hi: number): void {
  const q = query;
  const o = queryOffset;
  const p = tree.points;
  const x0 = q[o]!, x1 = q[o + 1]!, x2 = q[o + 2]!, x3 = q[o + 3]!, x4 = q[o + 4]!, x5 = q[o + 5]!, x6 = q[o + 6]!, x7 = q[o + 7]!;
  for (let i = lo, b = lo * 8; i < hi; i++, b += 8) {
    const d0 = x0 - p[b]!, d1 = x1 - p[b + 1]!, d2 = x2 - p[b + 2]!, d3 = x3 - p[b + 3]!;
    const d4 = x4 - p[b + 4]!, d5 = x5 - p[b + 5]!, d6 = x6 - p[b + 6]!, d7 = x7 - p[b + 7]!;
    const sum = d0 * d0 + d1 * d1 + d2 * d2 + d3 * d3 + d4 * d4 + d5 * d5 + d6 * d6 + d7 * d7;
    if (sum <= pruneDistance) accept(sum, tree.ids[i]!);
  }
}

/**
 * Any length, in coordinate order four at a time, abandoning a candidate once it cannot win: the
 * partial sums only grow, so an abandoned one would have lost, and a finished one is the
 * sequential sum every other path computes.
 */
function scanLeaf(lo: number, hi: number): void {
  const q = query;
  const o = queryOffset;
  const p = tree.points;
  const dims = queryDims;
  const stride = tree.dim;
  const quads = dims & ~3;
  for (let i = lo, b = lo * stride; i < hi; i++, b += stride) {
    let sum = 0;
    let d = 0;
    for (; d < quads && sum <= pruneDistance; d += 4) {
      const d0 = q[o + d]! - p[b + d]!, d1 = q[o + d + 1]! - p[b + d + 1]!;
      const d2 = q[o + d + 2]! - p[b + d + 2]!, d3 = q[o + d + 3]! - p[b + d + 3]!;
      sum = sum + d0 * d0 + d1 * d1 + d2 * d2 + d3 * d3;
    }
    if (d < quads) continue;
    for (; d < dims; d++) {
      const diff = q[o + d]! - p[b + d]!;
      sum += diff * diff;
    }
    if (sum <= pruneDistance) accept(sum, tree.ids[i]!);
  }
}
