/**
 * The k-d tree of kd-tree.ts: its layout and its construction (median splits on the coordinate
 * of largest spread, heap-numbered nodes). The exact searches are in kd-tree.ts.
 */

/** Points per leaf: small enough to prune well, large enough to amortise the recursion. */
export const KD_LEAF_SIZE = 8;

export interface KdTree {
  readonly dim: number;
  readonly count: number;
  /** Coordinates in tree order, [count][dim]; node n (heap-numbered) holds positions [lo, hi) found by halving [0, count). */
  readonly points: Float64Array;
  /** Index of the point at each tree position. */
  readonly ids: Int32Array;
  /** Per internal node, heap-numbered (children 2n+1, 2n+2): split coordinate and value. */
  readonly splitDim: Int32Array;
  readonly splitValue: Float64Array;
}

/** Builds the tree over `count` points of `dim` coordinates ([count][dim], row-major). */
export function buildKdTree(coordinates: Float64Array, count: number, dim: number): KdTree {
  const ids = Int32Array.from({ length: count }, (_, i) => i);
  let depth = 0;
  while (count > KD_LEAF_SIZE << depth) depth++;
  const nodeCount = 2 ** (depth + 1);
  const splitDim = new Int32Array(nodeCount);
  const splitValue = new Float64Array(nodeCount);
  const coordinate = (id: number, d: number): number => coordinates[id * dim + d]!;
  const build = (node: number, lo: number, hi: number): void => {
    if (hi - lo <= KD_LEAF_SIZE) return;
    // Split at the median of the coordinate with the largest spread: balanced, and cells
    // that stay roughly cubical, which is what makes the box distance prune.
    let best = 0;
    let bestSpread = -1;
    for (let d = 0; d < dim; d++) {
      let min = Infinity;
      let max = -Infinity;
      for (let i = lo; i < hi; i++) {
        const v = coordinate(ids[i]!, d);
        if (v < min) min = v;
        if (v > max) max = v;
      }
      if (max - min > bestSpread) {
        bestSpread = max - min;
        best = d;
      }
    }
    const mid = (lo + hi) >> 1;
    selectNth(ids, lo, hi, mid, (id) => coordinate(id, best));
    splitDim[node] = best;
    splitValue[node] = coordinate(ids[mid]!, best);
    build(2 * node + 1, lo, mid);
    build(2 * node + 2, mid, hi);
  };
  build(0, 0, count);
  const points = new Float64Array(count * dim);
  for (let i = 0; i < count; i++) {
    points.set(coordinates.subarray(ids[i]! * dim, (ids[i]! + 1) * dim), i * dim);
  }
  return { dim, count, points, ids, splitDim, splitValue };
}

/** Hoare quickselect: afterwards key(ids[lo … nth)) ≤ key(ids[nth]) ≤ key(ids[nth+1 … hi)). */
function selectNth(ids: Int32Array, lo: number, hi: number, nth: number, key: (id: number) => number): void {
  let left = lo;
  let right = hi - 1;
  while (right > left) {
    const pivot = key(ids[(left + right) >> 1]!);
    let i = left;
    let j = right;
    while (i <= j) {
      while (key(ids[i]!) < pivot) i++;
      while (key(ids[j]!) > pivot) j--;
      if (i <= j) {
        const t = ids[i]!;
        ids[i] = ids[j]!;
        ids[j] = t;
        i++;
        j--;
      }
    }
    if (nth <= j) right = j;
    else if (nth >= i) left = i;
    else return;
  }
}
