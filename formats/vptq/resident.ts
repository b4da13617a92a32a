import type { ColumnBooks } from "./codebook.js";
import type { VptqParams, VptqTensor } from "./types.js";

/**
 * A VPTQ pass's GPTQ loop run entirely on a device (kernels/second-order/vptq-columns-gpu.ts
 * gpuVptqLoop): searches, takes, in-block and deferred updates without the weight ever coming
 * back between columns. quantize.ts runs it in place of runGptqLoop + vectorColumns when refining
 * and the loop accepts the layout; it must give their result bit for bit (with the same GPU
 * deferred updates and search: test/kernels/vptq-resident.test.ts).
 */

export interface VptqResidentLoopOptions {
  /** Columns per deferred update (VptqQuantizeOptions.blockSize). */
  blockSize: number;
  /** Return errorsT (the residual codebook's training data). */
  keepErrors: boolean;
}

export interface VptqResidentLoopResult {
  /** The loop's Σ ((w − q)/U[c,c])², summed over columns in order as runGptqLoop does. */
  hessianLoss: number;
  /** [K][rows] w − q of each column as it was quantized (the reference's qerror: the scaled error times U[c,c]), when asked for. */
  errorsT: Float64Array | undefined;
}

export interface VptqResidentLoop {
  readonly description: string;
  /** Whether run() takes this layout (e.g. a vector length with a search kernel); otherwise the host loop runs. */
  accepts(params: VptqParams): boolean;
  /**
   * One pass over `weightT` ([size][rows] in quantization order, updated in place to the quantized
   * values) with U, the upper Cholesky factor of the damped H⁻¹: writes every column's indices
   * into `tensor` (mainIndices, resIndices with books.residual, outlierIndices) exactly as
   * vectorColumns does.
   */
  run(weightT: Float64Array, u: Float64Array, rows: number, size: number, books: ColumnBooks, tensor: VptqTensor, options: VptqResidentLoopOptions): VptqResidentLoopResult;
}
