import { FormatError, UsageError } from "../../errors.js";
import { runGptqLoop, type ColumnQuantizer, type DeferredUpdates, type LoopOptions, type LoopResult, type LoopView } from "../../second-order/gptq-loop.js";
import type { Hessian } from "../../second-order/hessian.js";
import { invertPermutation, prepareSecondOrder, scatterFromColumnMajor, type PrepareOptions } from "../../second-order/prepare.js";
import { dequantizeCode, fitGrid, quantizeCode, type Grid } from "../grid.js";
import { groupCount, type IntGroupParams, type IntGroupTensor } from "../types.js";
import type { GptqPass, GptqResidentLoop, GptqStaticGrids } from "./gptq-resident.js";
import { checkQuantizerArgs, emptyIntGroupTensor } from "./rtn.js";

/**
 * GPTQ (Frantar et al. 2022) on auto-round's grid, following AutoGPTQ `GPTQ.fasterquant`
 * (auto_gptq/quantization/gptq.py): columns are quantized in order, each column's error is
 * spread over the columns not yet quantized through the upper Cholesky factor of the damped
 * H⁻¹ (formats/second-order). Grids come from `fitGrid`, codes from `quantizeCode`, exactly as
 * RTN's, so GPTQ and RTN differ only in the weights they round.
 *
 * Groups: a group's grid is fitted, per output row, when the loop reaches its first column,
 * over the group's current (error-updated) columns. AutoGPTQ reads its outer `W` there, which
 * lacks the updates of earlier columns of the same 128-column block; that only differs when a
 * group starts inside a block (groupSize < blockSize), and makes the result depend on the
 * block size, which this version does not.
 */

export interface GptqOptions {
  params: IntGroupParams;
  /** Quantize columns by decreasing diag H (desc_act). */
  actOrder?: boolean;
  /** GPTQ's percdamp: fraction of mean(diag H) added to the diagonal. Default 0.01. */
  percDamp?: number;
  /** Columns per deferred update; changes rounding only. Default 128. */
  blockSize?: number;
  /** AutoGPTQ's static_groups: fit every group's grid up front on the original column groups. */
  staticGroups?: boolean;
  /** Named in errors. */
  layerName?: string;
  /** Where the loop's deferred updates run (the GPU: kernels/linalg/gptq-deferred.ts); host memory by default. */
  deferred?: DeferredUpdates;
  /** Computes U = chol_upper(H⁻¹) (the GPU: kernels/linalg/cholesky-gpu.ts); formats/second-order's CPU function by default. */
  factorize?: PrepareOptions["factorize"];
  /**
   * The whole column loop on a device (kernels/second-order/int-columns-gpu.ts gpuGptqLoop), in place
   * of runGptqLoop when it accepts the parameters: bit for bit the host loop's result with that
   * device's deferred product (test/kernels/gptq-resident.test.ts). `deferred` is then unused.
   */
  residentLoop?: GptqResidentLoop;
}

/** runGptqLoop's default block size, which a resident loop must be given explicitly. */
const DEFAULT_BLOCK_SIZE = 128;

export interface GptqResult {
  /** Codes in original column order; `gIdx` set for act-order without static groups. */
  tensor: IntGroupTensor;
  /** Σ ((w − q)/U[c,c])², the loop's Hessian-weighted loss (twice AutoGPTQ's `Losses` sum). */
  hessianLoss: number;
  /** Quantization order (position i was original column perm[i]), or undefined for the identity. */
  perm: Int32Array | undefined;
  /** Columns with diag H = 0, quantized as zeros. */
  deadColumns: number[];
  /** The amount added to diag H. */
  damp: number;
}

/** Quantizes a row-major [outFeatures][inFeatures] weight with GPTQ. */
export function quantizeGptq(weight: Float32Array, outFeatures: number, inFeatures: number, hessian: Hessian, options: GptqOptions): GptqResult {
  const { params } = options;
  checkQuantizerArgs(weight, outFeatures, inFeatures, params);
  checkGptqInputs(hessian, inFeatures, options);
  const prepared = prepareSecondOrder(weight, outFeatures, hessian, {
    percDamp: options.percDamp ?? 0.01,
    actOrder: options.actOrder === true,
    ...(options.layerName === undefined ? {} : { layerName: options.layerName }),
    ...(options.factorize === undefined ? {} : { factorize: options.factorize }),
  });
  const tensor = emptyIntGroupTensor(outFeatures, inFeatures, params);
  const pass: GptqPass = {
    weightT: prepared.weightT,
    u: prepared.u,
    rows: outFeatures,
    size: inFeatures,
    tensor,
    codesT: new Uint8Array(inFeatures * outFeatures),
    staticGrids: options.staticGroups === true ? fitStaticGrids(prepared.weightT, prepared.perm, tensor) : undefined,
  };
  // An empty layer has no column to put on a device: the host loop handles it.
  const resident = outFeatures > 0 && inFeatures > 0 && options.residentLoop?.accepts(params) === true ? options.residentLoop : undefined;
  const loop = resident !== undefined
    ? resident.run(pass, { blockSize: options.blockSize ?? DEFAULT_BLOCK_SIZE })
    : runGptqPassOnHost(pass, {
      ...(options.blockSize === undefined ? {} : { blockSize: options.blockSize }),
      ...(options.deferred === undefined ? {} : { deferred: options.deferred }),
    });
  scatterFromColumnMajor(pass.codesT, tensor.codes, outFeatures, inFeatures, prepared.perm);
  if (prepared.perm !== undefined && options.staticGroups !== true) tensor.gIdx = permutedGroupIndex(prepared.perm, params.groupSize);
  return { tensor, hessianLoss: loop.hessianLoss, perm: prepared.perm, deadColumns: prepared.deadColumns, damp: prepared.damp };
}

function checkGptqInputs(hessian: Hessian, inFeatures: number, options: GptqOptions): void {
  const tensor = options.layerName === undefined ? {} : { tensor: options.layerName };
  if (hessian.size !== inFeatures || hessian.data.length !== inFeatures * inFeatures) {
    throw new FormatError("SHAPE_SIZE_MISMATCH", "Hessian size does not match the layer's input features", { ...tensor, expected: inFeatures, actual: hessian.size });
  }
  const percDamp = options.percDamp ?? 0.01;
  if (!Number.isFinite(percDamp) || percDamp < 0) throw new UsageError("BAD_ARGUMENT", "percDamp must be a finite number ≥ 0", { ...tensor, actual: percDamp });
  // runGptqLoop's own check, made here so that a resident loop never sees a bad block size either.
  const blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
  if (!Number.isInteger(blockSize) || blockSize < 1) throw new UsageError("BAD_ARGUMENT", "GPTQ block size must be a positive integer", { ...tensor, expected: ">= 1", actual: blockSize });
}

/**
 * The pass on the host: runGptqLoop with the column quantizer of `pass` (static or current
 * groups), writing pass.codesT and, for current groups, the tensor's scales and zeros.
 */
export function runGptqPassOnHost(pass: GptqPass, options: LoopOptions = {}): LoopResult {
  const quantizer = pass.staticGrids === undefined ? currentGroupQuantizer(pass.tensor, pass.codesT) : staticGroupQuantizer(pass.tensor, pass.codesT, pass.staticGrids);
  return runGptqLoop(pass.weightT, pass.u, pass.rows, pass.size, quantizer, options);
}

/**
 * Groups in quantization order: the grids of group g = ⌊i / groupSize⌋ are fitted when
 * position i = g·groupSize comes up, over positions i … i+groupSize−1 as they are then.
 */
function currentGroupQuantizer(tensor: IntGroupTensor, codesT: Uint8Array): ColumnQuantizer {
  const { params, outFeatures: rows, inFeatures: size } = tensor;
  const groupSize = params.groupSize;
  const grids: Grid[] = [];
  return {
    columnsRead: (column) => (column % groupSize === 0 ? Math.min(groupSize, size - column) : 1),
    quantizeColumn(column: number, current: Float64Array, quantized: Float64Array, view: LoopView): void {
      if (column % groupSize === 0) {
        const width = Math.min(groupSize, size - column);
        fitGroupGrids(view.weightT, rows, rangePositions(column, width), params, grids);
        storeGrids(tensor, column / groupSize, grids);
      }
      quantizeOnGrids(current, grids, params, codesT.subarray(column * rows, (column + 1) * rows), quantized);
    },
  };
}

/**
 * AutoGPTQ static_groups: the grids of original group g, fitted before the loop on original columns
 * g·groupSize … and stored in the tensor, and the group of each column in quantization order.
 */
function fitStaticGrids(weightT: Float64Array, perm: Int32Array | undefined, tensor: IntGroupTensor): GptqStaticGrids {
  const { params, outFeatures: rows, inFeatures: size } = tensor;
  const groupSize = params.groupSize;
  const position = perm === undefined ? undefined : invertPermutation(perm);
  const gridsByGroup: Grid[][] = [];
  for (let g = 0; g < groupCount(size, groupSize); g++) {
    const width = Math.min(groupSize, size - g * groupSize);
    const positions = rangePositions(g * groupSize, width).map((k) => (position === undefined ? k : position[k]!));
    const grids: Grid[] = [];
    fitGroupGrids(weightT, rows, positions, params, grids);
    storeGrids(tensor, g, grids);
    gridsByGroup.push(grids);
  }
  const groupOfColumn = Int32Array.from({ length: size }, (_, column) => Math.floor((perm === undefined ? column : perm[column]!) / groupSize));
  return { grids: gridsByGroup, groupOfColumn };
}

/** Static groups: every column on its original group's grids, fitted before the loop. */
function staticGroupQuantizer(tensor: IntGroupTensor, codesT: Uint8Array, staticGrids: GptqStaticGrids): ColumnQuantizer {
  const { params, outFeatures: rows } = tensor;
  return {
    quantizeColumn(column: number, current: Float64Array, quantized: Float64Array): void {
      const grids = staticGrids.grids[staticGrids.groupOfColumn[column]!]!;
      quantizeOnGrids(current, grids, params, codesT.subarray(column * rows, (column + 1) * rows), quantized);
    },
  };
}

function rangePositions(start: number, width: number): number[] {
  return Array.from({ length: width }, (_, i) => start + i);
}

/** Per row n, the grid of the row's values in the given columns (positions of weightT). */
function fitGroupGrids(weightT: Float64Array, rows: number, positions: number[], params: IntGroupParams, grids: Grid[]): void {
  const rowMin = new Float64Array(rows).fill(Infinity);
  const rowMax = new Float64Array(rows).fill(-Infinity);
  for (const p of positions) {
    const offset = p * rows;
    for (let n = 0; n < rows; n++) {
      const w = weightT[offset + n]!;
      if (w < rowMin[n]!) rowMin[n] = w;
      if (w > rowMax[n]!) rowMax[n] = w;
    }
  }
  grids.length = rows;
  for (let n = 0; n < rows; n++) grids[n] = fitGrid(rowMin[n]!, rowMax[n]!, params);
}

function storeGrids(tensor: IntGroupTensor, group: number, grids: Grid[]): void {
  const base = group * tensor.outFeatures;
  for (let n = 0; n < grids.length; n++) {
    tensor.scales[base + n] = grids[n]!.scale;
    tensor.zeros[base + n] = grids[n]!.zero;
  }
}

/** Codes of one column and the values they dequantize to, scale · (code − zero). */
function quantizeOnGrids(current: Float64Array, grids: Grid[], params: IntGroupParams, codes: Uint8Array, quantized: Float64Array): void {
  for (let n = 0; n < current.length; n++) {
    const grid = grids[n]!;
    const code = quantizeCode(current[n]!, grid, params);
    codes[n] = code;
    quantized[n] = dequantizeCode(code, grid);
  }
}

/** Act-order without static groups: gIdx[perm[i]] = ⌊i / groupSize⌋. */
function permutedGroupIndex(perm: Int32Array, groupSize: number): Int32Array {
  const gIdx = new Int32Array(perm.length);
  for (let i = 0; i < perm.length; i++) gIdx[perm[i]!] = Math.floor(i / groupSize);
  return gIdx;
}
