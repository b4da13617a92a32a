import { suite } from "uvu";
import * as assert from "uvu/assert";
import type { Grid } from "../../formats/int-group/grid.js";
import { quantizeGptq, runGptqPassOnHost, type GptqOptions } from "../../formats/int-group/quantizers/gptq.js";
import type { GptqPass, GptqResidentLoop } from "../../formats/int-group/quantizers/gptq-resident.js";
import type { IntBits, IntGroupParams } from "../../formats/int-group/types.js";
import type { LoopResult } from "../../formats/second-order/index.js";
import { gpuDeferredUpdates } from "../../kernels/linalg/gptq-deferred.js";
import { gpuGptqLoop } from "../../kernels/second-order/int-columns-gpu.js";
import { assertSameBits, expectCode } from "../helpers/gpu-assert.js";
import { randomLayer, untouchableEngine } from "../helpers/resident-loop.js";
import { gpuSuite } from "../helpers/gpu-suite.js";

/**
 * GPTQ's int-group loop resident on the GPU (kernels/second-order int-columns) against the host
 * loop driving the same GPU deferred updates: the same codes, scales, zeros, g_idx, updated weight,
 * column losses and Hessian loss, bit for bit. On the CPU: every refusal comes before the GPU is
 * touched, and quantizeGptq's resident branch ends as its host branch does.
 */


const params = (bits: IntBits, groupSize: number, sym: boolean, scaleDtype: IntGroupParams["scaleDtype"]): IntGroupParams => ({ bits, groupSize, sym, scaleDtype });


/** An independent copy of a pass (the static grids are only read, and shared). */
function clonePass(pass: GptqPass): GptqPass {
  const t = pass.tensor;
  return { ...pass, weightT: pass.weightT.slice(), u: pass.u.slice(), codesT: pass.codesT.slice(), tensor: { ...t, params: { ...t.params }, codes: t.codes.slice(), scales: t.scales.slice(), zeros: t.zeros.slice(), gIdx: t.gIdx?.slice() } };
}

/** The pass quantizeGptq hands a resident loop (and its block size), captured from a small CPU run. */
function capturedPass(staticGroups: boolean): { pass: GptqPass; blockSize: number } {
  const { weight, h } = randomLayer(5, 24, 40);
  let captured: { pass: GptqPass; blockSize: number } | undefined;
  const capture: GptqResidentLoop = {
    description: "capture",
    accepts: () => true,
    run: (pass, options) => {
      captured = { pass: clonePass(pass), blockSize: options.blockSize };
      throw new Error("captured");
    },
  };
  try {
    quantizeGptq(weight, 24, 40, h, { params: params(4, 16, false, "F16"), actOrder: true, staticGroups, residentLoop: capture });
  } catch (error) {
    if ((error as Error).message !== "captured") throw error;
  }
  return captured!;
}

const cpu = suite("GPTQ resident loop: refusals and the resident branch (no GPU needed)");
cpu("refuses bad passes with LAUNCH_REFUSED before touching the GPU", () => {
  const loop = gpuGptqLoop(untouchableEngine);
  const { pass, blockSize } = capturedPass(false);
  const run = (p: GptqPass, size = blockSize) => () => loop.run(p, { blockSize: size });
  const tensor = pass.tensor;
  expectCode(run({ ...pass, weightT: pass.weightT.subarray(1) }), "LAUNCH_REFUSED", "short weight");
  expectCode(run({ ...pass, u: pass.u.subarray(1) }), "LAUNCH_REFUSED", "short factor");
  expectCode(run(pass, 0), "LAUNCH_REFUSED", "block size 0");
  expectCode(run({ ...pass, rows: 0 }), "LAUNCH_REFUSED", "no rows");
  expectCode(run({ ...pass, tensor: { ...tensor, outFeatures: pass.rows + 1 } }), "LAUNCH_REFUSED", "tensor of another shape");
  expectCode(run({ ...pass, codesT: pass.codesT.subarray(1) }), "LAUNCH_REFUSED", "short codes");
  expectCode(run({ ...pass, tensor: { ...tensor, scales: tensor.scales.subarray(1) } }), "LAUNCH_REFUSED", "short scales");
  expectCode(run({ ...pass, tensor: { ...tensor, zeros: tensor.zeros.subarray(1) } }), "LAUNCH_REFUSED", "short zeros");
  expectCode(run({ ...pass, tensor: { ...tensor, params: { ...tensor.params, bits: 9 as IntBits } } }), "LAUNCH_REFUSED", "9-bit codes");
  expectCode(run({ ...pass, tensor: { ...tensor, params: { ...tensor.params, groupSize: 0 } } }), "LAUNCH_REFUSED", "group size 0");
  const fixed = capturedPass(true);
  const grids = fixed.pass.staticGrids!;
  expectCode(run({ ...fixed.pass, staticGrids: { ...grids, groupOfColumn: grids.groupOfColumn.map((g) => g + 3) } }), "LAUNCH_REFUSED", "static group out of range");
  expectCode(run({ ...fixed.pass, staticGrids: { ...grids, groupOfColumn: grids.groupOfColumn.subarray(1) } }), "LAUNCH_REFUSED", "short static group index");
  expectCode(run({ ...fixed.pass, staticGrids: { ...grids, grids: grids.grids.slice(1) } }), "LAUNCH_REFUSED", "missing static grids");
  const offGrid: Grid[][] = grids.grids.map((byRow, g) => (g === 0 ? [{ scale: 0.1, zero: 3 }, ...byRow.slice(1)] : byRow));
  expectCode(run({ ...fixed.pass, staticGrids: { ...grids, grids: offGrid } }), "LAUNCH_REFUSED", "a static scale that is not a float32");
  for (const bits of [2, 3, 4, 8] as const) assert.is(loop.accepts(params(bits, 128, true, "BF16")), true);
  assert.is(loop.accepts(params(9 as IntBits, 128, false, "F16")), false);
  assert.is(loop.accepts({ ...params(4, 128, false, "F16"), scaleDtype: "F8" as IntGroupParams["scaleDtype"] }), false);
});
cpu("the resident branch ends as the host branch: a loop that declines, and one that runs the host pass", () => {
  const { weight, h } = randomLayer(6, 24, 40, [3]);
  const declining: GptqResidentLoop = { description: "declines", accepts: () => false, run: () => assert.unreachable("run() of a loop that declined") as never };
  let runs = 0;
  const onHost: GptqResidentLoop = { description: "host", accepts: () => true, run: (pass, options) => (runs++, runGptqPassOnHost(pass, options)) };
  for (const extra of [{}, { actOrder: true }, { actOrder: true, staticGroups: true }, { blockSize: 8 }]) {
    const options: GptqOptions = { params: params(3, 16, true, "BF16"), ...extra };
    const reference = quantizeGptq(weight, 24, 40, h, options);
    assert.equal(quantizeGptq(weight, 24, 40, h, { ...options, residentLoop: declining }), reference);
    assert.equal(quantizeGptq(weight, 24, 40, h, { ...options, residentLoop: onHost }), reference);
  }
  assert.is(runs, 4);
});
cpu.run();

interface Case {
  name: string;
  rows: number;
  columns: number;
  dead?: number[];
  options: GptqOptions;
}

const CASES: Case[] = [
  { name: "96×200 4-bit asym g64 (short last group), act-order, F16, dead column 7", rows: 96, columns: 200, dead: [7], options: { params: params(4, 64, false, "F16"), actOrder: true } },
  { name: "96×200 2-bit sym g64, act-order, static groups, BF16, dead columns 0 and 150", rows: 96, columns: 200, dead: [0, 150], options: { params: params(2, 64, true, "BF16"), actOrder: true, staticGroups: true } },
  { name: "96×200 8-bit asym g32, in order, static groups, F32, block 1", rows: 96, columns: 200, options: { params: params(8, 32, false, "F32"), staticGroups: true, blockSize: 1 } },
  { name: "96×200 3-bit sym per-channel, in order, BF16, block 7", rows: 96, columns: 200, options: { params: params(3, 200, true, "BF16"), blockSize: 7 } },
  { name: "257×384 3-bit asym g128, in order, F32, block 48: groups start inside blocks and end them early", rows: 257, columns: 384, options: { params: params(3, 128, false, "F32"), blockSize: 48 } },
  { name: "257×384 8-bit sym per-channel, act-order, F16", rows: 257, columns: 384, options: { params: params(8, 384, true, "F16"), actOrder: true } },
  { name: "257×384 4-bit sym g256 past block 128, act-order, BF16, dead column 300", rows: 257, columns: 384, dead: [300], options: { params: params(4, 256, true, "BF16"), actOrder: true } },
  { name: "257×384 2-bit asym g100 (groups straddle blocks), in order, F16, block 64, dead column 0", rows: 257, columns: 384, dead: [0], options: { params: params(2, 100, false, "F16"), blockSize: 64 } },
  { name: "512×1024 2-bit asym g64, act-order, F16", rows: 512, columns: 1024, options: { params: params(2, 64, false, "F16"), actOrder: true } },
  { name: "512×1024 4-bit sym g128, act-order, static groups, F16, dead column 1000", rows: 512, columns: 1024, dead: [1000], options: { params: params(4, 128, true, "F16"), actOrder: true, staticGroups: true } },
];

/** Float64 bit equality (Object.is per element), naming the first differing element. */
function assertSameDoubles(actual: Float64Array, expected: Float64Array, what: string): void {
  assert.is(actual.length, expected.length, `${what}: length`);
  const at = actual.findIndex((v, i) => !Object.is(v, expected[i]));
  assert.ok(at < 0, `${what}: element ${at} differs: GPU ${actual[at]}, host ${expected[at]}`);
}

function assertSamePass(resident: GptqPass, residentLoop: LoopResult, host: GptqPass, hostLoop: LoopResult): void {
  assert.ok(resident.codesT.every((c, i) => c === host.codesT[i]), `codes: first difference at ${resident.codesT.findIndex((c, i) => c !== host.codesT[i])}`);
  assertSameBits(resident.tensor.scales, host.tensor.scales, "scales");
  assert.ok(resident.tensor.zeros.every((z, i) => z === host.tensor.zeros[i]), "zeros");
  assertSameDoubles(residentLoop.columnLoss, hostLoop.columnLoss, "column losses");
  assertSameDoubles(resident.weightT, host.weightT, "updated weight");
  assert.ok(Object.is(residentLoop.hessianLoss, hostLoop.hessianLoss), `Hessian loss ${residentLoop.hessianLoss} vs ${hostLoop.hessianLoss}`);
}

const { gpu, available } = await gpuSuite("GPTQ resident loop on the GPU");
if (available) {
  CASES.forEach((c, i) => {
    gpu(`${c.name}: the resident loop's result equals the host loop's bit for bit`, ({ engine }) => {
      const { weight, h } = randomLayer(200 + i, c.rows, c.columns, c.dead);
      const deferred = gpuDeferredUpdates(engine);
      const loop = gpuGptqLoop(engine);
      let passes = 0;
      // Runs the host pass on a copy first, then the resident one, and compares everything the pass holds.
      const checked: GptqResidentLoop = {
        description: loop.description,
        accepts: (p) => loop.accepts(p),
        run(pass, options) {
          passes++;
          const host = clonePass(pass);
          const hostLoop = runGptqPassOnHost(host, { blockSize: options.blockSize, deferred: deferred });
          const residentLoop = loop.run(pass, options);
          assertSamePass(pass, residentLoop, host, hostLoop);
          return residentLoop;
        },
      };
      try {
        const host = quantizeGptq(weight, c.rows, c.columns, h, { ...c.options, deferred: deferred });
        const resident = quantizeGptq(weight, c.rows, c.columns, h, { ...c.options, residentLoop: checked });
        assert.is(passes, 1, "the resident loop ran");
        assert.equal(resident.deadColumns, c.dead ?? [], "the dead columns");
        assert.ok(resident.tensor.codes.every((v, k) => v === host.tensor.codes[k]), "codes");
        assertSameBits(resident.tensor.scales, host.tensor.scales, "scales");
        assert.equal(resident.tensor.zeros, host.tensor.zeros, "zeros");
        assert.equal(resident.tensor.gIdx, host.tensor.gIdx, "gIdx");
        assert.ok(Object.is(resident.hessianLoss, host.hessianLoss), `Hessian loss ${resident.hessianLoss} vs ${host.hessianLoss}`);
        assert.equal(resident, host);
      } finally {
        deferred.release();
      }
    });
  });
}
gpu.run();
