import { suite } from "uvu";
import * as assert from "uvu/assert";
import { FormatError, UsageError } from "../../formats/errors.js";
import type { Hessian } from "../../formats/second-order/index.js";
import { halfValues, toHalfBits } from "../../formats/spqr/half.js";
import { kMeansPlusPlus, seedCentroid, SumTree, type InitData } from "../../formats/vptq/kmeans-init.js";
import { mulberry32 as initStream } from "../../formats/random.js";
import { weightedKMeans, type KMeansData, type KMeansInit } from "../../formats/vptq/kmeans.js";
import { quantizeVptq, type VptqQuantizeOptions, type VptqQuantizeResult } from "../../formats/vptq/quantize.js";
import type { VptqTensor } from "../../formats/vptq/types.js";
import { gaussian, mulberry32, type Rng } from "../helpers/prng.js";
import { decodedError } from "../helpers/vptq-decoded-error.js";

/**
 * The VPTQ quantizer against what it promises: a valid, deterministic tensor; a decoded weight
 * whose Hessian-weighted error beats k-means alone, beats unweighted k-means, and falls further
 * with a residual codebook; a loop loss that IS the decoded error (so indices, perm, groups,
 * outliers and partial vectors are where the decoder looks); and an exact, monotone k-means.
 */

const SEED = Number(process.env["LMPACK_VPTQ_SEED"] ?? 0x7e51) >>> 0;
const M = 128;
const N = 256;
const half = halfValues();

function randomWeight(rng: Rng, m: number, n: number): Float32Array {
  return Float32Array.from({ length: m * n }, () => Math.fround(0.02 * gaussian(rng)));
}

/** H = XᵀX / samples of AR(1)-correlated features with per-feature scales (so diag H varies). */
function calibrationHessian(rng: Rng, n: number, samples: number): Hessian {
  const featureScale = Float64Array.from({ length: n }, () => 0.2 + 3 * rng());
  const x = new Float64Array(samples * n);
  for (let t = 0; t < samples; t++) {
    let previous = 0;
    for (let j = 0; j < n; j++) {
      previous = gaussian(rng) + 0.6 * previous;
      x[t * n + j] = previous * featureScale[j]!;
    }
  }
  const data = new Float64Array(n * n);
  for (let t = 0; t < samples; t++) {
    for (let i = 0; i < n; i++) {
      const xi = x[t * n + i]! / samples;
      for (let j = 0; j < n; j++) data[i * n + j]! += xi * x[t * n + j]!;
    }
  }
  return { size: n, data };
}


const rng = mulberry32(SEED);
const W = randomWeight(rng, M, N);
const H = calibrationHessian(rng, N, 512);
const run = (options: VptqQuantizeOptions, weight = W, m = M, h = H): VptqQuantizeResult => quantizeVptq(weight, m, weight.length / m, h, { numCentroids: 64, ...options });
const arraysOf = (t: VptqTensor): (ArrayBufferView | undefined)[] => [t.centroids, t.resCentroids, t.mainIndices, t.resIndices, t.outlierCentroids, t.outlierIndices, t.perm, t.weightScale, t.weightBias];
const bytes = (a: ArrayBufferView | undefined): number[] => (a === undefined ? [] : Array.from(new Uint8Array(a.buffer, a.byteOffset, a.byteLength)));

const quantize = suite("vptq: quantize");

quantize("produces the representation types.ts describes: shapes, index ranges, a permutation, the norm", () => {
  const { tensor: t } = run({ numResCentroids: 16 });
  assert.equal(t.params, { vectorLen: 8, numCentroids: 64, numResCentroids: 16, groupNum: 1, groupSize: N, outlierSize: 0, outlierVectorLen: 0, outlierNumCentroids: 0, enableNorm: true, enablePerm: true });
  assert.is(t.dtype, "F16");
  assert.is(t.centroids.length, 64 * 8);
  assert.is(t.resCentroids!.length, 16 * 8);
  assert.is(t.mainIndices.length, (M / 8) * N);
  assert.ok(t.mainIndices.every((i) => i < 64) && t.resIndices!.every((i) => i < 16));
  assert.equal([...t.perm!].sort((a, b) => a - b), Array.from({ length: N }, (_, i) => i));
  // Act-order on the normalised weight's Hessian D·H·D (normHessian): s_j²·H[j,j] decreasing along
  // the permutation; on H itself, as the reference, with normHessian false.
  const scaled = (j: number): number => half[t.weightScale![j]!]! ** 2 * H.data[j * (N + 1)]!;
  for (let k = 1; k < N; k++) assert.ok(scaled(t.perm![k - 1]!) >= scaled(t.perm![k]!), `position ${k}`);
  const plain = run({ numResCentroids: 16, normHessian: false }).tensor;
  for (let k = 1; k < N; k++) assert.ok(H.data[plain.perm![k - 1]! * (N + 1)]! >= H.data[plain.perm![k]! * (N + 1)]!);
  assert.not.equal([...plain.perm!], [...t.perm!]);
  for (const j of [0, 17, 255]) {
    let min = Infinity;
    let max = -Infinity;
    for (let r = 0; r < M; r++) [min, max] = [Math.min(min, W[r * N + j]!), Math.max(max, W[r * N + j]!)];
    assert.is(t.weightBias![j], toHalfBits(min), `bias of column ${j}`);
    assert.is(t.weightScale![j], toHalfBits(max - min), `scale of column ${j}`);
  }
});

quantize("is deterministic: the same seed gives the same bytes, another seed other centroids", () => {
  for (const kmeansInit of ["kmeans++", "random"] as const) {
    const a = run({ numResCentroids: 16, kmeansInit, seed: 3 }).tensor;
    const b = run({ numResCentroids: 16, kmeansInit, seed: 3 }).tensor;
    arraysOf(a).forEach((array, i) => assert.equal(bytes(array), bytes(arraysOf(b)[i]), `${kmeansInit}: array ${i}`));
    const c = run({ numResCentroids: 16, kmeansInit, seed: 4 }).tensor;
    assert.not.equal(bytes(a.centroids), bytes(c.centroids), kmeansInit);
  }
});

quantize("refinement, Hessian weighting and a residual codebook each lower tr(ΔW·H·ΔWᵀ) of the decoded weight", () => {
  const full = decodedError(run({}).tensor, W, H);
  const kmeansOnly = decodedError(run({ refine: false }).tensor, W, H);
  const unweighted = decodedError(run({ kmeansWeighting: "uniform" }).tensor, W, H);
  const residual = decodedError(run({ numResCentroids: 16 }).tensor, W, H);
  assert.ok(full < 0.9 * kmeansOnly, `VPTQ ${full} vs k-means only ${kmeansOnly}`);
  assert.ok(full < unweighted, `Hessian-weighted ${full} vs uniform ${unweighted}`);
  assert.ok(residual < 0.8 * full, `residual ${residual} vs ${full}`);
  // Both initialisations give a working quantizer.
  const random = decodedError(run({ kmeansInit: "random" }).tensor, W, H);
  assert.ok(random < 0.9 * kmeansOnly, `random init ${random}`);
});

quantize("the loop loss is the decoded error: indices, perm, groups, outliers and partial vectors land where the decoder reads", () => {
  // No norm, so the decode is the fp16 centroids themselves and tr(ΔW·(H + damp·I)·ΔWᵀ) = Σ((w − q)/U[c,c])².
  const m = 100; // 12 full vectors of 8 and one of 4 rows per column; outlier vectors of 3: 33 full, one of 1.
  const weight = randomWeight(mulberry32(SEED + 1), m, N);
  const cases: VptqQuantizeOptions[] = [{}, { dtype: "BF16", enablePerm: false }, { numResCentroids: 16, groupNum: 2, outlierPercent: 3, outlierVectorLen: 3, outlierNumCentroids: 32 }];
  for (const options of cases) {
    const result = run({ ...options, enableNorm: false }, weight, m);
    const t = result.tensor;
    if (options.outlierPercent !== undefined) {
      // ceil(3 % of 256) = 8, already even.
      assert.is(t.params.outlierSize, 8);
      assert.is(t.params.groupSize, (N - 8) / 2);
      assert.is(t.outlierIndices!.length, Math.ceil(m / 3) * 8);
      assert.ok(t.outlierIndices!.every((i) => i < 32));
    }
    const error = decodedError(t, weight, H, result.damp);
    assert.ok(Math.abs(error - result.hessianLoss) <= 1e-9 * error, `${JSON.stringify(options)}: decoded ${error} vs loop ${result.hessianLoss}`);
  }
});

quantize("dead columns and constant columns", () => {
  const h: Hessian = { size: N, data: H.data.slice() };
  for (let i = 0; i < N; i++) h.data[5 * N + i] = h.data[i * N + 5] = 0;
  const weight = W.slice();
  for (let r = 0; r < M; r++) weight[r * N + 9] = 0.5;
  const result = run({}, weight, M, h);
  assert.equal(result.deadColumns, [5]);
  // A constant column has no range: scale 1, so Q = W − bias is representable.
  assert.is(result.tensor.weightScale![9], toHalfBits(1));
  assert.is(result.tensor.weightBias![9], toHalfBits(0.5));
  assert.ok(Number.isFinite(result.hessianLoss));
});

quantize("rejects bad options (UsageError BAD_ARGUMENT) and bad data (FormatError)", () => {
  const usage = (options: VptqQuantizeOptions, weight = W, m = M, n = N): void => {
    try {
      quantizeVptq(weight, m, n, H, options);
    } catch (error) {
      assert.instance(error, UsageError, JSON.stringify(options));
      assert.is((error as UsageError).code, "BAD_ARGUMENT");
      return;
    }
    assert.unreachable(`accepted ${JSON.stringify(options)}`);
  };
  usage({ numCentroids: 100 });
  usage({ numCentroids: 1 });
  usage({ numResCentroids: 3 });
  usage({ vectorLen: 0 });
  usage({ vectorLen: 2.5 });
  usage({ groupNum: 3 }); // 256 % 3 ≠ 0 and no outlier columns to absorb the rest
  usage({ numCentroids: 8192 }); // 16 · 256 = 4096 vectors
  usage({ outlierPercent: 1, outlierNumCentroids: 256 }); // 3 columns · 32 vectors of 4 rows
  usage({ kmeansInit: "kmeans||" as KMeansInit });
  usage({ percDamp: -1 });
  usage({ seed: 1.5 });
  usage({ kmeansIterations: 0 });
  usage({}, new Float32Array(70000), 1, 70000);
  usage({}, W, M, N + 1);
  assert.throws(() => quantizeVptq(W, M, N, { size: 8, data: new Float64Array(64) }), (e: unknown) => e instanceof FormatError && e.code === "SHAPE_SIZE_MISMATCH");
  const nan = W.slice();
  nan[77] = NaN;
  assert.throws(() => quantizeVptq(nan, M, N, H), (e: unknown) => e instanceof FormatError && e.code === "PACKED_VALUE_INVALID");
});

quantize.run();

const kmeans = suite("vptq: weighted k-means");

function clusteredData(seed: number, count: number, dim: number): KMeansData {
  const r = mulberry32(seed);
  const vectors = Float64Array.from({ length: count * dim }, () => gaussian(r));
  const weights = Float64Array.from({ length: count }, () => 0.1 + r());
  return { vectors, count, dim, weights };
}

function bruteNearest(data: KMeansData, centroids: Float64Array, k: number, i: number): number {
  let best = Infinity;
  for (let c = 0; c < k; c++) {
    let s = 0;
    for (let d = 0; d < data.dim; d++) s += (data.vectors[i * data.dim + d]! - centroids[c * data.dim + d]!) ** 2;
    best = Math.min(best, s);
  }
  return best;
}

kmeans("both inits: the objective never rises, and the result is a fixed point (exact nearest, weighted means)", () => {
  for (const init of ["kmeans++", "random"] as const) {
    for (const dim of [8, 3]) {
      const data = clusteredData(SEED + dim, 3000, dim);
      const seen: number[] = [];
      const k = 128;
      const result = weightedKMeans(data, { k, init, seed: 1, maxIterations: 200, tolerance: 0, onIteration: (_, objective) => seen.push(objective) });
      assert.equal(seen, result.objectives);
      assert.ok(result.objectives.length > 3, `${init}: iterations ${result.objectives.length}`);
      for (let t = 1; t < seen.length; t++) assert.ok(seen[t]! <= seen[t - 1]! * (1 + 1e-12), `${init} dim ${dim}: iteration ${t} rose from ${seen[t - 1]} to ${seen[t]}`);
      assert.ok(seen.at(-1)! < 0.9 * seen[0]!);
      for (let i = 0; i < data.count; i += 7) {
        let own = 0;
        for (let d = 0; d < dim; d++) own += (data.vectors[i * dim + d]! - result.centroids[result.labels[i]! * dim + d]!) ** 2;
        assert.ok(own <= bruteNearest(data, result.centroids, k, i) * (1 + 1e-12), `${init} dim ${dim}: vector ${i} is not at its nearest centroid`);
      }
    }
  }
});

/** k-means++ as written in the paper: every D² recomputed against every new centre. */
function plainKMeansPlusPlus(data: InitData, k: number, random: () => number): Float64Array {
  const { count, dim, vectors, weights } = data;
  const centroids = new Float64Array(k * dim);
  const nearest = new Float64Array(count).fill(Infinity);
  const sampler = new SumTree(count);
  for (let i = 0; i < count; i++) sampler.set(i, weights[i]!);
  let fallback = 0;
  for (let j = 0; j < k; j++) {
    let drawn = sampler.sample(random());
    if (drawn < 0) {
      while (fallback < count && nearest[fallback] === 0) fallback++;
      drawn = fallback < count ? fallback : j % count;
    }
    seedCentroid(data, drawn, centroids, j);
    for (let i = 0; i < count; i++) {
      const active = i < data.partialFrom ? dim : data.partialDims;
      let squared = 0;
      for (let d = 0; d < active; d++) squared += (vectors[i * dim + d]! - centroids[j * dim + d]!) ** 2;
      if (squared >= nearest[i]!) continue;
      nearest[i] = squared;
      sampler.set(i, weights[i]! * squared);
    }
  }
  return centroids;
}

kmeans("k-means++ with triangle-inequality pruning picks exactly the centres of the plain algorithm", () => {
  for (const [count, dim, k, partialFrom] of [[4000, 8, 300, 3900], [2000, 4, 64, 2000], [500, 2, 200, 480]] as const) {
    const base = clusteredData(SEED + count, count, dim);
    // Duplicates (D² = 0 ties) and a few zero weights (dead columns) on top of Gaussian data.
    for (let i = 10; i < 60; i++) base.vectors.copyWithin(i * dim, 0, dim);
    for (let i = 100; i < 120; i++) base.weights[i] = 0;
    const data: InitData = { ...base, partialFrom, partialDims: dim - 1 };
    const fast = kMeansPlusPlus(data, k, initStream(7));
    const plain = plainKMeansPlusPlus(data, k, initStream(7));
    assert.equal(Array.from(fast), Array.from(plain), `count ${count} dim ${dim} k ${k}`);
  }
});

kmeans("partial vectors are compared over their real coordinates only", () => {
  const data = { ...clusteredData(SEED, 2000, 8), partialFrom: 1800, partialDims: 5 };
  // Padding that would pull centroids if it were used.
  for (let i = 1800; i < 2000; i++) data.vectors.fill(100, i * 8 + 5, i * 8 + 8);
  const result = weightedKMeans(data, { k: 64, init: "kmeans++", seed: 0, maxIterations: 30, tolerance: 0 });
  assert.ok(result.centroids.every((c) => Math.abs(c) < 10));
  for (let t = 1; t < result.objectives.length; t++) assert.ok(result.objectives[t]! <= result.objectives[t - 1]! * (1 + 1e-12));
});

kmeans("empty clusters are re-seeded; k equal to the distinct vectors reaches objective 0", () => {
  // 150 copies of one vector and 50 distinct others: random init draws the copy many times.
  const data = clusteredData(SEED, 200, 4);
  for (let i = 1; i < 150; i++) data.vectors.copyWithin(i * 4, 0, 4);
  const result = weightedKMeans(data, { k: 51, init: "random", seed: 2, maxIterations: 50, tolerance: 0 });
  assert.ok(result.reseeded > 0, "nothing was re-seeded");
  const used = new Set(result.labels);
  assert.is(used.size, 51, "every cluster ends non-empty");
  assert.ok(result.objectives.at(-1)! < 1e-20, `objective ${result.objectives.at(-1)}`);
  for (let t = 1; t < result.objectives.length; t++) assert.ok(result.objectives[t]! <= result.objectives[t - 1]! * (1 + 1e-12));
  const plusPlus = weightedKMeans(data, { k: 51, init: "kmeans++", seed: 2, maxIterations: 50, tolerance: 0 });
  assert.ok(plusPlus.objectives.at(-1)! < 1e-20);
  assert.throws(() => weightedKMeans(data, { k: 201, init: "random", seed: 0, maxIterations: 5, tolerance: 0 }), (e: unknown) => e instanceof UsageError);
});

kmeans.run();
