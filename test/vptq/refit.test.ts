import { suite } from "uvu";
import * as assert from "uvu/assert";
import { prepareSecondOrder } from "../../formats/second-order/prepare.js";
import { quantizeVptq, type VptqQuantizeOptions } from "../../formats/vptq/quantize.js";
import { computeChunks, PARALLEL_MIN_WORK } from "../../formats/vptq/refit-pool.js";
import { accumulateSystems, partialLength, planChunks, refitScratch, type RefitData } from "../../formats/vptq/refit-systems.js";
import { mulberry32 } from "../helpers/prng.js";
import { correlatedHessian, randomLayer } from "../helpers/resident-loop.js";
import { decodedError } from "../helpers/vptq-decoded-error.js";

/**
 * VPTQ's departures from the reference that change its result (quantize-options.ts
 * normHessian, codebook-refit.ts): the normalised weight quantized against D·H·D, and the
 * least-squares codebook refit and its rounds, checked against explicit sums and brute-force decoded errors.
 */

const systems = suite("vptq refit: the normal systems");

/** Random assignments over `size` columns of `blocks` vector-rows; outlier columns and residual optional. */
function randomData(seed: number, o: { rows: number; size: number; vectorLen: number; k: number; kr: number; outlierSize: number }): RefitData {
  const rng = mulberry32(seed);
  const blocks = Math.ceil(o.rows / o.vectorLen);
  const unknowns = o.k + o.kr;
  const variables = new Int32Array(blocks * o.size * 2).fill(-1);
  for (let b = 0; b < blocks; b++) {
    for (let j = o.outlierSize; j < o.size; j++) {
      variables[2 * (b * o.size + j)] = Math.floor(rng() * o.k);
      if (o.kr > 0) variables[2 * (b * o.size + j) + 1] = o.k + Math.floor(rng() * o.kr);
    }
  }
  return {
    h: correlatedHessian(rng, o.size, 2 * o.size).data,
    y: Float64Array.from({ length: o.size * o.rows }, () => rng() - 0.5),
    variables, rows: o.rows, size: o.size, vectorLen: o.vectorLen, unknowns, outlierSize: o.outlierSize, hasResidual: o.kr > 0,
  };
}

systems("accumulateSystems is Σ_b P_bᵀ·H·P_b and P_bᵀ·H·y_{b·v+t}, with explicit one-hot P_b (residual, outlier columns, a partial row; v4 and v8)", () => {
  // v4: rows 0…19 fill vector-rows 0…4, vector-row 5 has 2 real rows. v8: 0…15 fill 0…1, 2 has 6.
  const ranges = { 4: [[0, 5, 4], [5, 6, 2], [2, 4, 4]], 8: [[0, 2, 8], [2, 3, 6]] } as const;
  for (const vectorLen of [4, 8] as const) {
    const d = randomData(11, { rows: 22, size: 24, vectorLen, k: 6, kr: 3, outlierSize: 5 });
    const { size, unknowns, vectorLen: vl } = d;
    for (const [from, to, active] of ranges[vectorLen]) {
      const out = new Float64Array(partialLength(d));
      accumulateSystems(d, from, to, active, out, refitScratch(d));
      const a = new Float64Array(unknowns * unknowns);
      const rhs = new Float64Array(vl * unknowns);
      for (let b = from; b < to; b++) {
        const p = new Float64Array(size * unknowns);
        for (let j = 0; j < size; j++) for (let s = 0; s < 2; s++) {
          const x = d.variables[2 * (b * size + j) + s]!;
          if (x >= 0) p[j * unknowns + x] = 1;
        }
        for (let x = 0; x < unknowns; x++) {
          for (let z = 0; z < unknowns; z++) for (let i = 0; i < size; i++) for (let j = 0; j < size; j++) a[x * unknowns + z]! += p[i * unknowns + x]! * d.h[i * size + j]! * p[j * unknowns + z]!;
          for (let t = 0; t < active; t++) for (let i = 0; i < size; i++) for (let j = 0; j < size; j++) rhs[t * unknowns + x]! += p[i * unknowns + x]! * d.h[i * size + j]! * d.y[j * d.rows + b * vl + t]!;
        }
      }
      const expected = [...a, ...rhs];
      out.forEach((v, i) => assert.ok(Math.abs(v - expected[i]!) <= 1e-12 * (1 + Math.abs(expected[i]!)), `v${vl} [${from}, ${to}) entry ${i}: ${v} vs ${expected[i]}`));
    }
  }
});

systems("chunks depend on the shapes only, and helper threads give every chunk bit for bit", () => {
  const d = randomData(12, { rows: 256, size: 512, vectorLen: 4, k: 32, kr: 0, outlierSize: 0 });
  const chunks = planChunks(64, d);
  assert.equal(chunks, Array.from({ length: 16 }, (_, c) => [4 * c, 4 * c + 4]));
  assert.ok(64 * 512 * 512 >= PARALLEL_MIN_WORK, "large enough for the helpers");
  const threaded = computeChunks(d, chunks);
  const alone = computeChunks(d, chunks, { threads: false });
  threaded.forEach((partial, c) => assert.ok(partial.every((v, i) => Object.is(v, alone[c]![i])), `chunk ${c}`));
  // A memory cap shows as fewer, larger chunks, still a function of the shapes.
  assert.equal(planChunks(5, { unknowns: 2048, vectorLen: 8 }), [[0, 1], [1, 2], [2, 3], [3, 4], [4, 5]]);
  // (2048² + 8·2048) doubles a chunk: 7 fit in 256 MiB.
  assert.equal(planChunks(40, { unknowns: 2048, vectorLen: 8 }).length, 7);
});

systems.run();

const quantize = suite("vptq refit: in the quantizer");
const M = 100; // 25 vectors of 4 rows; with vectorLen 8, 12 full and one of 4
const N = 96;
const layer = randomLayer(21, M, N);
const run = (options: VptqQuantizeOptions, weight = layer.weight): ReturnType<typeof quantizeVptq> => quantizeVptq(weight, M, N, layer.h, { numCentroids: 32, vectorLen: 8, seed: 5, ...options });

quantize("the refit lowers the decoded error by exactly what it reports, and the loop loss stays the decoded error", () => {
  const cases: VptqQuantizeOptions[] = [{}, { groupNum: 2, outlierPercent: 5, outlierVectorLen: 3, outlierNumCentroids: 16 }, { numResCentroids: 8, refitCodebooks: true }];
  for (const options of cases) {
    // No norm: the decode is the fp16 centroids, so the errors are exact (as in quantize.test.ts).
    // One round: the loop is not redone, so the indices are the unrefitted run's.
    const on = run({ ...options, enableNorm: false, refitRounds: 1 });
    const off = run({ ...options, enableNorm: false, refitCodebooks: false });
    const label = JSON.stringify(options);
    assert.equal([...on.tensor.mainIndices], [...off.tensor.mainIndices], `${label}: the refit keeps the indices`);
    assert.ok(on.refit?.kept === true && on.refit.reduction > 0, `${label}: kept`);
    const before = decodedError(off.tensor, layer.weight, layer.h, off.damp);
    const after = decodedError(on.tensor, layer.weight, layer.h, on.damp);
    assert.ok(after < before, `${label}: ${after} vs ${before}`);
    if (options.numResCentroids === undefined) {
      assert.ok(Math.abs(before - after - on.refit.reduction) <= 1e-9 * before, `${label}: reduction ${on.refit.reduction} vs ${before - after}`);
      assert.ok(Math.abs(after - on.hessianLoss) <= 1e-9 * after, `${label}: loop loss ${on.hessianLoss} vs decoded ${after}`);
    }
    // The outlier codebook is not refitted.
    if (options.outlierPercent !== undefined) assert.equal([...on.tensor.outlierCentroids!], [...off.tensor.outlierCentroids!]);
  }
});

quantize("a second round redoes the loop against the refitted codebooks (new indices), and the loop loss is still the decoded error", () => {
  for (const options of [{}, { groupNum: 2, outlierPercent: 5, outlierVectorLen: 3, outlierNumCentroids: 16 }] as VptqQuantizeOptions[]) {
    const one = run({ ...options, enableNorm: false, refitRounds: 1 });
    const two = run({ ...options, enableNorm: false, refitRounds: 2 });
    const label = JSON.stringify(options);
    assert.not.equal([...two.tensor.mainIndices], [...one.tensor.mainIndices], label);
    const decoded = decodedError(two.tensor, layer.weight, layer.h, two.damp);
    assert.ok(Math.abs(decoded - two.hessianLoss) <= 1e-9 * decoded, `${label}: loop loss ${two.hessianLoss} vs decoded ${decoded}`);
    assert.ok(two.refit?.kept === true && two.refit.rounds === 2, label);
  }
  assert.equal(run({}).tensor.centroids, run({ refitRounds: 2 }).tensor.centroids, "2 rounds by default");
  assert.throws(() => run({ refitRounds: 0 }), /refitRounds must be a positive integer/);
});

quantize("\"auto\" refits without a residual codebook only; refine: false never refits", () => {
  assert.ok(run({}).refit !== undefined);
  assert.is(run({ numResCentroids: 8 }).refit, undefined);
  assert.is(run({ refine: false, refitCodebooks: true }).refit, undefined);
});

quantize("normHessian: D·H·D is prepared (scaled, permuted by its diagonal, damped from its mean), and it lowers the decoded error of a layer with uneven column ranges", () => {
  const rng = mulberry32(31);
  const scale = Float64Array.from({ length: N }, () => 0.1 + 4 * rng());
  const prepared = prepareSecondOrder(layer.weight, M, layer.h, { columnScale: scale, actOrder: true, percDamp: 0.01, keepHessian: true });
  const scaledDiag = (j: number): number => scale[j]! ** 2 * layer.h.data[j * (N + 1)]!;
  let mean = 0;
  for (let j = 0; j < N; j++) mean += scaledDiag(j) / N;
  assert.ok(Math.abs(prepared.damp - 0.01 * mean) <= 1e-12 * mean);
  const perm = prepared.perm!;
  for (let a = 0; a < N; a += 7) {
    for (let b = 0; b < N; b += 5) {
      const expected = scale[perm[a]!]! * layer.h.data[perm[a]! * N + perm[b]!]! * scale[perm[b]!]! + (a === b ? prepared.damp : 0);
      assert.ok(Math.abs(prepared.h![a * N + b]! - expected) <= 1e-12 * Math.abs(expected) + 1e-300, `H'[${a}, ${b}]`);
    }
    if (a > 0) assert.ok(scaledDiag(perm[a - 1]!) >= scaledDiag(perm[a]!));
  }
  // Columns whose ranges differ 40-fold: weighing their normalised errors alike misjudges them.
  const uneven = Float32Array.from(layer.weight, (w, i) => Math.fround(w * scale[i % N]!));
  const withScale = decodedError(run({ normHessian: true, refitCodebooks: false }, uneven).tensor, uneven, layer.h);
  const without = decodedError(run({ normHessian: false, refitCodebooks: false }, uneven).tensor, uneven, layer.h);
  assert.ok(withScale < without, `D·H·D ${withScale} vs H ${without}`);
});

quantize.run();
