import { KernelError } from "../../formats/errors.js";
import type { CublasHandle } from "../cuda/cublas.js";
import type { DevicePointer } from "../cuda/driver.js";
import type { LaunchShape } from "../cuda/module.js";
import type { GpuEngine } from "../engine.js";

/**
 * The general float64 product on the device, C = alpha·op(A)·op(B) + beta·C, row-major: cuBLAS's
 * DGEMM when the engine found the library (kernels/cuda/cublas.ts), lq_gemm_f64
 * (kernels/linalg/linalg.cu) otherwise and for small products.
 *
 * cuBLAS is column-major. A row-major X with leading dimension ld is, read column-major, Xᵀ with
 * the same ld, so row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: the call swaps
 * the operands and m with n, and keeps each operand's transpose flag.
 *
 * Both paths are float64 with FMA, summed in their own orders: results agree with each other and
 * with a CPU loop to float64 rounding (test/kernels/dgemm.test.ts states the bound), not bit for
 * bit. Each is deterministic run to run on one GPU (cuBLAS keeps atomics off by default).
 */

export interface GemmF64Args {
  m: number;
  n: number;
  k: number;
  alpha: number;
  beta: number;
  a: DevicePointer;
  lda: number;
  transA?: boolean;
  b: DevicePointer;
  ldb: number;
  transB?: boolean;
  c: DevicePointer;
  ldc: number;
}

export type GemmBackendChoice = "cublas" | "own";

/** linalg.cu TILE_J = TILE_R: C elements per tile side. */
const TILE = 64;
/** linalg.cu LQ_GEMM_THREADS: each thread sums a 4 × 4 sub-tile. */
const THREADS = 256;
/** The CUDA limit on gridDim.y, which walks the row tiles of C. */
const MAX_GRID_Y = 65535;
/** The CUDA limit on gridDim.x, which walks the column tiles of C. */
const MAX_GRID_X = 2 ** 31 - 1;
/**
 * Below m·n·k = 2²¹ (a 128³ product, 4 Mflop, a few µs) the own kernel's single launch costs as
 * much as cuBLAS's and cuBLAS gains nothing; the choice then also does not depend on whether a
 * library happens to be installed.
 */
export const CUBLAS_MIN_VOLUME = 2 ** 21;
/** cuBLAS's legacy (non-_64) API takes every size and leading dimension as a 32-bit int. */
const CUBLAS_MAX_INT = 2 ** 31 - 1;

/** C[m×n] = alpha·op(A)·op(B) + beta·C, row-major float64 on the device; cuBLAS when found, own kernel otherwise. */
export function gemmF64(engine: GpuEngine, args: GemmF64Args): void {
  checkGemm(args);
  if (args.m === 0 || args.n === 0) return;
  // alpha = 0 stays on the own kernel, which then reads neither A nor B (cuBLAS does not promise that).
  if (args.m * args.n * args.k >= CUBLAS_MIN_VOLUME && args.alpha !== 0 && fitsCublas(args)) {
    const blas = engine.cublas();
    if (blas.ok) return cublasRowMajor(blas.handle, args);
  }
  launchOwn(engine, args);
}

/** A batch of equal products: item i's operands start `i · stride` elements after item 0's. */
export interface GemmF64BatchedArgs extends GemmF64Args {
  batch: number;
  strideA: number;
  strideB: number;
  strideC: number;
}

/**
 * `batch` products C_i = alpha·op(A_i)·op(B_i) + beta·C_i (row-major, as gemmF64): one
 * cublasDgemmStridedBatched call when cuBLAS is found and the batch is large enough, otherwise
 * gemmF64 item by item. Each item is checked as gemmF64 checks it, so a stride that would reach
 * past the safe integers or a null operand is refused before any launch. Items must not overlap
 * in C (the caller's strides say where they lie; cuBLAS runs them concurrently).
 */
export function gemmF64Batched(engine: GpuEngine, args: GemmF64BatchedArgs): void {
  const { batch } = args;
  if (!(Number.isSafeInteger(batch) && batch >= 0)) throw refuse(args, "the batch must be a count", "an integer ≥ 0", batch);
  for (const [name, stride] of [["strideA", args.strideA], ["strideB", args.strideB], ["strideC", args.strideC]] as const) {
    if (!(Number.isSafeInteger(stride) && stride >= 0 && Number.isSafeInteger(stride * Math.max(0, batch - 1)))) throw refuse(args, `${name} must be an element count within the safe integers`, "an integer ≥ 0", stride);
  }
  const item = (i: number): GemmF64Args => ({ ...args, a: args.a + BigInt(i * args.strideA * 8), b: args.b + BigInt(i * args.strideB * 8), c: args.c + BigInt(i * args.strideC * 8) });
  for (let i = 0; i < batch; i++) checkGemm(item(i));
  if (batch === 0 || args.m === 0 || args.n === 0) return;
  // One item is gemmF64's own call, so a batch of one sums exactly as an unbatched product.
  if (batch === 1) return gemmF64(engine, item(0));
  if (batch * args.m * args.n * args.k >= CUBLAS_MIN_VOLUME && args.alpha !== 0 && fitsCublas(args) && batch <= CUBLAS_MAX_INT) {
    const blas = engine.cublas();
    if (blas.ok) {
      blas.handle.dgemmStridedBatched(args.transB === true, args.transA === true, args.n, args.m, args.k, args.alpha, args.b, args.ldb, args.strideB, args.a, args.lda, args.strideA, args.beta, args.c, args.ldc, args.strideC, batch);
      return;
    }
  }
  for (let i = 0; i < batch; i++) gemmF64(engine, item(i));
}

/**
 * gemmF64 on a chosen backend, whatever the size: for tests and benchmarks that compare the two.
 * KernelError NO_DEVICE when "cublas" is asked for and the engine has none (the reason is named).
 */
export function gemmF64With(engine: GpuEngine, args: GemmF64Args, backend: GemmBackendChoice): void {
  checkGemm(args);
  if (args.m === 0 || args.n === 0) return;
  if (backend === "own") return launchOwn(engine, args);
  const blas = engine.cublas();
  if (!blas.ok) throw new KernelError("NO_DEVICE", `gemm f64: cuBLAS asked for but not available: ${blas.reason}`);
  if (!fitsCublas(args)) throw refuse(args, "a size or leading dimension exceeds cuBLAS's 32-bit int", `≤ ${CUBLAS_MAX_INT}`, Math.max(args.m, args.n, args.k, args.lda, args.ldb, args.ldc));
  cublasRowMajor(blas.handle, args);
}

/** Row-major C = op(A)·op(B) as column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: operands and m, n swapped, flags kept. */
function cublasRowMajor(handle: CublasHandle, args: GemmF64Args): void {
  handle.dgemm(args.transB === true, args.transA === true, args.n, args.m, args.k, args.alpha, args.b, args.ldb, args.a, args.lda, args.beta, args.c, args.ldc);
}

/** "cublas <version> (<path>)" or "own kernel (<why no cuBLAS>)", for bench/CLI reporting. */
export function gemmBackend(engine: GpuEngine): string {
  const blas = engine.cublas();
  return blas.ok ? `cublas ${blas.handle.version} (${blas.handle.path})` : `own kernel (${blas.reason})`;
}

/**
 * The launch of lq_gemm_f64: one 256-thread block per 64 × 64 tile of C, x along its columns
 * and y along its rows (16.6 KB of static shared memory, 74 registers on sm_90: 3 blocks per
 * multiprocessor). Expects checked arguments.
 */
export function gemmLaunch(m: number, n: number): LaunchShape {
  return { grid: [Math.ceil(n / TILE), Math.ceil(m / TILE)], block: [THREADS] };
}

function launchOwn(engine: GpuEngine, args: GemmF64Args): void {
  const { m, n, k } = args;
  engine.module("linalg").launch("lq_gemm_f64", gemmLaunch(m, n), [
    { pointer: args.c }, { pointer: args.a }, { pointer: args.b },
    { i64: m }, { i64: n }, { i64: k }, { i64: args.ldc }, { i64: args.lda }, { i64: args.ldb },
    { i64: doubleBits(args.alpha) }, { i64: doubleBits(args.beta) },
    { i32: args.transA === true ? 1 : 0 }, { i32: args.transB === true ? 1 : 0 },
  ]);
}

/** cuda/module.ts has no float64 KernelArgument; a double argument is its 8 bytes, so it travels as the int64 of the same bits. */
function doubleBits(value: number): bigint {
  return new BigInt64Array(new Float64Array([value]).buffer)[0]!;
}

function fitsCublas(args: GemmF64Args): boolean {
  return [args.m, args.n, args.k, args.lda, args.ldb, args.ldc].every((v) => v <= CUBLAS_MAX_INT);
}

function refuse(args: GemmF64Args, detail: string, expected: unknown, actual: unknown): KernelError {
  return new KernelError("LAUNCH_REFUSED", `gemm f64 ${args.m}×${args.n}×${args.k}: ${detail}`, { expected, actual });
}

/**
 * Every size either backend trusts, cheapest first: counts, scalars, leading dimensions against
 * the stored shapes (row-major: op(A) m×k is A m×k, or A k×m when transA), the last element of
 * each operand within int64 (and the safe integers), the grid, and the pointers that will be read.
 */
export function checkGemm(args: GemmF64Args): void {
  const { m, n, k, alpha, beta } = args;
  for (const [name, value] of [["m", m], ["n", n], ["k", k]] as const) {
    if (!(Number.isSafeInteger(value) && value >= 0)) throw refuse(args, `${name} must be a count`, "an integer ≥ 0", value);
  }
  if (!Number.isFinite(alpha)) throw refuse(args, "alpha must be finite", "a finite number", alpha);
  if (!Number.isFinite(beta)) throw refuse(args, "beta must be finite", "a finite number", beta);
  const transA = args.transA === true;
  const transB = args.transB === true;
  // [stored rows, stored columns] of each operand.
  const operands = [
    ["A", args.lda, transA ? k : m, transA ? m : k, args.a],
    ["B", args.ldb, transB ? n : k, transB ? k : n, args.b],
    ["C", args.ldc, m, n, args.c],
  ] as const;
  for (const [name, ld, rows, columns] of operands) {
    if (!(Number.isSafeInteger(ld) && ld >= Math.max(1, columns))) throw refuse(args, `ld${name.toLowerCase()} must hold a stored row of ${name} (${rows}×${columns})`, `≥ ${Math.max(1, columns)}`, ld);
    const lastElement = rows === 0 || columns === 0 ? 0 : (rows - 1) * ld + columns - 1;
    if (!Number.isSafeInteger(lastElement)) throw refuse(args, `${name}'s last element is past the safe integers`, `< 2^53`, lastElement);
  }
  if (Math.ceil(m / TILE) > MAX_GRID_Y) throw refuse(args, "more row tiles than the grid allows", `⌈m / ${TILE}⌉ ≤ ${MAX_GRID_Y}`, Math.ceil(m / TILE));
  if (Math.ceil(n / TILE) > MAX_GRID_X) throw refuse(args, "more column tiles than the grid allows", `⌈n / ${TILE}⌉ ≤ ${MAX_GRID_X}`, Math.ceil(n / TILE));
  if (m === 0 || n === 0) return;
  const readsProduct = k > 0 && alpha !== 0;
  for (const [name, , , , pointer] of operands) {
    if (name !== "C" && !readsProduct) continue;
    if (!(typeof pointer === "bigint" && pointer > 0n)) throw refuse(args, `${name} must be a device pointer`, "a non-null CUdeviceptr", pointer);
  }
}
