import type { LoopOptions, LoopResult } from "../second-order/gptq-loop.js";
import type { ColumnBooks } from "./codebook.js";
import type { VptqParams, VptqTensor } from "./types.js";

/**
 * A VPTQ pass's GPTQ loop run entirely on a device (kernels/second-order/vptq-columns-gpu.ts
 * gpuVptqLoop): searches, takes, in-block and deferred updates without the weight ever coming
 * back between columns. quantize.ts runs it in place of runGptqLoop + vectorColumns when refining
 * and the loop accepts the layout; it must give their result bit for bit (with the same GPU
 * deferred updates and search: test/kernels/vptq-resident.test.ts).
 */

/** runGptqLoop's options that a resident loop honours: the block size and whether to keep the scaled errors. */
export type VptqResidentLoopOptions = Required<Pick<LoopOptions, "blockSize" | "keepScaledErrors">>;

export interface VptqResidentLoop {
  readonly description: string;
  /** Whether run() takes this layout (e.g. a vector length with a search kernel); otherwise the host loop runs. */
  accepts(params: VptqParams): boolean;
  /**
   * One pass over `weightT` ([size][rows] in quantization order, updated in place to the quantized
   * values) with U, the upper Cholesky factor of the damped H⁻¹: writes every column's indices
   * into `tensor` (mainIndices, resIndices with books.residual, outlierIndices) exactly as
   * vectorColumns does. Returns what runGptqLoop returns.
   */
  run(weightT: Float64Array, u: Float64Array, rows: number, size: number, books: ColumnBooks, tensor: VptqTensor, options: VptqResidentLoopOptions): LoopResult;
}
