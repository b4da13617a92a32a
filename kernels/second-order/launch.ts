import type { CudaModule, LaunchShape } from "../cuda/module.js";
import { launchChecks, type DeviceArray } from "../cuda/launch-checks.js";
import type { GpuEngine } from "../engine.js";

/**
 * Host wrappers of kernels/second-order/second-order.cu: each checks every size it passes and
 * that every element the kernel touches lies inside the buffer it names, then launches on the
 * default stream (asynchronous: the loop's final download waits for everything). A refusal is a
 * KernelError LAUNCH_REFUSED naming the kernel; the status word is the kernels' second line.
 *
 * Launch configuration: SO_THREADS = 256 threads per block (second-order.cu), one thread per row
 * for the takes and the int-group grid fits, per (row, SO_PROPAGATE_COLUMNS columns) for the
 * propagation, per column for the losses.
 */

/** second-order.cu SO_THREADS and SO_PROPAGATE_COLUMNS. */
const SO_THREADS = 256;
const SO_PROPAGATE_COLUMNS = 8;
/** CUDA's limits on gridDim.x and gridDim.y. */
const MAX_GRID_X = 2 ** 31 - 1;
const MAX_GRID_Y = 65535;
/** Row indices are int64 on the device, but a column of more rows than this is no layer's. */
const MAX_ROWS = 2 ** 31 - 1;
/** second-order.cu SO_DTYPE_*. */
export const SO_DTYPE = { F16: 0, BF16: 1 } as const;

const { refuse, checkCount, checkExtent } = launchChecks("second-order");

function secondOrderModule(engine: GpuEngine): CudaModule {
  return engine.module("second-order");
}

function rowBlocks(kernel: string, rows: number): number {
  checkCount(kernel, "rows", rows, 1);
  if (rows > MAX_ROWS) throw refuse(kernel, "more rows than a column may have", `≤ ${MAX_ROWS}`, rows);
  return Math.ceil(rows / SO_THREADS);
}

/** One codebook on the device: k entries of vectorLen float64 values, and the labels into it. */
export interface TakeBook {
  values: DeviceArray;
  k: number;
  /** One label per vector of the column, from the search (int32). */
  labels: DeviceArray;
}

/** What every take kernel reads and writes besides its quantizer's own tables. */
export interface TakeColumn {
  /** The weight, and where the column starts in it (elements). */
  weight: DeviceArray;
  columnOffset: number;
  rows: number;
  /** U[c,c]. */
  diagonal: number;
  /** Where the column's scaled errors go (rows elements from errorsOffset). */
  errors: DeviceArray;
  errorsOffset: number;
  status: DeviceArray;
}

export interface TakeVptqColumn extends TakeColumn {
  vectorLen: number;
  main: TakeBook;
  residual: TakeBook | undefined;
  dtype: keyof typeof SO_DTYPE;
}

/** so_take_vptq_column: q from the labels into the column, (w − q)/U[c,c] into the errors. */
export function launchTakeVptqColumn(engine: GpuEngine, a: TakeVptqColumn): void {
  const kernel = "so_take_vptq_column";
  const blocks = rowBlocks(kernel, a.rows);
  checkCount(kernel, "vectorLen", a.vectorLen, 1);
  const vectors = Math.ceil(a.rows / a.vectorLen);
  checkExtent(kernel, "weight", a.weight, a.rows, a.columnOffset);
  checkExtent(kernel, "errors", a.errors, a.rows, a.errorsOffset);
  checkExtent(kernel, "status", a.status, 1);
  for (const [name, book] of [["main", a.main], ["residual", a.residual]] as const) {
    if (book === undefined) continue;
    checkCount(kernel, `${name} k`, book.k, 1);
    if (book.k > 2 ** 31 - 1) throw refuse(kernel, `${name} k is past int32`, "< 2^31", book.k);
    checkExtent(kernel, `${name} centroids`, book.values, book.k * a.vectorLen);
    checkExtent(kernel, `${name} labels`, book.labels, vectors);
  }
  if (a.dtype !== "F16" && a.dtype !== "BF16") throw refuse(kernel, "unknown dtype", Object.keys(SO_DTYPE), a.dtype);
  const shape: LaunchShape = { grid: [blocks], block: [SO_THREADS] };
  secondOrderModule(engine).launch(kernel, shape, [
    { pointer: a.weight.pointer + BigInt(a.columnOffset * 8) }, { i64: a.rows }, { i32: a.vectorLen },
    { pointer: a.main.labels.pointer }, { pointer: a.main.values.pointer }, { i32: a.main.k },
    { pointer: a.residual?.labels.pointer ?? 0n }, { pointer: a.residual?.values.pointer ?? 0n }, { i32: a.residual?.k ?? 0 }, { i32: SO_DTYPE[a.dtype] },
    { f64: a.diagonal }, { pointer: a.errors.pointer + BigInt(a.errorsOffset * 8) }, { pointer: a.status.pointer },
  ]);
}

/**
 * so_propagate_in_block for column `column`: columns column+1 … end−1 of the [size][rows] weight
 * −= U[column, j] · errors (rows elements from errorsOffset). Nothing to launch when column is
 * the block's last.
 */
export function launchPropagateInBlock(engine: GpuEngine, weight: DeviceArray, factor: DeviceArray, rows: number, size: number, column: number, end: number, errors: DeviceArray, errorsOffset: number): void {
  const kernel = "so_propagate_in_block";
  const blocks = rowBlocks(kernel, rows);
  if (!(Number.isSafeInteger(column) && Number.isSafeInteger(end) && column >= 0 && column < end && end <= size)) throw refuse(kernel, "columns out of range", `0 ≤ column < end ≤ ${size}`, [column, end]);
  const first = column + 1;
  if (first === end) return;
  const columnGroups = Math.ceil((end - first) / SO_PROPAGATE_COLUMNS);
  if (blocks > MAX_GRID_X || columnGroups > MAX_GRID_Y) throw refuse(kernel, "more blocks than the grid allows", `≤ ${MAX_GRID_X} × ${MAX_GRID_Y}`, [blocks, columnGroups]);
  checkExtent(kernel, "weight", weight, (end - first) * rows, first * rows);
  checkExtent(kernel, "U", factor, end - first, column * size + first);
  checkExtent(kernel, "errors", errors, rows, errorsOffset);
  secondOrderModule(engine).launch(kernel, { grid: [blocks, columnGroups], block: [SO_THREADS] }, [
    { pointer: weight.pointer }, { i64: rows }, { pointer: factor.pointer + BigInt(column * size * 8) }, { i64: first }, { i64: end },
    { pointer: errors.pointer + BigInt(errorsOffset * 8) },
  ]);
}

/** so_column_loss: loss[lossOffset + i] = Σ errors[i][n]² for the `columns` error rows from errorsOffset. */
export function launchColumnLoss(engine: GpuEngine, errors: DeviceArray, errorsOffset: number, rows: number, columns: number, loss: DeviceArray, lossOffset: number): void {
  const kernel = "so_column_loss";
  checkCount(kernel, "rows", rows, 1);
  checkCount(kernel, "columns", columns, 1);
  const blocks = Math.ceil(columns / SO_THREADS);
  if (blocks > MAX_GRID_X) throw refuse(kernel, "more blocks than the grid allows", `≤ ${MAX_GRID_X}`, blocks);
  checkExtent(kernel, "errors", errors, columns * rows, errorsOffset);
  checkExtent(kernel, "loss", loss, columns, lossOffset);
  secondOrderModule(engine).launch(kernel, { grid: [blocks], block: [SO_THREADS] }, [
    { pointer: errors.pointer + BigInt(errorsOffset * 8) }, { i64: rows }, { i64: columns }, { pointer: loss.pointer + BigInt(lossOffset * 8) },
  ]);
}

/** signround.cuh LQ_SCALE_*, the scale dtype codes int-columns.cuh's grid fit takes. */
export const SO_SCALE_DTYPE = { F32: 0, F16: 1, BF16: 2 } as const;

/** An int-group grid: what so_fit_int_grids and so_take_int_column share. */
export interface IntGridShape {
  bits: number;
  sym: boolean;
  scaleDtype: keyof typeof SO_SCALE_DTYPE;
}

/** One group's grids on the device: rows float32 scales and zeros from `offset` of the [group][row] tables. */
export interface IntGridTable {
  scales: DeviceArray;
  zeros: DeviceArray;
  offset: number;
}

function checkIntGrid(kernel: string, grid: IntGridShape): void {
  if (!(Number.isInteger(grid.bits) && grid.bits >= 2 && grid.bits <= 8)) throw refuse(kernel, "code width out of range", "2 … 8", grid.bits);
  if (!Object.hasOwn(SO_SCALE_DTYPE, grid.scaleDtype)) throw refuse(kernel, "unknown scale dtype", Object.keys(SO_SCALE_DTYPE), grid.scaleDtype);
}

/**
 * so_fit_int_grids: the grid of each row over columns first … first+width−1 of the [size][rows]
 * weight into the table's group (gptq.ts fitGroupGrids). `thresh` is grid.ts scaleThreshold.
 */
export function launchFitIntGrids(engine: GpuEngine, weight: DeviceArray, rows: number, first: number, width: number, grid: IntGridShape, thresh: number, table: IntGridTable, status: DeviceArray): void {
  const kernel = "so_fit_int_grids";
  const blocks = rowBlocks(kernel, rows);
  checkIntGrid(kernel, grid);
  checkCount(kernel, "first column", first, 0);
  checkCount(kernel, "width", width, 1);
  checkExtent(kernel, "weight", weight, width * rows, first * rows);
  checkExtent(kernel, "scales", table.scales, rows, table.offset);
  checkExtent(kernel, "zeros", table.zeros, rows, table.offset);
  checkExtent(kernel, "status", status, 1);
  secondOrderModule(engine).launch(kernel, { grid: [blocks], block: [SO_THREADS] }, [
    { pointer: weight.pointer + BigInt(first * rows * 8) }, { i64: rows }, { i64: width }, { i32: grid.bits }, { i32: grid.sym ? 1 : 0 }, { i32: SO_SCALE_DTYPE[grid.scaleDtype] }, { f32: thresh },
    { pointer: table.scales.pointer + BigInt(table.offset * 4) }, { pointer: table.zeros.pointer + BigInt(table.offset * 4) }, { pointer: status.pointer },
  ]);
}

export interface TakeIntColumn extends TakeColumn {
  grid: IntGridShape;
  /** The column's group's grids. */
  table: IntGridTable;
  /** uint8 codes: rows bytes from codesOffset. */
  codes: DeviceArray;
  codesOffset: number;
}

/** so_take_int_column: codes on the grids, q into the column, (w − q)/U[c,c] into the errors. */
export function launchTakeIntColumn(engine: GpuEngine, a: TakeIntColumn): void {
  const kernel = "so_take_int_column";
  const blocks = rowBlocks(kernel, a.rows);
  checkIntGrid(kernel, a.grid);
  checkExtent(kernel, "weight", a.weight, a.rows, a.columnOffset);
  checkExtent(kernel, "scales", a.table.scales, a.rows, a.table.offset);
  checkExtent(kernel, "zeros", a.table.zeros, a.rows, a.table.offset);
  checkExtent(kernel, "codes", a.codes, a.rows, a.codesOffset);
  checkExtent(kernel, "errors", a.errors, a.rows, a.errorsOffset);
  checkExtent(kernel, "status", a.status, 1);
  secondOrderModule(engine).launch(kernel, { grid: [blocks], block: [SO_THREADS] }, [
    { pointer: a.weight.pointer + BigInt(a.columnOffset * 8) }, { i64: a.rows },
    { pointer: a.table.scales.pointer + BigInt(a.table.offset * 4) }, { pointer: a.table.zeros.pointer + BigInt(a.table.offset * 4) }, { i32: a.grid.bits }, { i32: a.grid.sym ? 1 : 0 },
    { f64: a.diagonal }, { pointer: a.codes.pointer + BigInt(a.codesOffset) }, { pointer: a.errors.pointer + BigInt(a.errorsOffset * 8) }, { pointer: a.status.pointer },
  ]);
}
