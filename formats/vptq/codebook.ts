import { FormatError } from "../errors.js";
import type { ColumnQuantizer } from "../second-order/gptq-loop.js";
import { buildKdTree, nearestPoint, type KdTree, type Nearest } from "./kd-tree.js";
import { weightedKMeans, type KMeansBackend, type KMeansData, type KMeansInit, type KMeansResult } from "./kmeans.js";
import { floatCodec, vectorRows, type VptqFloat, type VptqParams, type VptqTensor } from "./types.js";

/**
 * VPTQ codebooks: fitted by weighted k-means to one column range's vectors (vectorLen
 * consecutive output rows of one column), rounded to the 16-bit dtype, and searched exactly;
 * and the column quantizer that gives every vector of a column its indices.
 */

export interface Codebook {
  k: number;
  vectorLen: number;
  /** [k][vectorLen] 16-bit float bit patterns, as stored. */
  bits: Uint16Array;
  /** Their values: what the decoder reads, and what the search compares against. */
  values: Float64Array;
  tree: KdTree;
}

/** Where a codebook's training vectors come from: columns [from, to) of a [K][rows] array. */
export interface ColumnRange {
  sourceT: Float64Array;
  rows: number;
  from: number;
  to: number;
  vectorLen: number;
  /** Sample weight of every vector of column c (all columns of sourceT). */
  columnWeights: Float64Array;
}

export interface FitOptions {
  k: number;
  init: KMeansInit;
  seed: number;
  maxIterations: number;
  tolerance: number;
  dtype: VptqFloat;
  /** Named in errors. */
  layerName: string | undefined;
  /** Where Lloyd's iterations run; the CPU's by default. */
  backend?: KMeansBackend;
}

export function fitCodebook(range: ColumnRange, options: FitOptions): { codebook: Codebook; kmeans: KMeansResult; vectors: number } {
  const data = gatherVectors(range);
  const kmeans = weightedKMeans(data, options);
  const { round, value } = floatCodec(options.dtype);
  const { k, dtype } = options;
  const bits = new Uint16Array(k * range.vectorLen);
  const values = new Float64Array(k * range.vectorLen);
  for (let i = 0; i < bits.length; i++) {
    bits[i] = round(kmeans.centroids[i]!);
    values[i] = value(bits[i]!);
    if (!Number.isFinite(values[i]!)) {
      throw new FormatError("PACKED_VALUE_INVALID", `a centroid overflows ${dtype} (without the norm, weights must fit ${dtype})`, { ...(options.layerName === undefined ? {} : { tensor: options.layerName }), actual: kmeans.centroids[i] });
    }
  }
  const codebook = { k, vectorLen: range.vectorLen, bits, values, tree: buildKdTree(values, k, range.vectorLen) };
  return { codebook, kmeans, vectors: data.count };
}

/**
 * The range's vectors: every column's full vectors first, then the partial last vectors
 * (rows % vectorLen real rows, the padding left 0 and ignored by k-means), each weighted by
 * its column's sample weight.
 */
function gatherVectors(range: ColumnRange): KMeansData {
  const { sourceT, rows, from, to, vectorLen, columnWeights } = range;
  const full = Math.floor(rows / vectorLen);
  const tail = rows - full * vectorLen;
  const partialFrom = (to - from) * full;
  const count = partialFrom + (tail > 0 ? to - from : 0);
  const vectors = new Float64Array(count * vectorLen);
  const weights = new Float64Array(count);
  for (let c = from; c < to; c++) {
    const at = (c - from) * full;
    vectors.set(sourceT.subarray(c * rows, c * rows + full * vectorLen), at * vectorLen);
    weights.fill(columnWeights[c]!, at, at + full);
    if (tail > 0) {
      const partial = partialFrom + (c - from);
      vectors.set(sourceT.subarray(c * rows + full * vectorLen, (c + 1) * rows), partial * vectorLen);
      weights[partial] = columnWeights[c]!;
    }
  }
  return { vectors, count, dim: vectorLen, weights, partialFrom, partialDims: tail === 0 ? vectorLen : tail };
}

/** The books' bits back to back (codebook g at g·k·vectorLen), as the tensor stores them. */
export function concatBits(books: Codebook[]): Uint16Array {
  const all = new Uint16Array(books.reduce((n, b) => n + b.bits.length, 0));
  let at = 0;
  for (const b of books) {
    all.set(b.bits, at);
    at += b.bits.length;
  }
  return all;
}


export interface ColumnBooks {
  main: Codebook[];
  /** One per group, or undefined without a residual codebook. */
  residual: Codebook[] | undefined;
  outlier: Codebook | undefined;
}

/**
 * Nearest-centroid searches for a whole column at once: the column's vectors are contiguous in
 * `queries` ([count][vectorLen], the last one with `lastActive` real coordinates). Every backend
 * gives the exact arg-min of the sequential squared distance, ties to the lower index
 * (kd-tree.ts), so all give the same indices.
 */
export interface CodebookSearch {
  readonly description: string;
  /** mainOut[v]: nearest centroid of `main`; with `residual`, resOut[v]: nearest of `residual` to (v − main centroid). */
  nearest(main: Codebook, residual: Codebook | undefined, queries: Float64Array, count: number, lastActive: number, mainOut: Int32Array, resOut: Int32Array | undefined): void;
  /** The layer is done with `book`: a search that keeps copies of codebooks (the GPU's) drops them. */
  forget?(book: Codebook): void;
}

/** The k-d tree searches, one vector at a time. */
export const cpuCodebookSearch: CodebookSearch = {
  description: "cpu",
  nearest(main, residual, queries, count, lastActive, mainOut, resOut) {
    const vl = main.vectorLen;
    const found: Nearest = { index: -1, distanceSquared: Infinity };
    const difference = new Float64Array(vl);
    const find = (book: Codebook, source: Float64Array, offset: number, active: number): number => {
      found.index = -1;
      found.distanceSquared = Infinity;
      nearestPoint(book.tree, source, offset, active, found);
      return found.index;
    };
    for (let v = 0; v < count; v++) {
      const active = v === count - 1 ? lastActive : vl;
      const m = find(main, queries, v * vl, active);
      mainOut[v] = m;
      if (residual === undefined || resOut === undefined) continue;
      for (let t = 0; t < active; t++) difference[t] = queries[v * vl + t]! - main.values[m * vl + t]!;
      resOut[v] = find(residual, difference, 0, active);
    }
  },
};

/** Column `column`'s codebooks (in quantization order): the outlier book, or its group's main and residual books. */
export interface ColumnCodebooks {
  book: Codebook;
  residual: Codebook | undefined;
  outlier: boolean;
  /** The column's group (0 for an outlier column). */
  group: number;
}

export function columnCodebooks(p: VptqParams, books: ColumnBooks, column: number): ColumnCodebooks {
  if (column < p.outlierSize) return { book: books.outlier!, residual: undefined, outlier: true, group: 0 };
  const group = Math.floor((column - p.outlierSize) / p.groupSize);
  return { book: books.main[group]!, residual: books.residual?.[group], outlier: false, group };
}

/**
 * Writes vector `r` of column `column`'s indices into `tensor`: the outlier index, or the main
 * index (position e of row r of group g's [numIdx][groupSize] block) and, with a residual
 * codebook, the residual index.
 */
export function writeColumnIndices(tensor: VptqTensor, cb: ColumnCodebooks, column: number, r: number, main: number, res: number | undefined): void {
  const p = tensor.params;
  if (cb.outlier) {
    tensor.outlierIndices![r * p.outlierSize + column] = main;
    return;
  }
  const at = (cb.group * vectorRows(tensor.outFeatures, p.vectorLen) + r) * p.groupSize + column - p.outlierSize - cb.group * p.groupSize;
  tensor.mainIndices[at] = main;
  if (res !== undefined) tensor.resIndices![at] = res;
}

/**
 * Per column (channel-independent, tech report §3.1: H⁻¹ is constant within a column, so plain
 * Euclidean distance is right): each vector takes its nearest centroid, then, with a residual
 * codebook, the residual centroid nearest to (v − main). Writes the indices into `tensor` and,
 * as the loop's quantized value, what the decoder makes of them. The last vector of a column
 * is compared over its real rows only.
 */
export function vectorColumns(tensor: VptqTensor, books: ColumnBooks, search: CodebookSearch = cpuCodebookSearch): ColumnQuantizer {
  const rows = tensor.outFeatures;
  const { round, value } = floatCodec(tensor.dtype);
  // A column has at most `rows` vectors, whichever codebook (and vector length) it uses.
  const mainFound = new Int32Array(rows);
  const resFound = new Int32Array(mainFound.length);
  return {
    quantizeColumn(column, current, quantized): void {
      const cb = columnCodebooks(tensor.params, books, column);
      const { book, residual: resBook } = cb;
      const vl = book.vectorLen;
      const count = vectorRows(rows, vl);
      search.nearest(book, resBook, current, count, rows - (count - 1) * vl, mainFound, resBook === undefined ? undefined : resFound);
      for (let r = 0, start = 0; start < rows; r++, start += vl) {
        const active = Math.min(vl, rows - start);
        const main = mainFound[r]!;
        const base = main * vl;
        writeColumnIndices(tensor, cb, column, r, main, resBook === undefined ? undefined : resFound[r]!);
        if (resBook === undefined) {
          for (let t = 0; t < active; t++) quantized[start + t] = book.values[base + t]!;
          continue;
        }
        const res = resFound[r]!;
        // The decoder's 16-bit add (__hadd2), rounded once: the f64 sum of two fp16 values is exact.
        for (let t = 0; t < active; t++) quantized[start + t] = value(round(book.values[base + t]! + resBook.values[res * vl + t]!));
      }
    },
  };
}
