import { nearestPoints, type KdTree } from "./kd-tree.js";

/**
 * Exact nearest-centroid assignment for Lloyd iterations, with adaptive distance bounds (after
 * Drake & Hamerly 2012). Each vector remembers the TRACKED centroids that were nearest at its
 * last search, and a lower bound on its distance to every other centroid: the distance to the
 * next nearest then, minus the largest centroid move since. While the nearest tracked centroid
 * is within that bound it is the nearest of all, and the vector costs TRACKED distances instead
 * of a search. In 8 dimensions an exact search visits about half of a 4096-centroid k-d tree
 * (its cells are split only once or twice per coordinate), so searches are what to avoid.
 *
 * One far-moving centroid would lower every vector's bound by its move. So the MOVER_CENTROIDS (16)
 * centroids that moved farthest are measured directly instead (a few distances per vector), and the bound
 * falls only by the largest move of the others: for every untracked centroid j,
 * |x − c_j'| ≥ |x − c_j| − move_j ≥ bound − largestOther, or j is a mover and |x − c_j'| is known.
 */

/** Centroids whose distance every vector measures after a mean update, instead of bounding it. */
export const MOVER_CENTROIDS = 16;

/** How the centroids moved in the last mean update. */
export interface CentroidMoves {
  /** The centroids that moved farthest (at most MOVER_CENTROIDS). */
  movers: Int32Array;
  /** The largest move (distance, not squared) of any other centroid. */
  largestOther: number;
}

/** The MOVER_CENTROIDS farthest moves from `before` to `after` ([k][dim]), and the largest of the rest. */
export function centroidMoves(before: Float64Array, after: Float64Array, dim: number): CentroidMoves {
  const k = before.length / dim;
  const moves = new Float64Array(k);
  for (let j = 0; j < k; j++) {
    let squared = 0;
    for (let d = 0; d < dim; d++) squared += (after[j * dim + d]! - before[j * dim + d]!) ** 2;
    moves[j] = Math.sqrt(squared);
  }
  const order = Int32Array.from({ length: k }, (_, j) => j).sort((a, b) => moves[b]! - moves[a]! || a - b);
  const count = Math.min(MOVER_CENTROIDS, k);
  return { movers: order.slice(0, count), largestOther: count < k ? moves[order[count]!]! : 0 };
}

/** Centroids remembered per vector: more widen the margin before the next search, at 4 bytes each per vector. */
export const TRACKED = 8;

export interface TrackedNearest {
  /** [count][TRACKED] centroid indices, −1 where fewer exist. */
  ids: Int32Array;
  /** Lower bound on the distance (not squared) to any centroid not tracked; −Infinity: unknown. */
  restBound: Float64Array;
}

export function trackNothing(count: number): TrackedNearest {
  return { ids: new Int32Array(count * TRACKED).fill(-1), restBound: new Float64Array(count).fill(-Infinity) };
}

export interface VectorSet {
  /** [count][dim] row-major. */
  vectors: Float64Array;
  count: number;
  dim: number;
  /** Vectors from here on have only `partialDims` real coordinates (distances ignore the rest). */
  partialFrom: number;
  partialDims: number;
}

/**
 * Gives every vector its nearest centroid (labels and squared distances out). `moves`: how the
 * centroids moved since the previous call with this `state`. Returns how many vectors needed a
 * tree search.
 */
export function assignNearest(set: VectorSet, centroids: Float64Array, tree: KdTree, state: TrackedNearest, moves: CentroidMoves, labels: Int32Array, distancesSquared: Float64Array): number {
  let searched = 0;
  const { vectors, dim } = set;
  const { movers } = moves;
  const ids = new Int32Array(TRACKED + 1);
  const squares = new Float64Array(TRACKED + 1);
  for (let i = 0; i < set.count; i++) {
    const at = i * dim;
    const active = i < set.partialFrom ? dim : set.partialDims;
    const previous = state.restBound[i]!;
    const bound = previous - moves.largestOther;
    // The bound is a difference of rounded roots: it may sit a few ulps above the true distance of
    // an untracked centroid that ties the best tracked one. The margin (as the GPU's km_nearest)
    // sends such a vector to the exact search instead. Infinity (k ≤ TRACKED) needs none.
    const safeBound = Number.isFinite(bound) ? bound - 1e-12 * (Math.abs(previous) + moves.largestOther) : bound;
    // Squared distance to the nearest untracked mover (compared as computed, not via a root).
    let moverSquared = Infinity;
    let nearestMover = -1;
    for (let u = 0; u < movers.length && bound > 0; u++) {
      const c = movers[u]!;
      if (isTracked(state.ids, i, c)) continue;
      let squared = 0;
      for (let d = 0; d < active; d++) squared += (vectors[at + d]! - centroids[c * dim + d]!) ** 2;
      if (squared < moverSquared || (squared === moverSquared && c < nearestMover)) {
        moverSquared = squared;
        nearestMover = c;
      }
    }
    state.restBound[i] = Math.min(bound, Math.sqrt(moverSquared));
    let best = Infinity;
    let bestLabel = -1;
    let known = 0;
    for (let t = i * TRACKED; t < (i + 1) * TRACKED; t++) {
      const c = state.ids[t]!;
      if (c < 0) break;
      let squared = 0;
      for (let d = 0; d < active; d++) {
        const diff = vectors[at + d]! - centroids[c * dim + d]!;
        squared += diff * diff;
      }
      ids[known] = c;
      squares[known++] = squared;
      if (squared < best || (squared === best && c < bestLabel)) {
        best = squared;
        bestLabel = c;
      }
    }
    // Every untracked centroid is at least `bound` away: the best tracked one is the nearest.
    // Strictly nearer, since an equal one with a lower index would win the tie (kd-tree.ts).
    if (bestLabel >= 0 && safeBound >= 0 && best < safeBound * safeBound && (best < moverSquared || (best === moverSquared && bestLabel < nearestMover))) {
      labels[i] = bestLabel;
      distancesSquared[i] = best;
      continue;
    }
    // The tracked centroids and the nearest untracked mover, measured above, warm-start the search.
    if (nearestMover >= 0) {
      ids[known] = nearestMover;
      squares[known++] = moverSquared;
    }
    searched++;
    const found = nearestPoints(tree, vectors, at, active, TRACKED + 1, ids, squares, known);
    const kept = Math.min(found, TRACKED);
    state.ids.set(ids.subarray(0, kept), i * TRACKED);
    state.ids.fill(-1, i * TRACKED + kept, (i + 1) * TRACKED);
    state.restBound[i] = found > TRACKED ? Math.sqrt(squares[TRACKED]!) : Infinity;
    labels[i] = ids[0]!;
    distancesSquared[i] = squares[0]!;
  }
  return searched;
}

function isTracked(ids: Int32Array, i: number, c: number): boolean {
  for (let t = i * TRACKED; t < (i + 1) * TRACKED; t++) if (ids[t] === c) return true;
  return false;
}
