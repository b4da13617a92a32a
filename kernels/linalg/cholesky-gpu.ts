import { bytesOf } from "../../formats/packed-array.js";
import { KernelError } from "../../formats/errors.js";
import { notPositiveDefinite, type CholeskyOptions } from "../../formats/second-order/cholesky.js";
import type { PrepareOptions } from "../../formats/second-order/prepare.js";
import type { DevicePointer } from "../cuda/driver.js";
import type { CudaModule, LaunchShape } from "../cuda/module.js";
import type { GpuEngine } from "../engine.js";

/**
 * U = chol_upper(H⁻¹) on the GPU: formats/second-order/cholesky.ts `upperCholeskyOfInverse`, the
 * O(K³) part of GPTQ's preparation (prepareSecondOrder's `factorize` hook), in the same
 * sequence of factorizations: A = J·H·J (J reverses the order), A = L·Lᵀ, X = L⁻¹, U = J·X·J.
 *
 * Everything stays on the device between one upload of H and one download of U; the host reads
 * back 16 bytes once in between, the pivot report, which turns a failed factorization into the
 * CPU's FormatError HESSIAN_NOT_PD, with the same column. Kernels (kernels/linalg/linalg.cu), per
 * panel of PANEL columns k:
 *
 *   Cholesky, right-looking: lq_chol_f64_factor_diag (L[k,k], one block), lq_trsm_f64_x_lt
 *   (the panel below it), lq_gemm_f64_a_bt_sub_lower (the trailing matrix, lower tiles only).
 *   Inverse, L·X = I by block rows: lq_trsm_f64_l_x (X[k, 0…k]), lq_gemm_f64_a_b_sub (the
 *   right-hand sides below it).
 *
 * Float64 like the CPU, summed in another order: U agrees with the CPU's to rounding amplified
 * by the conditioning of H (test/kernels/cholesky-gpu.test.ts states and measures the bound),
 * not bit for bit. Device memory: two K×K float64 buffers (268 MB at K = 4096).
 */

/** Columns per panel: LQ_NB in linalg.cu, the CPU's BLOCK. */
const PANEL = 64;
/** Threads per block of every kernel here: LQ_GEMM_THREADS in linalg.cu. */
const THREADS = 256;
/** The products' tile edge (TILE_J = TILE_R in linalg.cu); the solves take PANEL vectors a block. */
const TILE = 64;
/** gridDim.y is at most 65535, and the products put one row of tiles on each y. */
const MAX_SIZE = 65535 * TILE;
/**
 * Blocks of the grid-stride kernels (reverse, identity): 64 per SM of a 132-SM H100, more than
 * can be resident, so that the memory system stays busy; each thread strides on beyond.
 */
const ELEMENTWISE_BLOCKS = 8448;
/** lq_pivot_report: int64 column + 1 (0: every pivot positive), then the pivot as float64. */
const REPORT_BYTES = 16;

/**
 * U, upper triangular with positive diagonal, such that H⁻¹ = Uᵀ·U, computed on the GPU.
 * Same arguments, result and errors as `upperCholeskyOfInverse(h, size, options)`: reads the
 * first size² elements of `h` (row-major; only its upper triangle, as the CPU), leaves it
 * unmodified, and throws FormatError HESSIAN_NOT_PD naming the column (through
 * `options.columnLabels`) and the layer. KernelError LAUNCH_REFUSED for an impossible size.
 */
export function upperCholeskyOfInverseGpu(engine: GpuEngine, h: Float64Array, size: number, options: CholeskyOptions = {}): Float64Array {
  checkSize(h, size, options);
  if (size === 0) return new Float64Array(0);
  const context = engine.context;
  const module = engine.module("linalg");
  const count = size * size;
  const buffers: DevicePointer[] = [];
  try {
    // x holds H, later X = L⁻¹; a holds J·H·J, later L, later U.
    const x = context.upload(bytesOf(h.subarray(0, count)));
    buffers.push(x);
    const a = context.alloc(count * 8);
    buffers.push(a);
    const report = context.alloc(REPORT_BYTES);
    buffers.push(report);
    context.zero(report, REPORT_BYTES);
    module.launch("lq_f64_reverse", elementwiseShape(count), [{ pointer: a }, { pointer: x }, { i64: count }]);
    factorLower(module, a, size, report);
    const failed = readReport(context, report);
    if (failed !== undefined) throw notPositiveDefinite(size - 1 - failed.position, failed.pivot, options);
    module.launch("lq_f64_identity", elementwiseShape(count), [{ pointer: x }, { i64: size }]);
    invertLower(module, a, x, size);
    module.launch("lq_f64_reverse", elementwiseShape(count), [{ pointer: a }, { pointer: x }, { i64: count }]);
    const u = new Float64Array(count);
    context.download(a, bytesOf(u));
    return u;
  } finally {
    for (const pointer of buffers) context.free(pointer);
  }
}

/** The `factorize` hook of prepareSecondOrder / GptqOptions, on `engine`. */
export function gpuFactorize(engine: GpuEngine): NonNullable<PrepareOptions["factorize"]> {
  return (h, size, options) => upperCholeskyOfInverseGpu(engine, h, size, options);
}

/**
 * A = L·Lᵀ in place on the lower triangle of the n×n matrix at `a`, right-looking: per panel,
 * factor its diagonal block, solve the rows below it, and take their product from the trailing
 * matrix. The first non-positive pivot lands in `report`; the panels after it do no useful work.
 */
function factorLower(module: CudaModule, a: DevicePointer, n: number, report: DevicePointer): void {
  const at = (row: number, column: number) => a + BigInt((row * n + column) * 8);
  for (let k = 0; k < n; k += PANEL) {
    const width = Math.min(PANEL, n - k);
    const rest = n - k - width;
    module.launch("lq_chol_f64_factor_diag", factorShape(), [{ pointer: a }, { i64: n }, { i64: k }, { i32: width }, { pointer: report }]);
    if (rest === 0) break;
    module.launch("lq_trsm_f64_x_lt", solveShape(rest), [{ pointer: at(k + width, k) }, { pointer: at(k, k) }, { i32: width }, { i64: rest }, { i64: n }, { i64: n }]);
    module.launch("lq_gemm_f64_a_bt_sub_lower", productShape(rest, rest), [
      { pointer: at(k + width, k + width) }, { pointer: at(k + width, k) }, { pointer: at(k + width, k) },
      { i64: rest }, { i64: rest }, { i64: width }, { i64: n }, { i64: n }, { i64: n },
    ]);
  }
}

/**
 * X = L⁻¹ into `x`, which holds I: L·X = I solved by block rows, top to bottom. Block row k of
 * X is L[k,k]⁻¹ times what is left of its right-hand side; the rows below then lose L[k+,k]
 * times it. X is lower triangular: columns beyond k + width of block row k are, and stay, 0.
 */
function invertLower(module: CudaModule, l: DevicePointer, x: DevicePointer, n: number): void {
  const at = (base: DevicePointer, row: number, column: number) => base + BigInt((row * n + column) * 8);
  for (let k = 0; k < n; k += PANEL) {
    const width = Math.min(PANEL, n - k);
    const rest = n - k - width;
    module.launch("lq_trsm_f64_l_x", solveShape(k + width), [{ pointer: at(x, k, 0) }, { pointer: at(l, k, k) }, { i32: width }, { i64: k + width }, { i64: n }, { i64: n }]);
    if (rest === 0) break;
    module.launch("lq_gemm_f64_a_b_sub", productShape(rest, k + width), [
      { pointer: at(x, k + width, 0) }, { pointer: at(l, k + width, k) }, { pointer: at(x, k, 0) },
      { i64: rest }, { i64: k + width }, { i64: width }, { i64: n }, { i64: n }, { i64: n },
    ]);
  }
}

/**
 * The diagonal block's factorization: one block of THREADS threads for the PANEL × PANEL block
 * in shared memory. Its 64 columns are serial; each is a column scale and a trailing update of
 * at most 63² elements, 16 per thread, so the block is latency-bound and short (a few µs).
 */
function factorShape(): LaunchShape {
  return { grid: [1], block: [THREADS] };
}

/**
 * The panel solves: one block per PANEL independent vectors (rows of the Cholesky panel, columns
 * of the inversion's block row), staged in shared memory as a PANEL × PANEL tile. At most
 * ⌈K / 64⌉ blocks; their work, O(K·64²) per panel, is small next to the products'.
 */
function solveShape(vectors: number): LaunchShape {
  return { grid: [Math.ceil(vectors / PANEL)], block: [THREADS] };
}

/** The products: one block per TILE × TILE tile of C, x along its columns and y along its rows, as lq_gemm_f64_at_b_sub. */
function productShape(rows: number, columns: number): LaunchShape {
  return { grid: [Math.ceil(columns / TILE), Math.ceil(rows / TILE)], block: [THREADS] };
}

/** Grid-stride element kernels: one element per thread until the grid is ELEMENTWISE_BLOCKS blocks. */
function elementwiseShape(count: number): LaunchShape {
  return { grid: [Math.min(ELEMENTWISE_BLOCKS, Math.ceil(count / THREADS))], block: [THREADS] };
}

/** The first failing pivot (its position in J·H·J and its value), or undefined. */
function readReport(context: GpuEngine["context"], report: DevicePointer): { position: number; pivot: number } | undefined {
  const bytes = new Uint8Array(REPORT_BYTES);
  context.download(report, bytes);
  const view = new DataView(bytes.buffer);
  const columnPlusOne = Number(view.getBigInt64(0, true));
  return columnPlusOne === 0 ? undefined : { position: columnPlusOne - 1, pivot: view.getFloat64(8, true) };
}

/** Refuses what no launch may see: a size that is not a count, too large a grid, or too little data. */
function checkSize(h: Float64Array, size: number, options: CholeskyOptions): void {
  const tensor = options.layerName === undefined ? {} : { tensor: options.layerName };
  if (!Number.isSafeInteger(size) || size < 0 || size > MAX_SIZE) {
    throw new KernelError("LAUNCH_REFUSED", `upper Cholesky of the inverse on the GPU: size must be an integer in 0…${MAX_SIZE} (a grid row of ${TILE}-wide tiles per ${TILE} rows)`, { ...tensor, actual: size });
  }
  if (h.length < size * size) throw new KernelError("LAUNCH_REFUSED", "upper Cholesky of the inverse on the GPU: the matrix has fewer than size² elements", { ...tensor, expected: size * size, actual: h.length });
}
