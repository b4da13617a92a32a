import { isLmpackError } from "../errors.js";
import { choleskyLower, solveWithCholesky } from "../second-order/cholesky.js";
import { concatBits, type Codebook, type ColumnBooks } from "./codebook.js";
import { buildKdTree } from "./kd-tree.js";
import { computeChunks } from "./refit-pool.js";
import { accumulateSystems, partialLength, planChunks, refitScratch, type RefitData } from "./refit-systems.js";
import { floatCodec, vectorRows, type VptqTensor } from "./types.js";

/**
 * Least-squares codebook refit, an lmpack addition to VPTQ (the reference keeps k-means's
 * centroids). Once the loop has fixed every index, the decoded normalised weight is linear in
 * the centroid values, and coordinate t of every centroid only ever lands on rows ≡ t
 * (mod vectorLen). So the values that minimise the loop's own objective tr(ΔQ·H·ΔQᵀ) over all
 * codebooks at once come from one k×k normal system per coordinate, whatever the assignments:
 *
 *   (Σ_b P_bᵀ·H·P_b) c_t = Σ_b P_bᵀ·H·y_{b·v+t}
 *
 * with P_b the one-hot map from centroid to column of vector-row b (two ones per column with a
 * residual codebook: main and residual are fitted jointly) and y a row of the weight the loop
 * started from. k-means fitted the centroids to the weights before error feedback and with only
 * diag H; this fits them to the whole H and to where the indices ended up. The outlier
 * codebook, whose vectors have another length, stays as k-means left it (its columns enter the
 * system as fixed values). The solution is rounded to the codebook dtype and kept only if the
 * objective, evaluated on the rounded values, went down.
 */

/** Normal systems larger than this many unknowns per coordinate are not assembled (k×k doubles, k³/3 to factor). */
export const REFIT_MAX_UNKNOWNS = 2048;
/**
 * Nor when assembling them takes more than this many additions (vector-rows × in², ~2 ns each on
 * one thread): a 7B model's q/k/v/o (512 × 4096² at v8) and gate/up stay under it, its down
 * projection (512 × 11008²) not.
 */
export const REFIT_MAX_WORK = 2 ** 34;

export interface RefitInput {
  /** [size][rows] the normalised weight the loop started from, in quantization order (dead columns 0). */
  targetT: Float64Array;
  /** The loop's damped H in quantization order, size × size. */
  h: Float64Array;
  rows: number;
  size: number;
  /** Holds the final indices; its centroid arrays are replaced when the refit is kept. */
  tensor: VptqTensor;
  books: ColumnBooks;
  /** Decoded values of the outlier columns ([outlierSize][rows]), which the refit leaves as they are. */
  outlierValuesT: Float64Array | undefined;
  /** false: no helper threads (the result is the same either way). */
  threads?: boolean;
}

export interface RefitReport {
  /** How much tr(ΔQ·H·ΔQᵀ) fell (0 when the refit was not kept); exact without a residual codebook, whose 16-bit add it does not model. */
  reduction: number;
  kept: boolean;
  /** Why no refit was tried (too many unknowns, or too much work), when none was. */
  skipped?: string;
}

/** Refits the main (and residual) codebooks in place on `books` and `tensor`; see the file comment. */
export function refitCodebooks(input: RefitInput): RefitReport {
  const { targetT, h, rows, size, tensor, books, outlierValuesT } = input;
  const p = tensor.params;
  const vl = p.vectorLen;
  const k = p.numCentroids;
  const kr = p.numResCentroids;
  const unknowns = p.groupNum * (k + kr);
  if (unknowns > REFIT_MAX_UNKNOWNS) return { reduction: 0, kept: false, skipped: `${unknowns} unknowns per coordinate > ${REFIT_MAX_UNKNOWNS}` };
  const blocks = vectorRows(rows, vl);
  if (blocks * size * size > REFIT_MAX_WORK) return { reduction: 0, kept: false, skipped: `${blocks} vector-rows × ${size}² additions > ${REFIT_MAX_WORK}` };
  const tail = rows - (blocks - 1) * vl;
  const variables = columnVariables(tensor, blocks);
  // y = target − fixed outlier values: only main columns depend on the unknowns. A copy only when there are outlier columns.
  let y = targetT;
  if (outlierValuesT !== undefined) {
    y = targetT.slice();
    for (let i = 0; i < p.outlierSize * rows; i++) y[i]! -= outlierValuesT[i]!;
  }

  const data: RefitData = { h, y, variables, rows, size, vectorLen: vl, unknowns, outlierSize: p.outlierSize, hasResidual: kr > 0 };
  const fullBlocks = tail === vl ? blocks : blocks - 1;
  const squares = unknowns * unknowns;
  const full = new Float64Array(squares);
  const rhs = new Float64Array(vl * unknowns);
  const add = (partial: Float64Array, a: Float64Array): void => {
    for (let i = 0; i < squares; i++) a[i]! += partial[i]!;
    for (let i = 0; i < rhs.length; i++) rhs[i]! += partial[squares + i]!;
  };
  for (const partial of computeChunks(data, planChunks(fullBlocks, data), input.threads === undefined ? {} : { threads: input.threads })) add(partial, full);
  // A partial last vector-row reaches only coordinates t < tail: its A joins those systems alone.
  let last = full;
  if (fullBlocks < blocks) {
    last = new Float64Array(squares);
    const partial = new Float64Array(partialLength(data));
    accumulateSystems(data, fullBlocks, blocks, tail, partial, refitScratch(data));
    add(partial, last);
  }

  const { round, value } = floatCodec(tensor.dtype);
  const current = currentValues(books, p.groupNum, k, kr, vl);
  const next = new Float64Array(current.length);
  const nextBits = new Uint16Array(current.length);
  let lossBefore = 0;
  let lossAfter = 0;
  // Every coordinate shares A, except that a partial last vector-row adds to the first `tail`.
  const withLast = last === full ? full : addSystems(full, last, squares);
  const factors = new Map<Float64Array, Factor | undefined>();
  for (let t = 0; t < vl; t++) {
    const a = t < tail ? withLast : full;
    if (!factors.has(a)) factors.set(a, factorUsed(a, unknowns));
    const factor = factors.get(a);
    const b = rhs.subarray(t * unknowns, (t + 1) * unknowns);
    const old = new Float64Array(unknowns);
    for (let x = 0; x < unknowns; x++) old[x] = current[x * vl + t]!;
    const solved = factor === undefined ? old : solveUsed(factor, b, old);
    const rounded = new Float64Array(unknowns);
    for (let x = 0; x < unknowns; x++) {
      const bits = round(solved[x]!);
      nextBits[x * vl + t] = bits;
      rounded[x] = value(bits);
      next[x * vl + t] = rounded[x]!;
    }
    lossBefore += quadratic(a, b, old, unknowns);
    lossAfter += quadratic(a, b, rounded, unknowns);
  }
  const kept = next.every(Number.isFinite) && lossAfter < lossBefore;
  if (kept) store(books, tensor, nextBits, next, p.groupNum, k, kr, vl);
  return { reduction: kept ? lossBefore - lossAfter : 0, kept };
}

/**
 * For vector-row b and column j (quantization order): [2·(b·size + j)] the main unknown
 * (group·k + index), [+1] the residual one (groupNum·k + group·kr + index), −1 where none.
 */
function columnVariables(tensor: VptqTensor, blocks: number): Int32Array {
  const p = tensor.params;
  const size = tensor.inFeatures;
  const out = new Int32Array(blocks * size * 2).fill(-1);
  for (let g = 0; g < p.groupNum; g++) {
    for (let b = 0; b < blocks; b++) {
      for (let e = 0; e < p.groupSize; e++) {
        const at = (g * blocks + b) * p.groupSize + e;
        const j = p.outlierSize + g * p.groupSize + e;
        out[2 * (b * size + j)] = g * p.numCentroids + tensor.mainIndices[at]!;
        if (tensor.resIndices !== undefined) out[2 * (b * size + j) + 1] = p.groupNum * p.numCentroids + g * p.numResCentroids + tensor.resIndices[at]!;
      }
    }
  }
  return out;
}

function currentValues(books: ColumnBooks, groups: number, k: number, kr: number, vl: number): Float64Array {
  const values = new Float64Array(groups * (k + kr) * vl);
  books.main.forEach((book, g) => values.set(book.values, g * k * vl));
  books.residual?.forEach((book, g) => values.set(book.values, (groups * k + g * kr) * vl));
  return values;
}

function store(books: ColumnBooks, tensor: VptqTensor, bits: Uint16Array, values: Float64Array, groups: number, k: number, kr: number, vl: number): void {
  const refit = (book: Codebook, from: number): void => {
    book.bits.set(bits.subarray(from, from + book.bits.length));
    book.values.set(values.subarray(from, from + book.values.length));
    book.tree = buildKdTree(book.values, book.k, book.vectorLen);
  };
  books.main.forEach((book, g) => refit(book, g * k * vl));
  books.residual?.forEach((book, g) => refit(book, (groups * k + g * kr) * vl));
  tensor.centroids = concatBits(books.main);
  if (books.residual !== undefined) tensor.resCentroids = concatBits(books.residual);
}

function addSystems(a: Float64Array, b: Float64Array, length: number): Float64Array {
  const sum = a.slice(0, length);
  for (let i = 0; i < length; i++) sum[i]! += b[i]!;
  return sum;
}

/** cᵀAc − 2bᵀc. */
function quadratic(a: Float64Array, b: Float64Array, c: Float64Array, n: number): number {
  let total = 0;
  for (let x = 0; x < n; x++) {
    let s = 0;
    for (let y = 0; y < n; y++) s += a[x * n + y]! * c[y]!;
    total += c[x]! * (s - 2 * b[x]!);
  }
  return total;
}

/** The Cholesky factor of A restricted to the unknowns that appear (A[x,x] > 0), with its ridge. */
interface Factor {
  used: number[];
  l: Float64Array;
  ridge: number;
}

/**
 * A is PSD, singular where a centroid is never used (its row is 0: it keeps its value) and
 * possibly near-singular where centroids always appear together; a ridge of 1e-9 of the mean
 * diagonal, pulling each value toward its k-means value, keeps the factorisation stable.
 */
function factorUsed(a: Float64Array, n: number): Factor | undefined {
  const used: number[] = [];
  let trace = 0;
  for (let x = 0; x < n; x++) {
    if (a[x * n + x]! > 0) {
      used.push(x);
      trace += a[x * n + x]!;
    }
  }
  const m = used.length;
  if (m === 0) return undefined;
  const ridge = (1e-9 * trace) / m;
  const sub = new Float64Array(m * m);
  used.forEach((x, i) => {
    for (let j = 0; j < m; j++) sub[i * m + j] = a[x * n + used[j]!]!;
    sub[i * m + i]! += ridge;
  });
  try {
    return { used, l: choleskyLower(sub, m), ridge };
  } catch (error) {
    // Not positive definite even with the ridge: the centroids keep their k-means values.
    if (isLmpackError(error) && error.code === "HESSIAN_NOT_PD") return undefined;
    throw error;
  }
}

/** (A + ridge·I)·c = b + ridge·old over the used unknowns; the others keep `old`. */
function solveUsed(f: Factor, b: Float64Array, old: Float64Array): Float64Array {
  const { used, l, ridge } = f;
  const m = used.length;
  const x = Float64Array.from(used, (u) => b[u]! + ridge * old[u]!);
  solveWithCholesky(l, x, m);
  const result = old.slice();
  used.forEach((u, i) => (result[u] = x[i]!));
  return result;
}
