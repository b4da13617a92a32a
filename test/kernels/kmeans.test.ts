import { suite } from "uvu";
import * as assert from "uvu/assert";
import type { Hessian } from "../../formats/second-order/index.js";
import { cpuCodebookSearch, type Codebook } from "../../formats/vptq/codebook.js";
import { buildKdTree, nearestPoint, nearestPoints } from "../../formats/vptq/kd-tree.js";
import { cpuLloyd, lloydConverged, objectiveSum, reseedEmpty, weightedKMeans, type InitData, type KMeansBackend, type KMeansData, type KMeansInit } from "../../formats/vptq/kmeans.js";
import { quantizeVptq } from "../../formats/vptq/quantize.js";
import { gpuLloyd } from "../../kernels/kmeans/lloyd-gpu.js";
import { gpuCodebookSearch } from "../../kernels/kmeans/search-gpu.js";
import { gaussian, mulberry32 } from "../helpers/prng.js";
import { gpuSuite } from "../helpers/gpu-suite.js";

/**
 * The k-means contract the GPU implements (formats/vptq/kmeans.ts KMeansBackend): exact arg-min
 * of the sequential squared distance with ties to the lower index, means in vector order, the
 * chunked objective. On the CPU, a brute-force Lloyd written from that contract alone must give
 * the k-d tree path's result bit for bit, on data full of ties and duplicates. On a GPU,
 * kernels/kmeans must give it too, and VPTQ quantization must give the same bytes on both.
 */

interface Case {
  name: string;
  count: number;
  dim: number;
  k: number;
  /** Coordinates on a grid of this step (ties and duplicate vectors); 0: continuous. */
  grid: number;
  partialDims?: number;
  zeroWeights?: boolean;
}

function makeData(c: Case, seed: number): KMeansData {
  const rng = mulberry32(seed);
  const vectors = new Float64Array(c.count * c.dim);
  for (let i = 0; i < vectors.length; i++) {
    const v = 0.05 * gaussian(rng);
    vectors[i] = c.grid > 0 ? Math.round(v / c.grid) * c.grid : v;
  }
  const weights = Float64Array.from({ length: c.count }, (_, i) => (c.zeroWeights === true && i % 7 === 0 ? 0 : 0.5 + rng()));
  const partialFrom = c.partialDims === undefined ? c.count : c.count - Math.max(1, Math.floor(c.count / 50));
  if (c.partialDims !== undefined) for (let i = partialFrom; i < c.count; i++) vectors.fill(0, i * c.dim + c.partialDims, (i + 1) * c.dim);
  return { vectors, count: c.count, dim: c.dim, weights, partialFrom, partialDims: c.partialDims ?? c.dim };
}

/** Lloyd written from the contract alone: brute-force arg-min, means in vector order. */
const bruteForceLloyd: KMeansBackend = {
  description: "brute force",
  lloyd(set, centroids, options) {
    const { count, dim, vectors, weights, partialFrom, partialDims } = set;
    const { k } = options;
    const labels = new Int32Array(count);
    const distances = new Float64Array(count);
    const objectives: number[] = [];
    let converged = false;
    let reseeded = 0;
    for (let iteration = 0; iteration < options.maxIterations; iteration++) {
      for (let i = 0; i < count; i++) {
        const active = i < partialFrom ? dim : partialDims;
        let best = Infinity;
        let label = 0;
        for (let j = 0; j < k; j++) {
          let sum = 0;
          for (let d = 0; d < active; d++) sum += (vectors[i * dim + d]! - centroids[j * dim + d]!) ** 2;
          if (sum < best) [best, label] = [sum, j];
        }
        labels[i] = label;
        distances[i] = best;
      }
      objectives.push(objectiveSum(weights, distances));
      if (lloydConverged(objectives, options.tolerance)) {
        converged = true;
        break;
      }
      if (iteration === options.maxIterations - 1) break;
      const sums = new Float64Array(k * dim);
      const weightSums = new Float64Array(k * dim);
      const counts = new Int32Array(k);
      for (let i = 0; i < count; i++) {
        counts[labels[i]!]!++;
        const active = i < partialFrom ? dim : partialDims;
        for (let d = 0; d < active; d++) {
          sums[labels[i]! * dim + d]! += weights[i]! * vectors[i * dim + d]!;
          weightSums[labels[i]! * dim + d]! += weights[i]!;
        }
      }
      for (let e = 0; e < k * dim; e++) if (weightSums[e]! > 0) centroids[e] = sums[e]! / weightSums[e]!;
      reseeded += reseedEmpty(set as InitData, k, labels, distances, counts, centroids);
    }
    return { labels, objectives, converged, reseeded };
  },
};

const CASES: Case[] = [
  { name: "continuous, dim 8", count: 3000, dim: 8, k: 64, grid: 0 },
  { name: "coarse grid (ties, duplicates, empty clusters), dim 8", count: 3000, dim: 8, k: 128, grid: 0.05 },
  { name: "grid, dim 4, partial vectors (2 of 4 dims), zero weights", count: 2500, dim: 4, k: 100, grid: 0.02, partialDims: 2, zeroWeights: true },
  { name: "continuous, dim 6, partial vectors (5 of 6 dims)", count: 2000, dim: 6, k: 50, grid: 0, partialDims: 5 },
  { name: "grid, dim 12", count: 1500, dim: 12, k: 40, grid: 0.04 },
];

function assertSameRun(actual: ReturnType<typeof weightedKMeans>, expected: ReturnType<typeof weightedKMeans>, what: string): void {
  assert.equal(actual.objectives, expected.objectives, `${what}: objectives`);
  assert.is(actual.converged, expected.converged, `${what}: converged`);
  assert.is(actual.reseeded, expected.reseeded, `${what}: re-seeded`);
  const label = actual.labels.findIndex((l, i) => l !== expected.labels[i]);
  assert.is(label, -1, `${what}: label of vector ${label}: ${actual.labels[label]} vs ${expected.labels[label]}`);
  const coordinate = actual.centroids.findIndex((c, i) => !Object.is(c, expected.centroids[i]));
  assert.is(coordinate, -1, `${what}: centroid coordinate ${coordinate}: ${actual.centroids[coordinate]} vs ${expected.centroids[coordinate]}`);
}

const contract = suite("k-means contract: the k-d tree path equals brute force");
contract("k-d tree searches: ties go to the lower index, m-nearest ordered by (distance, index)", () => {
  // Four copies of each of 16 grid points, shuffled, so every query has exact ties.
  const rng = mulberry32(5);
  const base = Array.from({ length: 16 }, () => [Math.round(rng() * 4), Math.round(rng() * 4), Math.round(rng() * 4)]);
  const order = Array.from({ length: 64 }, (_, i) => i).sort(() => rng() - 0.5);
  const points = new Float64Array(64 * 3);
  order.forEach((slot, i) => points.set(base[i % 16]!, slot * 3));
  const tree = buildKdTree(points, 64, 3);
  for (let q = 0; q < 200; q++) {
    const query = Float64Array.from([Math.round(rng() * 8) / 2, Math.round(rng() * 8) / 2, Math.round(rng() * 8) / 2]);
    const all = Array.from({ length: 64 }, (_, j) => ({ j, d: (query[0]! - points[j * 3]!) ** 2 + (query[1]! - points[j * 3 + 1]!) ** 2 + (query[2]! - points[j * 3 + 2]!) ** 2 }));
    all.sort((a, b) => a.d - b.d || a.j - b.j);
    const found = { index: -1, distanceSquared: Infinity };
    nearestPoint(tree, query, 0, 3, found);
    assert.is(found.index, all[0]!.j, `query ${q}: nearest`);
    const ids = new Int32Array(9);
    const squares = new Float64Array(9);
    nearestPoints(tree, query, 0, 3, 9, ids, squares);
    assert.equal(Array.from(ids), all.slice(0, 9).map((e) => e.j), `query ${q}: 9 nearest`);
  }
});
contract("k-d tree searches on a grid of thirds: rounding in the cell bound never prunes a lower-index tie", () => {
  // Thirds and sixths are not exact in binary, so the incrementally built cell distance can round
  // above the leaf's own sum for the same point; with duplicates spread over several cells that
  // once pruned the lower-index copy (centroids 6, 127, 138 all at [-1, 1/3, 2/3]).
  const rng = mulberry32(21);
  const count = 400;
  const points = Float64Array.from({ length: count * 3 }, () => (Math.floor(rng() * 7) - 3) / 3);
  const tree = buildKdTree(points, count, 3);
  const distance = (q: Float64Array, j: number): number => (q[0]! - points[j * 3]!) ** 2 + (q[1]! - points[j * 3 + 1]!) ** 2 + (q[2]! - points[j * 3 + 2]!) ** 2;
  for (let q = 0; q < 20000; q++) {
    const query = Float64Array.from({ length: 3 }, () => (Math.floor(rng() * 15) - 7) / 6);
    let best = 0;
    for (let j = 1; j < count; j++) if (distance(query, j) < distance(query, best)) best = j;
    const found = { index: -1, distanceSquared: Infinity };
    nearestPoint(tree, query, 0, 3, found);
    assert.is(found.index, best, `query ${q} [${Array.from(query).join(", ")}]: nearest`);
  }
});
for (const c of CASES) {
  for (const init of ["random", "kmeans++"] as KMeansInit[]) {
    contract(`${c.name}, k ${c.k}, ${init}: labels, centroids, objectives and re-seeds bit for bit`, () => {
      const data = makeData(c, 11 + c.k);
      const options = { k: c.k, init, seed: 3, maxIterations: 25, tolerance: 1e-9 };
      const reference = weightedKMeans(data, options);
      const brute = weightedKMeans(data, { ...options, backend: bruteForceLloyd });
      assertSameRun(brute, reference, c.name);
    });
  }
}
contract("codebook search: the k-d tree equals brute force, residual included, on tied data", () => {
  const rng = mulberry32(9);
  const book = (k: number): Codebook => {
    const values = Float64Array.from({ length: k * 8 }, () => Math.round(gaussian(rng) * 8) / 64);
    return { k, vectorLen: 8, bits: new Uint16Array(k * 8), values, tree: buildKdTree(values, k, 8) };
  };
  const main = book(300);
  const residual = book(16);
  const count = 400;
  const queries = Float64Array.from({ length: count * 8 }, () => Math.round(gaussian(rng) * 8) / 64);
  const mainOut = new Int32Array(count);
  const resOut = new Int32Array(count);
  cpuCodebookSearch.nearest(main, residual, queries, count, 3, mainOut, resOut);
  const nearest = (b: Codebook, q: Float64Array, at: number, active: number): number => {
    let [best, label] = [Infinity, -1];
    for (let j = 0; j < b.k; j++) {
      let sum = 0;
      for (let d = 0; d < active; d++) sum += (q[at + d]! - b.values[j * 8 + d]!) ** 2;
      if (sum < best) [best, label] = [sum, j];
    }
    return label;
  };
  for (let v = 0; v < count; v++) {
    const active = v === count - 1 ? 3 : 8;
    const m = nearest(main, queries, v * 8, active);
    assert.is(mainOut[v], m, `vector ${v}: main`);
    const difference = Float64Array.from({ length: 8 }, (_, t) => (t < active ? queries[v * 8 + t]! - main.values[m * 8 + t]! : 0));
    assert.is(resOut[v], nearest(residual, difference, 0, active), `vector ${v}: residual`);
  }
});
contract.run();

const { gpu, available } = await gpuSuite("k-means and codebook searches on the GPU");
if (available) {
  for (const c of CASES) {
    for (const init of ["random", "kmeans++"] as KMeansInit[]) {
      gpu(`${c.name}, k ${c.k}, ${init}: GPU Lloyd equals the CPU's bit for bit`, ({ engine }) => {
        const data = makeData(c, 11 + c.k);
        const options = { k: c.k, init, seed: 3, maxIterations: 25, tolerance: 1e-9 };
        assertSameRun(weightedKMeans(data, { ...options, backend: gpuLloyd(engine) }), weightedKMeans(data, { ...options, backend: cpuLloyd }), c.name);
      });
    }
  }
  gpu("large: 200,000 vectors of 8, k 4096, 30 iterations: GPU Lloyd equals the CPU's bit for bit", ({ engine }) => {
    // Under compute-sanitizer the CPU half of this test is what takes the time; the small cases cover the same kernels.
    if (process.env["LMPACK_SANITIZER"] === "1") return;
    const data = makeData({ name: "large", count: 200_000, dim: 8, k: 4096, grid: 0 }, 77);
    const options = { k: 4096, init: "random" as const, seed: 1, maxIterations: 30, tolerance: 0 };
    const started = performance.now();
    const onGpu = weightedKMeans(data, { ...options, backend: gpuLloyd(engine) });
    const gpuMs = performance.now() - started;
    const onCpu = weightedKMeans(data, options);
    console.log(`  GPU ${gpuMs.toFixed(0)} ms, CPU ${(performance.now() - started - gpuMs).toFixed(0)} ms`);
    assertSameRun(onGpu, onCpu, "large");
  });
  gpu("VPTQ quantization (v8 k256 + residual 16, outliers, partial vectors): the same tensor with GPU k-means and searches", ({ engine }) => {
    const rng = mulberry32(21);
    const [rows, columns] = [203, 160];
    const weight = Float32Array.from({ length: rows * columns }, () => Math.fround(0.02 * gaussian(rng)));
    const x = Float64Array.from({ length: 400 * columns }, () => gaussian(rng));
    const h = new Float64Array(columns * columns);
    for (let t = 0; t < 400; t++) for (let i = 0; i < columns; i++) for (let j = 0; j < columns; j++) h[i * columns + j]! += (x[t * columns + i]! * x[t * columns + j]!) / 400;
    const hessian: Hessian = { size: columns, data: h };
    const options = { vectorLen: 8, numCentroids: 256, numResCentroids: 16, outlierPercent: 5, kmeansIterations: 20 };
    const search = gpuCodebookSearch(engine);
    try {
      const onGpu = quantizeVptq(weight, rows, columns, hessian, { ...options, kmeansBackend: gpuLloyd(engine), codebookSearch: search });
      const onCpu = quantizeVptq(weight, rows, columns, hessian, options);
      for (const key of ["centroids", "resCentroids", "mainIndices", "resIndices", "outlierCentroids", "outlierIndices", "perm", "weightScale", "weightBias"] as const) {
        assert.equal(onGpu.tensor[key], onCpu.tensor[key], key);
      }
      assert.is(onGpu.hessianLoss, onCpu.hessianLoss);
    } finally {
      search.release();
    }
  });
}
gpu.run();
