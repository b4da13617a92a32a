import { FormatError } from "../errors.js";
import { gemmAdd } from "./matmul.js";

/**
 * Dense symmetric-positive-definite algebra in Float64, row-major n×n arrays.
 *
 * The blocked algorithms follow LAPACK (dpotrf "lower", dtrtri "lower"): each block step is
 * one large product through `gemmAdd`, which carries nearly all the flops, plus small scalar
 * solves on BLOCK-wide panels.
 */

/** Panel width: 64 keeps the scalar panel solves (O(n·64²)) small next to the products. */
const BLOCK = 64;

export interface CholeskyOptions {
  /** Named in the error when the matrix is not positive definite (e.g. "model.layers.0.mlp.up_proj"). */
  layerName?: string;
  /** Column numbers to report in that error, when the matrix was permuted (label of position i). */
  columnLabels?: ArrayLike<number>;
}

/** L with A = L·Lᵀ (lower triangle; the strict upper triangle is zero). Throws HESSIAN_NOT_PD. */
export function choleskyLower(a: Float64Array, size: number, options: CholeskyOptions = {}): Float64Array {
  const l = a.slice(0, size * size);
  const failed = choleskyInPlace(l, size);
  if (failed >= 0) throw notPositiveDefinite(failed, l[failed * size + failed]!, options);
  return l;
}

/** Solves L·Lᵀ·x = b in place (x holds b on entry), for a lower Cholesky factor L as choleskyLower returns. */
export function solveWithCholesky(l: Float64Array, x: Float64Array, size: number): void {
  for (let i = 0; i < size; i++) {
    let s = x[i]!;
    for (let j = 0; j < i; j++) s -= l[i * size + j]! * x[j]!;
    x[i] = s / l[i * size + i]!;
  }
  for (let i = size - 1; i >= 0; i--) {
    let s = x[i]!;
    for (let j = i + 1; j < size; j++) s -= l[j * size + i]! * x[j]!;
    x[i] = s / l[i * size + i]!;
  }
}

/** L⁻¹ of a lower-triangular L with non-zero diagonal (lower; the strict upper triangle is zero). */
export function invertLowerTriangular(l: Float64Array, size: number): Float64Array {
  const x = l.slice(0, size * size);
  zeroUpper(x, size);
  invertLowerInPlace(x, size);
  return x;
}

/** A⁻¹ of a symmetric positive definite A, as L⁻ᵀ·L⁻¹ (what torch.cholesky_inverse(cholesky(A)) computes). */
export function invertSpd(a: Float64Array, size: number, options: CholeskyOptions = {}): Float64Array {
  const lInverse = choleskyLower(a, size, options);
  invertLowerInPlace(lInverse, size);
  return lowerTransposeTimesSelf(lInverse, size);
}

/**
 * U, upper triangular with positive diagonal, such that H⁻¹ = Uᵀ·U: GPTQ's
 * `cholesky(cholesky_inverse(cholesky(H)), upper=True)`, in half the flops.
 *
 * With J the reversal permutation, J·H·J = L'·L'ᵀ gives H⁻¹ = (J·L'⁻¹·J)ᵀ·(J·L'⁻¹·J), and
 * J·L'⁻¹·J is upper triangular with a positive diagonal, so by uniqueness it is U. Reversing
 * both indices of a row-major n×n array is reversing the flat array.
 */
export function upperCholeskyOfInverse(h: Float64Array, size: number, options: CholeskyOptions = {}): Float64Array {
  const work = h.slice(0, size * size).reverse();
  const failed = choleskyInPlace(work, size);
  // Pivot j of the reversed matrix is column size − 1 − j of H.
  if (failed >= 0) throw notPositiveDefinite(size - 1 - failed, work[failed * size + failed]!, options);
  invertLowerInPlace(work, size);
  return work.reverse();
}

/** HESSIAN_NOT_PD at `position` (a position of the matrix as given). Shared with the GPU path, kernels/linalg/cholesky-gpu.ts. */
export function notPositiveDefinite(position: number, pivot: number, options: CholeskyOptions): FormatError {
  const column = options.columnLabels?.[position] ?? position;
  return new FormatError("HESSIAN_NOT_PD", `Hessian is not positive definite at column ${column} (raise the damping or add calibration samples)`, {
    ...(options.layerName === undefined ? {} : { tensor: options.layerName }),
    expected: "pivot > 0",
    actual: pivot,
  });
}

/**
 * Blocked lower Cholesky in place; returns the first failing column (its pivot is left on the
 * diagonal), or −1. Only the lower triangle is read; the strict upper triangle is zeroed.
 */
function choleskyInPlace(a: Float64Array, n: number): number {
  for (let j0 = 0; j0 < n; j0 += BLOCK) {
    const width = Math.min(BLOCK, n - j0);
    if (j0 > 0) {
      // Columns j0…j0+width of the trailing rows lose the contribution of every finished column.
      gemmAdd({ data: a, offset: j0 * n + j0, rowStride: n }, { data: a, offset: j0 * n, rowStride: n }, { data: a, offset: j0 * n, rowStride: n, transposed: true }, n - j0, j0, width, -1);
    }
    const failed = factorDiagonalBlock(a, n, j0, width);
    if (failed >= 0) return failed;
    solvePanel(a, n, j0, width);
  }
  zeroUpper(a, n);
  return -1;
}

/** Unblocked Cholesky of the (already updated) diagonal block at (j0, j0). */
function factorDiagonalBlock(a: Float64Array, n: number, j0: number, width: number): number {
  for (let j = j0; j < j0 + width; j++) {
    const rowJ = j * n;
    let pivot = a[rowJ + j]!;
    for (let p = j0; p < j; p++) pivot -= a[rowJ + p]! * a[rowJ + p]!;
    // `!(pivot > 0)` also catches NaN from non-finite input.
    if (!(pivot > 0)) {
      a[rowJ + j] = pivot;
      return j;
    }
    const diagonal = Math.sqrt(pivot);
    a[rowJ + j] = diagonal;
    for (let i = j + 1; i < j0 + width; i++) {
      const rowI = i * n;
      let sum = a[rowI + j]!;
      for (let p = j0; p < j; p++) sum -= a[rowI + p]! * a[rowJ + p]!;
      a[rowI + j] = sum / diagonal;
    }
  }
  return -1;
}

/** Rows below the diagonal block: x ← x·L11⁻ᵀ (forward substitution along each row). */
function solvePanel(a: Float64Array, n: number, j0: number, width: number): void {
  for (let i = j0 + width; i < n; i++) {
    const rowI = i * n;
    for (let j = j0; j < j0 + width; j++) {
      const rowJ = j * n;
      let sum = a[rowI + j]!;
      for (let p = j0; p < j; p++) sum -= a[rowI + p]! * a[rowJ + p]!;
      a[rowI + j] = sum / a[rowJ + j]!;
    }
  }
}

/**
 * Blocked in-place inverse of a lower-triangular matrix (upper triangle must be zero). Block
 * column jb is finished top to bottom: X[i,jb] = −L[i,i]⁻¹ · Σ_{jb≤p<i} L[i,p]·X[p,jb], where
 * row block i still holds L right of jb and the rows above already hold X.
 */
function invertLowerInPlace(x: Float64Array, n: number): void {
  const product = new Float64Array(BLOCK * BLOCK);
  for (let j0 = 0; j0 < n; j0 += BLOCK) {
    const jWidth = Math.min(BLOCK, n - j0);
    invertDiagonalBlock(x, n, j0, jWidth);
    for (let i0 = j0 + BLOCK; i0 < n; i0 += BLOCK) {
      const iWidth = Math.min(BLOCK, n - i0);
      product.fill(0, 0, iWidth * jWidth);
      gemmAdd({ data: product, offset: 0, rowStride: jWidth }, { data: x, offset: i0 * n + j0, rowStride: n }, { data: x, offset: j0 * n + j0, rowStride: n }, iWidth, i0 - j0, jWidth, -1);
      forwardSubstitute(x, n, i0, iWidth, j0, jWidth, product);
    }
  }
}

/** Unblocked in-place inverse of the lower-triangular diagonal block at (j0, j0). */
function invertDiagonalBlock(x: Float64Array, n: number, j0: number, width: number): void {
  for (let j = j0; j < j0 + width; j++) {
    const inverseDiagonal = 1 / x[j * n + j]!;
    x[j * n + j] = inverseDiagonal;
    for (let i = j + 1; i < j0 + width; i++) {
      const rowI = i * n;
      let sum = 0;
      for (let p = j; p < i; p++) sum += x[rowI + p]! * x[p * n + j]!;
      x[rowI + j] = -sum / x[rowI + i]!;
    }
  }
}

/** X[i0…, j0…] = L[i0…, i0…]⁻¹ · product, L being the (still un-inverted) diagonal block at (i0, i0). */
function forwardSubstitute(x: Float64Array, n: number, i0: number, iWidth: number, j0: number, jWidth: number, product: Float64Array): void {
  for (let r = 0; r < iWidth; r++) {
    const rowR = (i0 + r) * n;
    const out = rowR + j0;
    for (let q = 0; q < jWidth; q++) x[out + q] = product[r * jWidth + q]!;
    for (let s = 0; s < r; s++) {
      const coefficient = x[rowR + i0 + s]!;
      const rowS = (i0 + s) * n + j0;
      for (let q = 0; q < jWidth; q++) x[out + q]! -= coefficient * x[rowS + q]!;
    }
    const inverseDiagonal = 1 / x[rowR + i0 + r]!;
    for (let q = 0; q < jWidth; q++) x[out + q]! *= inverseDiagonal;
  }
}

/** Xᵀ·X for lower-triangular X, blockwise over the lower blocks (rows p < i0 of X[:, i] are zero), mirrored. */
function lowerTransposeTimesSelf(x: Float64Array, n: number): Float64Array {
  const result = new Float64Array(n * n);
  for (let i0 = 0; i0 < n; i0 += BLOCK) {
    const iWidth = Math.min(BLOCK, n - i0);
    for (let j0 = 0; j0 <= i0; j0 += BLOCK) {
      const jWidth = Math.min(BLOCK, n - j0);
      gemmAdd({ data: result, offset: i0 * n + j0, rowStride: n }, { data: x, offset: i0 * n + i0, rowStride: n, transposed: true }, { data: x, offset: i0 * n + j0, rowStride: n }, iWidth, n - i0, jWidth);
    }
  }
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) result[i * n + j] = result[j * n + i]!;
  return result;
}

function zeroUpper(a: Float64Array, n: number): void {
  for (let i = 0; i < n; i++) a.fill(0, i * n + i + 1, (i + 1) * n);
}
