import { UsageError } from "../errors.js";
import { gemmAdd } from "./matmul.js";

/**
 * The GPTQ column loop (Frantar et al. 2022, AutoGPTQ `fasterquant`, SpQR `SPQRUtil.quantize`,
 * VPTQ `VPTQ.vptq`): columns are quantized one at a time in a fixed order; the error of column
 * c, scaled as e = (w − q)/U[c,c], is subtracted from every later column j as e·U[c,j]. Within
 * a block of columns this happens immediately; for the columns after the block it is deferred
 * to one product per block, which carries nearly all the flops. The block size changes
 * rounding only, never the result.
 *
 * The weight is held transposed, [K][N] (column c at c·N … c·N+N−1), so every update is a
 * contiguous sweep.
 */

export interface LoopView {
  /** [K][N]: rows before the current column hold quantized values, the others the current (updated) weights. */
  readonly weightT: Float64Array;
  /** Upper Cholesky factor of H⁻¹ in quantization order, K×K row-major. */
  readonly u: Float64Array;
  /** N: output rows (the length of one column). */
  readonly rows: number;
  /** K: columns. */
  readonly size: number;
}

export interface ColumnQuantizer {
  /**
   * How many columns from `column` on `quantizeColumn(column)` reads, e.g. a group's width at
   * its first column (default 1). The loop makes all of them fully error-updated first.
   */
  columnsRead?(column: number): number;
  /**
   * Writes the value each row takes in column `column` (a position in quantization order) into
   * `quantized` (length N). `current` is that column's current weights, row `column` of
   * `view.weightT`. Writing q = w keeps a weight exact (SpQR outliers): its error is 0.
   */
  quantizeColumn(column: number, current: Float64Array, quantized: Float64Array, view: LoopView): void;
}

/**
 * Where the deferred updates (nearly all the flops) run. The default keeps everything in host
 * memory; kernels/linalg/gptq-deferred.ts holds the weight on the GPU and runs them there. The
 * loop calls `fetch` before it reads columns that deferred updates may have changed, so the
 * host copy of those columns is current whenever the quantizer sees it.
 */
export interface DeferredUpdates {
  /** Before the loop: the weight ([size][rows]) and the factor U as the loop starts. */
  begin(weightT: Float64Array, u: Float64Array, rows: number, size: number): void;
  /** Makes columns from … to−1 of `weightT` current on the host. */
  fetch(weightT: Float64Array, from: number, to: number): void;
  /** Columns target … size−1 −= U[from:to, target:]ᵀ · errors (errors: (to − from) × rows). */
  apply(errors: Float64Array, from: number, to: number, target: number): void;
  /** After the loop: makes columns from … size−1 of `weightT` current on the host. */
  end(weightT: Float64Array, from: number): void;
}

export interface LoopOptions {
  /** Deferred updates on the GPU (kernels/linalg/gptq-deferred.ts); host memory when absent. */
  deferred?: DeferredUpdates;
  /** Columns per deferred update. Default 128 (GPTQ's blocksize). */
  blockSize?: number;
  /** Quantize only columns 0 … columnCount−1; later ones end error-updated but unquantized (SpQR's keep_last_columns). Default K. */
  columnCount?: number;
  /** Also return every scaled error (SpQR's quantization_errors, VPTQ's residual input). Costs K·N doubles. */
  keepScaledErrors?: boolean;
}

export interface LoopResult {
  /**
   * Σ ((w − q)/U[c,c])² over quantized weights: the first-order estimate of the increase of
   * tr(ΔW·H·ΔWᵀ). AutoGPTQ's `Losses` sum is half of this.
   */
  hessianLoss: number;
  /** The same sum per column, in quantization order. */
  columnLoss: Float64Array;
  /** [K][N] scaled errors (w − q)/U[c,c] at the moment column c was quantized, when asked for. */
  scaledErrorsT: Float64Array | undefined;
}

const DEFAULT_BLOCK_SIZE = 128;

/**
 * Runs the loop over `weightT` ([size][rows], updated in place: quantized columns end holding
 * their quantized values) with the upper Cholesky factor `u` of the damped H⁻¹.
 */
export function runGptqLoop(weightT: Float64Array, u: Float64Array, rows: number, size: number, quantizer: ColumnQuantizer, options: LoopOptions = {}): LoopResult {
  const blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
  const columnCount = options.columnCount ?? size;
  checkArguments(weightT, u, rows, size, blockSize, columnCount);
  const view: LoopView = { weightT, u, rows, size };
  const deferred = options.deferred ?? hostDeferred(weightT, u, rows, size);
  deferred.begin(weightT, u, rows, size);
  const blockErrors = new Float64Array(Math.min(blockSize, columnCount) * rows);
  const scaledErrorsT = options.keepScaledErrors === true ? new Float64Array(size * rows) : undefined;
  const columnLoss = new Float64Array(size);
  const quantized = new Float64Array(rows);
  let blockStart = 0;
  let blockEnd = Math.min(blockSize, columnCount);
  for (let c = 0; c < columnCount; c++) {
    const span = quantizer.columnsRead?.(c) ?? 1;
    if (blockEndsAt(c, span, blockStart, blockEnd)) {
      deferred.apply(blockErrors, blockStart, c, blockEnd);
      // Columns c … blockEnd−1 (a block ended early) already hold the block's in-block updates on
      // the host, which a device copy lacks: only the columns the product targeted are fetched,
      // through the new block and every column the quantizer reads (a group wider than a block).
      const fetchFrom = Math.max(c, blockEnd);
      blockStart = c;
      blockEnd = Math.min(c + blockSize, columnCount);
      deferred.fetch(weightT, fetchFrom, Math.max(blockEnd, Math.min(c + span, size)));
    }
    const current = weightT.subarray(c * rows, (c + 1) * rows);
    quantizer.quantizeColumn(c, current, quantized, view);
    const errors = blockErrors.subarray((c - blockStart) * rows, (c - blockStart + 1) * rows);
    columnLoss[c] = takeQuantized(current, quantized, u[c * size + c]!, errors);
    scaledErrorsT?.set(errors, c * rows);
    propagateInBlock(weightT, u, rows, size, errors, c, blockEnd);
  }
  deferred.apply(blockErrors, blockStart, columnCount, columnCount);
  deferred.end(weightT, columnCount);
  let hessianLoss = 0;
  for (let c = 0; c < columnCount; c++) hessianLoss += columnLoss[c]!;
  return { hessianLoss, columnLoss, scaledErrorsT };
}

/**
 * Whether column c (reading `span` columns) starts a new block: at the block's end, or early when
 * the quantizer looks past it, so that what it reads is up to date. Shared with the device loop
 * (kernels/second-order/resident-loop.ts), whose deferred products must round as these do.
 */
export function blockEndsAt(c: number, span: number, blockStart: number, blockEnd: number): boolean {
  return c === blockEnd || (c > blockStart && c + span > blockEnd);
}

function checkArguments(weightT: Float64Array, u: Float64Array, rows: number, size: number, blockSize: number, columnCount: number): void {
  if (!Number.isInteger(blockSize) || blockSize < 1) throw new UsageError("BAD_ARGUMENT", "GPTQ block size must be a positive integer", { expected: ">= 1", actual: blockSize });
  if (!Number.isInteger(columnCount) || columnCount < 0 || columnCount > size) {
    throw new UsageError("BAD_ARGUMENT", "columns to quantize must be an integer within the layer's input features", { expected: `0 … ${size}`, actual: columnCount });
  }
  if (weightT.length !== rows * size) throw new UsageError("BAD_ARGUMENT", "transposed weight has the wrong length", { expected: rows * size, actual: weightT.length });
  if (u.length !== size * size) throw new UsageError("BAD_ARGUMENT", "Cholesky factor has the wrong length", { expected: size * size, actual: u.length });
}

/** Scaled errors (w − q)/d into `errors`, q into the column; returns Σ errors². */
function takeQuantized(current: Float64Array, quantized: Float64Array, diagonal: number, errors: Float64Array): number {
  let loss = 0;
  for (let n = 0; n < current.length; n++) {
    const q = quantized[n]!;
    const e = (current[n]! - q) / diagonal;
    errors[n] = e;
    loss += e * e;
    current[n] = q;
  }
  return loss;
}

/** Columns c+1 … blockEnd−1 −= e·U[c, ·], two columns per sweep so each error is loaded once for both. */
function propagateInBlock(weightT: Float64Array, u: Float64Array, rows: number, size: number, errors: Float64Array, c: number, blockEnd: number): void {
  const uRow = c * size;
  let j = c + 1;
  for (; j + 1 < blockEnd; j += 2) {
    const u0 = u[uRow + j]!;
    const u1 = u[uRow + j + 1]!;
    if (u0 === 0 && u1 === 0) continue;
    const o0 = j * rows;
    const o1 = o0 + rows;
    for (let n = 0; n < rows; n++) {
      const e = errors[n]!;
      weightT[o0 + n]! -= u0 * e;
      weightT[o1 + n]! -= u1 * e;
    }
  }
  if (j < blockEnd) {
    const u0 = u[uRow + j]!;
    if (u0 === 0) return;
    const o0 = j * rows;
    for (let n = 0; n < rows; n++) weightT[o0 + n]! -= u0 * errors[n]!;
  }
}

/** The default: deferred updates on the host weight itself (nothing to fetch). */
function hostDeferred(weightT: Float64Array, u: Float64Array, rows: number, size: number): DeferredUpdates {
  return {
    begin: () => undefined,
    fetch: () => undefined,
    apply: (errors, from, to, target) => applyDeferred(weightT, u, rows, size, errors, from, to, target),
    end: () => undefined,
  };
}

/** Columns target … K−1 −= U[from:to, target:]ᵀ · errors of columns from … to−1 (one product). */
function applyDeferred(weightT: Float64Array, u: Float64Array, rows: number, size: number, blockErrors: Float64Array, from: number, to: number, target: number): void {
  if (to <= from || target >= size || rows === 0) return;
  gemmAdd(
    { data: weightT, offset: target * rows, rowStride: rows },
    { data: u, offset: from * size + target, rowStride: size, transposed: true },
    { data: blockErrors, offset: 0, rowStride: rows },
    size - target,
    to - from,
    rows,
    -1,
  );
}
