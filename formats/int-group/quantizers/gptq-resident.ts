import type { LoopOptions, LoopResult } from "../../second-order/gptq-loop.js";
import type { Grid } from "../grid.js";
import type { IntGroupParams, IntGroupTensor } from "../types.js";

/**
 * A GPTQ pass's column loop run entirely on a device (kernels/second-order/int-columns-gpu.ts
 * gpuGptqLoop): grid fits, takes, in-block and deferred updates without the weight ever coming
 * back between columns. quantizeGptq runs it in place of runGptqLoop + its host column quantizer
 * when the loop accepts the parameters; it must give their result bit for bit (with the same GPU
 * deferred product: test/kernels/gptq-resident.test.ts).
 */

/** Static groups (AutoGPTQ static_groups): grids fitted before the loop, per original group. */
export interface GptqStaticGrids {
  /** grids[g][n]: group g's grid of row n, already stored in the tensor's scales and zeros. */
  grids: Grid[][];
  /** The group of each column, in quantization order (length size). */
  groupOfColumn: Int32Array;
}

/** One pass: runGptqLoop's operands and where quantizeGptq's column quantizers write. */
export interface GptqPass {
  /** [size][rows] in quantization order, updated in place to the quantized values. */
  weightT: Float64Array;
  /** The upper Cholesky factor of the damped H⁻¹, size × size. */
  u: Float64Array;
  rows: number;
  size: number;
  /** params: the grids; scales and zeros: where grids fitted in the loop are stored ([group][row]). */
  tensor: IntGroupTensor;
  /** Out: the codes, [size][rows] in quantization order. */
  codesT: Uint8Array;
  /** Static groups, or undefined: each group's grids fitted when the loop reaches its first column. */
  staticGrids: GptqStaticGrids | undefined;
}

/** runGptqLoop's options that a resident loop honours. */
export type GptqResidentLoopOptions = Required<Pick<LoopOptions, "blockSize">>;

export interface GptqResidentLoop {
  readonly description: string;
  /** Whether run() takes these parameters; otherwise the host loop runs. */
  accepts(params: IntGroupParams): boolean;
  /** Quantizes every column of the pass as the host loop does; returns what runGptqLoop returns. */
  run(pass: GptqPass, options: GptqResidentLoopOptions): LoopResult;
}
