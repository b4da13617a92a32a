import { bytesOf } from "../../formats/packed-array.js";
import { blockEndsAt, type LoopResult } from "../../formats/second-order/gptq-loop.js";
import type { DevicePointer } from "../cuda/driver.js";
import { launchChecks, type DeviceArray } from "../cuda/launch-checks.js";
import { checkStatus } from "../cuda/status.js";
import type { GpuEngine } from "../engine.js";
import { gpuDeferredUpdates } from "../linalg/gptq-deferred.js";
import { launchColumnLoss, launchPropagateInBlock } from "./launch.js";

/**
 * The GPTQ column loop (formats/second-order/gptq-loop.ts runGptqLoop) with the weight resident on
 * the GPU from the first column to the last: per column, the quantizer's launches (its search and
 * its take: q into the column, (w − q)/U[c,c] into the block's errors), then the in-block
 * propagation; per block, the deferred product (kernels/linalg/gptq-deferred.ts applyOnDevice) and
 * the block's column losses. Nothing crosses to the host until the loop ends, so a column costs a
 * handful of launches instead of transfers and host sweeps.
 *
 * The same blocks (including the early block end for a quantizer that reads several columns), the
 * same per-element arithmetic (kernels/second-order/second-order.cu) and the same deferred product
 * as runGptqLoop with gpuDeferredUpdates: weights, losses and scaled errors equal that path's bit
 * for bit (test/kernels/vptq-resident.test.ts).
 */

/** What a column's quantization works on; the loop owns every buffer named here. */
export interface DeviceColumnStep {
  /** The weight [size][rows]; column c starts at element c·rows and is up to date. */
  weight: DeviceArray;
  rows: number;
  /** U[c,c], the divisor of the column's errors. */
  diagonal: number;
  /** The column's scaled errors go to rows elements from errorsOffset. */
  errors: DeviceArray;
  errorsOffset: number;
  /** The loop's status word (kernels/common/status.h), read once after the loop. */
  status: DeviceArray;
}

/** A column quantizer whose work runs on the device (vptq-columns-gpu.ts, int-columns-gpu.ts). */
export interface DeviceColumnQuantizer {
  /** As ColumnQuantizer.columnsRead: columns from `column` on that it reads (default 1). */
  columnsRead?(column: number): number;
  /** Before the first column: what the quantizer keeps on the device (codebooks, label arrays). */
  begin(weight: DeviceArray, rows: number, size: number): void;
  /** Launches column `column`'s quantization and take (see DeviceColumnStep); nothing comes back. */
  quantizeColumn(column: number, step: DeviceColumnStep): void;
  /** After the last column and the status check: what the quantizer produced comes back to the host. */
  finish(): void;
  /** Frees what begin took. Called on every path, also when begin failed part-way or never ran. */
  end(): void;
}

export interface ResidentLoopOptions {
  /** Columns per deferred update. Default 128 (runGptqLoop's). */
  blockSize?: number;
  /** Also return every scaled error (K·N doubles, kept on the device for the whole loop). */
  keepScaledErrors?: boolean;
}

const DEFAULT_BLOCK_SIZE = 128;
const { refuse } = launchChecks("second-order");

/**
 * Runs the loop over `weightT` ([size][rows], updated in place to the quantized values) with U,
 * the upper Cholesky factor of the damped H⁻¹; the result is runGptqLoop's.
 */
export function runResidentLoop(engine: GpuEngine, weightT: Float64Array, u: Float64Array, rows: number, size: number, quantizer: DeviceColumnQuantizer, options: ResidentLoopOptions = {}): LoopResult {
  const blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
  checkResidentLoop(weightT, u, rows, size, blockSize);
  const keep = options.keepScaledErrors === true;
  const context = engine.context;
  const deferred = gpuDeferredUpdates(engine);
  const taken: DevicePointer[] = [];
  const alloc = (elements: number, elementBytes: number): DeviceArray => {
    const pointer = context.alloc(elements * elementBytes);
    taken.push(pointer);
    return { pointer, elements };
  };
  try {
    deferred.begin(weightT, u, rows, size);
    const weight = deferred.weightPointer();
    const factor = deferred.factorPointer();
    // With the scaled errors kept, each column's errors go straight to their final place and a
    // block's are its slice; without, one block's worth is reused block after block.
    const errors = alloc((keep ? size : Math.min(blockSize, size)) * rows, 8);
    const loss = alloc(size, 8);
    const status = alloc(1, 4);
    context.zero(status.pointer, 4);
    quantizer.begin(weight, rows, size);
    const errorRow = (c: number, blockStart: number) => (keep ? c : c - blockStart) * rows;
    const closeBlock = (from: number, to: number, target: number) => {
      if (to <= from) return;
      const offset = errorRow(from, from);
      deferred.applyOnDevice({ pointer: errors.pointer + BigInt(offset * 8), elements: errors.elements - offset }, from, to, target);
      launchColumnLoss(engine, errors, offset, rows, to - from, loss, from);
    };
    let blockStart = 0;
    let blockEnd = Math.min(blockSize, size);
    for (let c = 0; c < size; c++) {
      const span = quantizer.columnsRead?.(c) ?? 1;
      // runGptqLoop's block boundaries, so that the deferred products (and their rounding) are its own.
      if (blockEndsAt(c, span, blockStart, blockEnd)) {
        closeBlock(blockStart, c, blockEnd);
        blockStart = c;
        blockEnd = Math.min(c + blockSize, size);
      }
      const errorsOffset = errorRow(c, blockStart);
      quantizer.quantizeColumn(c, { weight, rows, diagonal: u[c * size + c]!, errors, errorsOffset, status });
      launchPropagateInBlock(engine, weight, factor, rows, size, c, blockEnd, errors, errorsOffset);
    }
    closeBlock(blockStart, size, size);
    checkStatus(context, status.pointer, { format: "second-order", shape: `${size} columns × ${rows} rows` });
    quantizer.finish();
    const columnLoss = new Float64Array(size);
    context.download(loss.pointer, bytesOf(columnLoss));
    const scaledErrorsT = keep ? new Float64Array(size * rows) : undefined;
    if (scaledErrorsT !== undefined) context.download(errors.pointer, bytesOf(scaledErrorsT));
    deferred.fetch(weightT, 0, size);
    let hessianLoss = 0;
    for (let c = 0; c < size; c++) hessianLoss += columnLoss[c]!;
    return { hessianLoss, columnLoss, scaledErrorsT };
  } finally {
    try {
      quantizer.end();
    } finally {
      for (const pointer of taken) context.free(pointer);
      deferred.release();
    }
  }
}

/** Everything the loop's launch extents follow from, checked before any device work (LAUNCH_REFUSED). */
export function checkResidentLoop(weightT: Float64Array, u: Float64Array, rows: number, size: number, blockSize: number): void {
  const what = "resident loop";
  const count = (name: string, value: number) => {
    if (!(Number.isSafeInteger(value) && value >= 1)) throw refuse(what, `${name} must be a positive integer`, "≥ 1", value);
  };
  count("rows", rows);
  count("columns", size);
  count("block size", blockSize);
  if (weightT.length !== rows * size) throw refuse(what, "the transposed weight has the wrong length", rows * size, weightT.length);
  if (u.length !== size * size) throw refuse(what, "the Cholesky factor has the wrong length", size * size, u.length);
}
