import { suite } from "uvu";
import * as assert from "uvu/assert";
import type { ColumnBooks } from "../../formats/vptq/codebook.js";
import { quantizeVptq, type VptqQuantizeOptions } from "../../formats/vptq/quantize.js";
import type { VptqResidentLoop } from "../../formats/vptq/resident.js";
import type { VptqTensor } from "../../formats/vptq/types.js";
import { gpuLloyd } from "../../kernels/kmeans/lloyd-gpu.js";
import { gpuCodebookSearch } from "../../kernels/kmeans/search-gpu.js";
import { gpuDeferredUpdates } from "../../kernels/linalg/gptq-deferred.js";
import { gpuVptqLoop } from "../../kernels/second-order/vptq-columns-gpu.js";
import { expectCode } from "../helpers/gpu-assert.js";
import { randomLayer, untouchableEngine } from "../helpers/resident-loop.js";
import { gpuSuite } from "../helpers/gpu-suite.js";

/**
 * VPTQ's GPTQ loop resident on the GPU (kernels/second-order) against the host loop driving the
 * same GPU pieces (deferred updates, codebook searches, Lloyd): the same tensor, index for index,
 * and the same Hessian loss, bit for bit. On the CPU: every refusal comes before the GPU is
 * touched, and a loop that declines a layout leaves quantization to the host loop.
 */



/** The arguments quantizeVptq hands a resident loop, captured from a small CPU run. */
function capturedPass(): Parameters<VptqResidentLoop["run"]> {
  const { weight, h } = randomLayer(5, 24, 40);
  let captured: Parameters<VptqResidentLoop["run"]> | undefined;
  const capture: VptqResidentLoop = {
    description: "capture",
    accepts: () => true,
    run: (...args) => {
      captured = args;
      throw new Error("captured");
    },
  };
  try {
    quantizeVptq(weight, 24, 40, h, { vectorLen: 4, numCentroids: 16, numResCentroids: 4, kmeansIterations: 3, residentLoop: capture });
  } catch (error) {
    if ((error as Error).message !== "captured") throw error;
  }
  return captured!;
}

const cpu = suite("VPTQ resident loop: refusals and the fallback (no GPU needed)");
cpu("refuses bad shapes with LAUNCH_REFUSED before touching the GPU", () => {
  const [weightT, u, rows, size, books, tensor, options] = capturedPass();
  const loop = gpuVptqLoop(untouchableEngine);
  const withBooks = (b: ColumnBooks) => () => loop.run(weightT, u, rows, size, b, tensor, options);
  const withTensor = (t: VptqTensor) => () => loop.run(weightT, u, rows, size, books, t, options);
  expectCode(() => loop.run(weightT.subarray(1), u, rows, size, books, tensor, options), "LAUNCH_REFUSED", "short weight");
  expectCode(() => loop.run(weightT, u.subarray(1), rows, size, books, tensor, options), "LAUNCH_REFUSED", "short factor");
  expectCode(() => loop.run(weightT, u, rows, size, books, tensor, { ...options, blockSize: 0 }), "LAUNCH_REFUSED", "block size 0");
  expectCode(() => loop.run(weightT, u, 0, size, books, tensor, options), "LAUNCH_REFUSED", "no rows");
  expectCode(withTensor({ ...tensor, outFeatures: rows + 1 }), "LAUNCH_REFUSED", "tensor of another shape");
  expectCode(withTensor({ ...tensor, params: { ...tensor.params, groupSize: tensor.params.groupSize - 1 } }), "LAUNCH_REFUSED", "partition short of the columns");
  expectCode(withTensor({ ...tensor, mainIndices: tensor.mainIndices.subarray(1) }), "LAUNCH_REFUSED", "short mainIndices");
  assert.is(tensor.resIndices, undefined, "captured in pass 1, before the residual codebook");
  expectCode(withBooks({ ...books, residual: books.main }), "LAUNCH_REFUSED", "residual books without resIndices");
  expectCode(withBooks({ ...books, main: [] }), "LAUNCH_REFUSED", "no main codebook");
  const main = books.main[0]!;
  expectCode(withBooks({ ...books, main: [{ ...main, values: main.values.subarray(1) }] }), "LAUNCH_REFUSED", "short codebook");
  const long = { ...main, vectorLen: 17, values: new Float64Array(main.k * 17) };
  expectCode(() => loop.run(weightT, u, rows, size, { ...books, main: [long], residual: undefined }, { ...tensor, params: { ...tensor.params, vectorLen: 17 } }, options), "LAUNCH_REFUSED", "vector length without a search kernel");
  assert.is(loop.accepts({ ...tensor.params, vectorLen: 17 }), false);
  assert.is(loop.accepts({ ...tensor.params, outlierSize: 4, outlierVectorLen: 32 }), false);
  assert.is(loop.accepts(tensor.params), true);
});
cpu("a loop that declines the layout leaves the pass to the host loop: the same result", () => {
  const { weight, h } = randomLayer(6, 24, 40);
  const options: VptqQuantizeOptions = { vectorLen: 4, numCentroids: 16, numResCentroids: 4, kmeansIterations: 3 };
  const declining: VptqResidentLoop = { description: "declines", accepts: () => false, run: () => assert.unreachable("run() of a loop that declined") as never };
  assert.equal(quantizeVptq(weight, 24, 40, h, { ...options, residentLoop: declining }), quantizeVptq(weight, 24, 40, h, options));
});
cpu.run();

interface Case {
  name: string;
  rows: number;
  columns: number;
  dead?: number[];
  options: VptqQuantizeOptions;
}

const CASES: Case[] = [
  { name: "100×96 v8 k256, every last vector partial, 2 dead columns, act-order, F16", rows: 100, columns: 96, dead: [3, 50], options: { vectorLen: 8, numCentroids: 256 } },
  { name: "256×384 v8 k4096 + residual 256, no act-order, F16", rows: 256, columns: 384, options: { vectorLen: 8, numCentroids: 4096, numResCentroids: 256, enablePerm: false, kmeansInit: "random" } },
  { name: "130×200 v4 k256 + residual 16, 5 % outliers (v6 k64), 2 groups, BF16, block 48", rows: 130, columns: 200, options: { vectorLen: 4, numCentroids: 256, numResCentroids: 16, outlierPercent: 5, outlierVectorLen: 6, outlierNumCentroids: 64, groupNum: 2, dtype: "BF16", blockSize: 48 } },
  { name: "203×160 v8 k256 + residual 16, no act-order, BF16, block 1", rows: 203, columns: 160, options: { vectorLen: 8, numCentroids: 256, numResCentroids: 16, enablePerm: false, dtype: "BF16", blockSize: 1 } },
  { name: "96×72 v6 k64, act-order, F16, block 7", rows: 96, columns: 72, options: { vectorLen: 6, numCentroids: 64, blockSize: 7 } },
];

const { gpu, available } = await gpuSuite("VPTQ resident loop on the GPU");
if (available) {
  CASES.forEach((c, i) => {
    gpu(`${c.name}: the resident loop's tensor and loss equal the host loop's bit for bit`, ({ engine }) => {
      const { weight, h } = randomLayer(100 + i, c.rows, c.columns, c.dead);
      const deferred = gpuDeferredUpdates(engine);
      const search = gpuCodebookSearch(engine);
      const loop = gpuVptqLoop(engine);
      let passes = 0;
      const counted: VptqResidentLoop = {
        description: loop.description,
        accepts: (p) => loop.accepts(p),
        run: (...args) => {
          passes++;
          return loop.run(...args);
        },
      };
      try {
        const pieces: VptqQuantizeOptions = { ...c.options, kmeansIterations: 12, deferred, codebookSearch: search, kmeansBackend: gpuLloyd(engine) };
        const host = quantizeVptq(weight, c.rows, c.columns, h, pieces);
        const resident = quantizeVptq(weight, c.rows, c.columns, h, { ...pieces, residentLoop: counted });
        // A residual codebook's second pass, or each refit round after the first, runs the loop again.
        assert.is(passes, ((c.options.numResCentroids ?? 0) > 0 ? 2 : 1) + (resident.refit === undefined ? 0 : resident.refit.rounds - 1), "the resident loop ran every pass");
        for (const key of ["mainIndices", "resIndices", "outlierIndices", "centroids", "resCentroids", "outlierCentroids", "weightScale", "weightBias", "perm"] as const) {
          assert.equal(resident.tensor[key], host.tensor[key], key);
        }
        assert.ok(Object.is(resident.hessianLoss, host.hessianLoss), `Hessian loss ${resident.hessianLoss} vs ${host.hessianLoss}`);
        assert.equal(resident, host);
      } finally {
        deferred.release();
        search.release();
      }
    });
  });
}
gpu.run();
