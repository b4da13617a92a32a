import { scaleThreshold } from "../../formats/int-group/grid.js";
import type { GptqPass, GptqResidentLoop } from "../../formats/int-group/quantizers/gptq-resident.js";
import { groupCount, type IntGroupParams } from "../../formats/int-group/types.js";
import type { DevicePointer } from "../cuda/driver.js";
import { launchChecks, type DeviceArray } from "../cuda/launch-checks.js";
import type { GpuEngine } from "../engine.js";
import { launchFitIntGrids, launchTakeIntColumn, SO_SCALE_DTYPE, type IntGridShape, type IntGridTable } from "./launch.js";
import { checkResidentLoop, runResidentLoop, type DeviceColumnQuantizer } from "./resident-loop.js";

/**
 * GPTQ's int-group column quantizer on the device (formats/int-group/quantizers/gptq.ts), for the
 * resident loop: with current groups, a group's per-row grids are fitted on the device when the
 * loop reaches its first column (second-order.cu so_fit_int_grids, over the group's columns as they
 * are then: columnsRead makes the loop close its block first, as runGptqLoop does); with static
 * groups they were fitted on the host before the loop (gptq.ts fitStaticGrids) and are uploaded
 * once. Per column, the take (so_take_int_column) writes the codes into a [size][rows] uint8 array
 * that stays on the device, like the grid tables, until the loop ends.
 *
 * Launches per column: 1 take, +1 fit at a current group's first column; the loop adds the
 * propagation, and per block the deferred product and the losses.
 */

const { refuse } = launchChecks("gptq columns");

/** The device GPTQ loop: the resident loop with gptqDeviceColumns. */
export function gpuGptqLoop(engine: GpuEngine): GptqResidentLoop {
  return {
    get description() {
      return engine.describe();
    },
    accepts: (params) => gridSupported(params),
    run(pass, options) {
      // Every refusal before the first device call.
      checkResidentLoop(pass.weightT, pass.u, pass.rows, pass.size, options.blockSize);
      checkPass(pass);
      return runResidentLoop(engine, pass.weightT, pass.u, pass.rows, pass.size, gptqDeviceColumns(engine, pass), options);
    },
  };
}

/** Parameters the kernels implement: code widths 2 … 8 (int-columns.cuh), F16/BF16/F32 scales, any group size. */
function gridSupported(params: IntGroupParams): boolean {
  return Number.isInteger(params.bits) && params.bits >= 2 && params.bits <= 8 && Object.hasOwn(SO_SCALE_DTYPE, params.scaleDtype) && Number.isSafeInteger(params.groupSize) && params.groupSize >= 1;
}

/** The device column quantizer of `pass`: what finish() writes is pass.codesT and, for current groups, the tensor's scales and zeros. */
export function gptqDeviceColumns(engine: GpuEngine, pass: GptqPass): DeviceColumnQuantizer {
  const { rows, size, tensor, staticGrids } = pass;
  const params = tensor.params;
  const groupSize = params.groupSize;
  const groups = groupCount(size, groupSize);
  const grid: IntGridShape = { bits: params.bits, sym: params.sym, scaleDtype: params.scaleDtype };
  const thresh = scaleThreshold(params.scaleDtype);
  const taken: DevicePointer[] = [];
  const alloc = (elements: number, elementBytes: number): DeviceArray => {
    const pointer = engine.context.alloc(elements * elementBytes);
    taken.push(pointer);
    return { pointer, elements };
  };
  let state: { scales: DeviceArray; zeros: DeviceArray; codes: DeviceArray } | undefined;
  const begun = (what: string) => {
    if (state === undefined) throw refuse(what, "called before begin", "begin() first", undefined);
    return state;
  };
  const quantizer: DeviceColumnQuantizer = {
    begin(weight, loopRows, loopSize) {
      if (loopRows !== rows || loopSize !== size || weight.elements !== rows * size) throw refuse("begin", "the loop's weight is not the pass's shape", [rows, size], [loopRows, loopSize, weight.elements]);
      const context = engine.context;
      state = { scales: alloc(groups * rows, 4), zeros: alloc(groups * rows, 4), codes: alloc(size * rows, 1) };
      if (staticGrids === undefined) {
        // Every group is fitted at its first column before any take reads it; zeroed all the same,
        // so that nothing uninitialised is ever loaded.
        context.zero(state.scales.pointer, groups * rows * 4);
        context.zero(state.zeros.pointer, groups * rows * 4);
      } else {
        const scales = new Float32Array(groups * rows);
        const zeros = new Float32Array(groups * rows);
        staticGrids.grids.forEach((byRow, g) => byRow.forEach((fit, n) => {
          scales[g * rows + n] = fit.scale;
          zeros[g * rows + n] = fit.zero;
        }));
        context.uploadInto(state.scales.pointer, new Uint8Array(scales.buffer));
        context.uploadInto(state.zeros.pointer, new Uint8Array(zeros.buffer));
      }
    },
    quantizeColumn(c, step) {
      const { scales, zeros, codes } = begun("quantizeColumn");
      const group = staticGrids === undefined ? Math.floor(c / groupSize) : staticGrids.groupOfColumn[c]!;
      const table: IntGridTable = { scales, zeros, offset: group * rows };
      if (staticGrids === undefined && c % groupSize === 0) launchFitIntGrids(engine, step.weight, rows, c, Math.min(groupSize, size - c), grid, thresh, table, step.status);
      launchTakeIntColumn(engine, {
        weight: step.weight, columnOffset: c * rows, rows, grid, table, diagonal: step.diagonal,
        codes, codesOffset: c * rows, errors: step.errors, errorsOffset: step.errorsOffset, status: step.status,
      });
    },
    finish() {
      const { scales, zeros, codes } = begun("finish");
      const context = engine.context;
      context.download(codes.pointer, pass.codesT);
      if (staticGrids !== undefined) return;
      // gptq.ts storeGrids: the same [group][row] layout; a float32 scale is copied as is, and a zero
      // (an integer-valued float32) converts to Uint16 as the CPU's number does.
      const scaleValues = new Float32Array(groups * rows);
      const zeroValues = new Float32Array(groups * rows);
      context.download(scales.pointer, new Uint8Array(scaleValues.buffer));
      context.download(zeros.pointer, new Uint8Array(zeroValues.buffer));
      tensor.scales.set(scaleValues);
      tensor.zeros.set(zeroValues);
    },
    end() {
      state = undefined;
      for (const pointer of taken.splice(0)) engine.context.free(pointer);
    },
  };
  if (staticGrids === undefined) quantizer.columnsRead = (c) => (c % groupSize === 0 ? Math.min(groupSize, size - c) : 1);
  return quantizer;
}

/** Everything the launches' extents follow from, before any device work: refusals name what is wrong. */
function checkPass(pass: GptqPass): void {
  const what = "resident loop";
  const fail = (detail: string, expected: unknown, actual: unknown): never => {
    throw refuse(what, detail, expected, actual);
  };
  const { rows, size, tensor, staticGrids } = pass;
  const params = tensor.params;
  if (tensor.outFeatures !== rows || tensor.inFeatures !== size) fail("the tensor's shape is not the loop's", [rows, size], [tensor.outFeatures, tensor.inFeatures]);
  if (!gridSupported(params)) fail("no kernel for these grid parameters", "bits 2 … 8, F16/BF16/F32 scales, group size ≥ 1", params);
  const groups = groupCount(size, params.groupSize);
  if (pass.codesT.length !== size * rows) fail("codesT has the wrong length", size * rows, pass.codesT.length);
  if (tensor.scales.length !== groups * rows) fail("the tensor's scales have the wrong length", groups * rows, tensor.scales.length);
  if (tensor.zeros.length !== groups * rows) fail("the tensor's zeros have the wrong length", groups * rows, tensor.zeros.length);
  if (staticGrids === undefined) return;
  if (staticGrids.groupOfColumn.length !== size) fail("one static group per column", size, staticGrids.groupOfColumn.length);
  for (const g of staticGrids.groupOfColumn) if (!(g >= 0 && g < groups)) fail("a column's static group is out of range", `0 … ${groups - 1}`, g);
  if (staticGrids.grids.length !== groups) fail("one set of static grids per group", groups, staticGrids.grids.length);
  for (const byRow of staticGrids.grids) {
    if (byRow.length !== rows) fail("one static grid per row", rows, byRow.length);
    // The device tables are float32: a grid that is not exactly one would change on the way.
    for (const fit of byRow) for (const x of [fit.scale, fit.zero]) if (!(Object.is(Math.fround(x), x) || Number.isNaN(x))) fail("a static grid value is not a float32", "float32 values", x);
  }
}
