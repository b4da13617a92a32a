import { FormatError, UsageError } from "../errors.js";
import { upperCholeskyOfInverse, type CholeskyOptions } from "./cholesky.js";
import type { Hessian } from "./hessian.js";

/**
 * Everything GPTQ-family quantizers do to (W, H) before the column loop, as separate steps so
 * each quantizer can keep its reference's order (GPTQ: dead columns, permutation, damping;
 * SpQR: permutation, damping, dead columns). All work on the engine's layout: the weight
 * transposed to [K][N] (each input column contiguous) in Float64, H as K×K row-major.
 *
 * Permutations follow the formats' convention: position i holds original column perm[i].
 */

/** Transposes a row-major [rows][cols] weight to [cols][rows] Float64, taking original column perm[i] into position i. */
export function toColumnMajor(weight: Float32Array | Float64Array, rows: number, cols: number, perm?: Int32Array): Float64Array {
  const weightT = new Float64Array(rows * cols);
  // 32×32 tiles keep both the strided reads and the strided writes inside L1.
  const TILE = 32;
  for (let r0 = 0; r0 < rows; r0 += TILE) {
    const rEnd = Math.min(r0 + TILE, rows);
    for (let i0 = 0; i0 < cols; i0 += TILE) {
      const iEnd = Math.min(i0 + TILE, cols);
      for (let i = i0; i < iEnd; i++) {
        const source = perm === undefined ? i : perm[i]!;
        const out = i * rows;
        for (let r = r0; r < rEnd; r++) weightT[out + r] = weight[r * cols + source]!;
      }
    }
  }
  return weightT;
}

/** Inverse of `toColumnMajor`: row-major [rows][cols] Float32 in original column order. */
export function fromColumnMajor(weightT: Float64Array, rows: number, cols: number, perm?: Int32Array): Float32Array {
  const weight = new Float32Array(rows * cols);
  scatterFromColumnMajor(weightT, weight, rows, cols, perm);
  return weight;
}

/**
 * target[r·cols + perm[i]] = sourceT[i·rows + r]: a column-major (engine layout) array back to
 * row-major original column order, in 32×32 tiles. Serves weights and codes alike.
 */
export function scatterFromColumnMajor(sourceT: Float64Array | Uint8Array, target: Float32Array | Uint8Array, rows: number, cols: number, perm?: Int32Array): void {
  const TILE = 32;
  for (let r0 = 0; r0 < rows; r0 += TILE) {
    const rEnd = Math.min(r0 + TILE, rows);
    for (let i0 = 0; i0 < cols; i0 += TILE) {
      const iEnd = Math.min(i0 + TILE, cols);
      for (let i = i0; i < iEnd; i++) {
        const column = perm === undefined ? i : perm[i]!;
        const source = i * rows;
        for (let r = r0; r < rEnd; r++) target[r * cols + column] = sourceT[source + r]!;
      }
    }
  }
}

/**
 * Columns whose inputs were always zero (diag H = 0) cannot affect the output: set H[c,c] = 1
 * so H stays invertible, and W[:,c] = 0 so they quantize to nothing. `weightT` is [size][rows]
 * in the same column order as `h`; both are changed in place. Returns the dead columns.
 */
export function fixDeadColumns(h: Float64Array, size: number, weightT: Float64Array | undefined, rows: number): number[] {
  const dead: number[] = [];
  for (let c = 0; c < size; c++) {
    if (h[c * size + c] !== 0) continue;
    dead.push(c);
    h[c * size + c] = 1;
    weightT?.fill(0, c * rows, (c + 1) * rows);
  }
  return dead;
}

/** H += percDamp · mean(|diag H|) · I in place (|·| as SpQR writes it; diag H ≥ 0 for a real Hessian). Returns the amount added. */
export function dampHessian(h: Float64Array, size: number, percDamp: number): number {
  let sum = 0;
  for (let c = 0; c < size; c++) sum += Math.abs(h[c * size + c]!);
  const damp = size === 0 ? 0 : (percDamp * sum) / size;
  for (let c = 0; c < size; c++) h[c * size + c]! += damp;
  return damp;
}

/** H ← D·H·D in place for D = diag(scale): the Hessian of the inputs of a weight stored divided by `scale` per column. */
export function scaleHessian(h: Float64Array, size: number, scale: Float64Array): void {
  for (let i = 0; i < size; i++) {
    const si = scale[i]!;
    for (let j = 0; j < size; j++) h[i * size + j]! *= si * scale[j]!;
  }
}

/** Act-order: columns by decreasing diag H; ties keep their original order (a stable argsort). */
export function actOrderPermutation(h: Float64Array, size: number): Int32Array {
  const order = Array.from({ length: size }, (_, c) => c);
  order.sort((x, y) => h[y * size + y]! - h[x * size + x]! || x - y);
  return Int32Array.from(order);
}

/** inverse[perm[i]] = i. */
export function invertPermutation(perm: Int32Array): Int32Array {
  const inverse = new Int32Array(perm.length);
  for (let i = 0; i < perm.length; i++) inverse[perm[i]!] = i;
  return inverse;
}

/** H[perm][:, perm] as a new array. */
export function permuteHessian(h: Float64Array, size: number, perm: Int32Array): Float64Array {
  const permuted = new Float64Array(size * size);
  for (let i = 0; i < size; i++) {
    const source = perm[i]! * size;
    const out = i * size;
    for (let j = 0; j < size; j++) permuted[out + j] = h[source + perm[j]!]!;
  }
  return permuted;
}

export interface PrepareOptions {
  /** Fraction of mean(diag H) added to the diagonal; GPTQ's percdamp. Default 0.01. */
  percDamp?: number;
  /** Quantize columns by decreasing diag H (desc_act). Ignored when `perm` is given. */
  actOrder?: boolean;
  /** An explicit column order (position i quantizes original column perm[i]). */
  perm?: Int32Array;
  /**
   * Per-column factors d (original numbering) of a weight that the loop quantizes as W·D⁻¹: H is
   * taken as D·H·D, so the loop's loss is still the true tr(ΔW·H·ΔWᵀ) (VPTQ's column norm).
   */
  columnScale?: Float64Array;
  /** Return the damped, permuted H too (size² doubles kept alive while the caller holds it). */
  keepHessian?: boolean;
  /** Named in HESSIAN_NOT_PD errors. */
  layerName?: string;
  /** Computes U from the damped H in quantization order, as `upperCholeskyOfInverse` (the default) does; the GPU's is kernels/linalg/cholesky-gpu.ts. */
  factorize?: (h: Float64Array, size: number, options: CholeskyOptions) => Float64Array;
}

export interface PreparedLayer {
  /** Weight as [K][N] Float64 in quantization order, dead columns zeroed. The loop updates it in place. */
  weightT: Float64Array;
  /** Upper Cholesky factor of the damped H⁻¹, in quantization order (K×K row-major). */
  u: Float64Array;
  /** Quantization order, or undefined for the identity. */
  perm: Int32Array | undefined;
  /** Dead columns, in original numbering. */
  deadColumns: number[];
  /** The amount added to diag H. */
  damp: number;
  /** With `keepHessian`: the damped H in quantization order (size × size) that U was factored from. */
  h?: Float64Array;
}

/**
 * GPTQ's preparation (`fasterquant`): dead columns, then the act-order permutation (computed
 * after dead columns got H[c,c] = 1), then damping, then U = chol_upper(H⁻¹). The caller's
 * Hessian is not modified. Throws FormatError HESSIAN_NOT_PD when damping is not enough.
 */
export function prepareSecondOrder(weight: Float32Array | Float64Array, rows: number, hessian: Hessian, options: PrepareOptions = {}): PreparedLayer {
  const size = hessian.size;
  checkShapes(weight, rows, hessian, options);
  let h: Float64Array = hessian.data.slice(0, size * size);
  if (options.columnScale !== undefined) scaleHessian(h, size, options.columnScale);
  const deadColumns = fixDeadColumns(h, size, undefined, rows);
  const perm = options.perm ?? (options.actOrder === true ? actOrderPermutation(h, size) : undefined);
  const weightT = toColumnMajor(weight, rows, size, perm);
  if (perm !== undefined) h = permuteHessian(h, size, perm);
  const position = perm === undefined ? undefined : invertPermutation(perm);
  for (const c of deadColumns) {
    const i = position === undefined ? c : position[c]!;
    weightT.fill(0, i * rows, (i + 1) * rows);
  }
  const damp = dampHessian(h, size, options.percDamp ?? 0.01);
  const u = (options.factorize ?? upperCholeskyOfInverse)(h, size, { ...(options.layerName === undefined ? {} : { layerName: options.layerName }), ...(perm === undefined ? {} : { columnLabels: perm }) });
  return { weightT, u, perm, deadColumns, damp, ...(options.keepHessian === true ? { h } : {}) };
}

function checkShapes(weight: Float32Array | Float64Array, rows: number, hessian: Hessian, options: PrepareOptions): void {
  const tensor = options.layerName === undefined ? {} : { tensor: options.layerName };
  const size = hessian.size;
  if (!Number.isSafeInteger(size) || size < 0 || hessian.data.length !== size * size) {
    throw new FormatError("SHAPE_SIZE_MISMATCH", "Hessian data is not size × size", { ...tensor, expected: size * size, actual: hessian.data.length });
  }
  if (weight.length !== rows * size) throw new FormatError("SHAPE_SIZE_MISMATCH", "weight is not rows × Hessian size", { ...tensor, expected: rows * size, actual: weight.length });
  if (options.columnScale !== undefined && options.columnScale.length !== size) throw new UsageError("BAD_ARGUMENT", "columnScale has the wrong length", { ...tensor, expected: size, actual: options.columnScale.length });
  const perm = options.perm;
  if (perm === undefined) return;
  const seen = new Uint8Array(size);
  for (const c of perm) {
    if (!(c >= 0 && c < size) || seen[c] === 1) throw new UsageError("BAD_ARGUMENT", "perm is not a permutation of the columns", { ...tensor, actual: c });
    seen[c] = 1;
  }
  if (perm.length !== size) throw new UsageError("BAD_ARGUMENT", "perm has the wrong length", { ...tensor, expected: size, actual: perm.length });
}
