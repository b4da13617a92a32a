/**
 * The normal systems of the codebook refit (codebook-refit.ts), accumulated over a range of
 * vector-rows. Split out so that worker threads (refit-pool.ts) run exactly this code on their
 * share of the rows: the rows are cut into chunks that depend only on the shapes, each chunk is
 * summed on its own, and the chunks are added in order, so the systems are bit-identical whether
 * one thread or many computed them.
 */

/** Everything the accumulation reads; plain typed arrays, or views of shared memory in a worker. */
export interface RefitData {
  /** The loop's damped H in quantization order, size × size. */
  h: Float64Array;
  /** [size][rows] the target minus the fixed (outlier-column) values. */
  y: Float64Array;
  /** [blocks][size][2]: main and residual unknown of every column of every vector-row, −1 where none. */
  variables: Int32Array;
  rows: number;
  size: number;
  vectorLen: number;
  unknowns: number;
  /** Leading quantization-order columns with no unknowns (the outlier codebook's). */
  outlierSize: number;
  hasResidual: boolean;
}

/** Doubles of one chunk's partial result: A (unknowns²) then the right-hand sides (vectorLen × unknowns). */
export function partialLength(data: Pick<RefitData, "unknowns" | "vectorLen">): number {
  return data.unknowns * data.unknowns + data.vectorLen * data.unknowns;
}

/** Partial results kept at once are capped at this many bytes; fewer, larger chunks beyond it. */
const PARTIAL_BYTES = 256 * 2 ** 20;
const MAX_CHUNKS = 16;

/** The full vector-rows [0, fullBlocks) cut into chunks: a function of the shapes only, never of the thread count. */
export function planChunks(fullBlocks: number, data: Pick<RefitData, "unknowns" | "vectorLen">): Array<[number, number]> {
  if (fullBlocks === 0) return [];
  const byMemory = Math.max(1, Math.floor(PARTIAL_BYTES / (8 * partialLength(data))));
  const count = Math.min(MAX_CHUNKS, fullBlocks, byMemory);
  const per = Math.ceil(fullBlocks / count);
  const chunks: Array<[number, number]> = [];
  for (let from = 0; from < fullBlocks; from += per) chunks.push([from, Math.min(from + per, fullBlocks)]);
  return chunks;
}

/** Scratch one accumulating thread reuses across chunks. */
export interface RefitScratch {
  z: Float64Array;
  inBlock: Uint8Array;
  /** Row b of y as [size][vl]. */
  yb: Float64Array;
  dots: Float64Array;
}

export function refitScratch(data: RefitData): RefitScratch {
  return { z: new Float64Array(data.unknowns * data.size), inBlock: new Uint8Array(data.unknowns), yb: new Float64Array(data.vectorLen * data.size), dots: new Float64Array(data.vectorLen) };
}

/**
 * out (zeroed here, partialLength doubles) = Σ over vector-rows [from, to) with `active`
 * coordinates each of A_b = P_bᵀ·H·P_b and rhs_t = P_bᵀ·H·y_{b·v+t}. Z_b = P_bᵀ·H is formed only
 * for the unknowns row b uses: one pass over H per row, the least work the sums allow.
 */
export function accumulateSystems(data: RefitData, from: number, to: number, active: number, out: Float64Array, scratch: RefitScratch): void {
  const { h, y, variables, rows, size, vectorLen: vl, unknowns, outlierSize, hasResidual } = data;
  const { z, inBlock, yb, dots } = scratch;
  out.fill(0);
  const rhsAt = unknowns * unknowns;
  const used: number[] = [];
  for (let b = from; b < to; b++) {
    const vars = variables.subarray(b * size * 2, (b + 1) * size * 2);
    used.length = 0;
    for (let i = outlierSize; i < size; i++) {
      const hi = i * size;
      for (let s = 0; s < 2; s++) {
        const x = vars[2 * i + s]!;
        if (x < 0) continue;
        if (inBlock[x] === 0) {
          inBlock[x] = 1;
          used.push(x);
        }
        const zx = x * size;
        for (let j = 0; j < size; j++) z[zx + j]! += h[hi + j]!;
      }
    }
    // Row b of y as [size][vl]: the coordinates of one column side by side, where y strides by rows.
    yb.fill(0);
    for (let j = 0; j < size; j++) for (let t = 0; t < active; t++) yb[j * vl + t] = y[j * rows + b * vl + t]!;
    for (const x of used) {
      const zx = x * size;
      const ax = x * unknowns;
      // One pass over row x of Z_b: Z_b[x, j] lands on the unknowns column j uses (Z_b·P_b), and
      // meets row b of y in every coordinate's dot product (rhs). Coordinates past `active` meet
      // zeros. Four coordinates (v4, the common case) in registers.
      if (vl === 4) {
        let d0 = 0, d1 = 0, d2 = 0, d3 = 0;
        for (let j = 0; j < size; j++) {
          const value = z[zx + j]!;
          d0 += value * yb[4 * j]!;
          d1 += value * yb[4 * j + 1]!;
          d2 += value * yb[4 * j + 2]!;
          d3 += value * yb[4 * j + 3]!;
          const main = vars[2 * j]!;
          if (main >= 0) out[ax + main]! += value;
        }
        out[rhsAt + x]! += d0;
        out[rhsAt + unknowns + x]! += d1;
        out[rhsAt + 2 * unknowns + x]! += d2;
        out[rhsAt + 3 * unknowns + x]! += d3;
      } else {
        dots.fill(0);
        for (let j = 0; j < size; j++) {
          const value = z[zx + j]!;
          for (let t = 0; t < vl; t++) dots[t]! += value * yb[j * vl + t]!;
          const main = vars[2 * j]!;
          if (main >= 0) out[ax + main]! += value;
        }
        for (let t = 0; t < active; t++) out[rhsAt + t * unknowns + x]! += dots[t]!;
      }
      if (hasResidual) for (let j = outlierSize; j < size; j++) out[ax + vars[2 * j + 1]!]! += z[zx + j]!;
      z.fill(0, zx, zx + size);
      inBlock[x] = 0;
    }
  }
}
