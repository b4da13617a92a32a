import * as assert from "uvu/assert";
import { kMeansPlusPlus, type InitData } from "../../formats/vptq/kmeans-init.js";
import { mulberry32 as initStream } from "../../formats/random.js";
import { gpuKMeansPlusPlus } from "../../kernels/kmeans/plus-plus-gpu.js";
import { expectCode } from "../helpers/gpu-assert.js";
import { gaussian, mulberry32 } from "../helpers/prng.js";
import { gpuSuite } from "../helpers/gpu-suite.js";

/**
 * k-means++ seeding on the GPU (kernels/kmeans/plus-plus.cuh) against the CPU's pruned
 * kMeansPlusPlus (formats/vptq/kmeans-init.ts): the same centres, bit for bit, for the same
 * seed: on grids full of duplicates and ties, with zero weights, partial vectors, k = count (the
 * fallback draws), and tree sizes below, at and above one update block (256 leaves).
 */

interface Case {
  name: string;
  count: number;
  dim: number;
  k: number;
  /** Coordinates on a grid of this step (ties, duplicates); 0: continuous. */
  grid: number;
  /** Share of vectors with weight 0. */
  zeroWeights: number;
  partial?: { from: number; dims: number };
}

const CASES: Case[] = [
  { name: "one vector", count: 1, dim: 4, k: 1, grid: 0, zeroWeights: 0 },
  { name: "5 vectors (a tree below one block)", count: 5, dim: 2, k: 3, grid: 0, zeroWeights: 0 },
  { name: "256 vectors (one block exactly)", count: 256, dim: 4, k: 32, grid: 0.5, zeroWeights: 0.1 },
  { name: "300 duplicates-heavy vectors, k = count (fallback draws)", count: 300, dim: 4, k: 300, grid: 1, zeroWeights: 0.2 },
  { name: "all weights zero", count: 40, dim: 3, k: 10, grid: 0, zeroWeights: 1 },
  { name: "2,000 vectors on a coarse grid", count: 2000, dim: 4, k: 64, grid: 0.25, zeroWeights: 0.05 },
  { name: "1,500 vectors, the last 100 with 3 of 8 coordinates", count: 1500, dim: 8, k: 100, grid: 0, zeroWeights: 0.05, partial: { from: 1400, dims: 3 } },
  { name: "50,000 vectors of 8, k 1024", count: 50_000, dim: 8, k: 1024, grid: 0, zeroWeights: 0 },
];

function makeData(c: Case, seed: number): InitData {
  const rng = mulberry32(seed);
  const vectors = new Float64Array(c.count * c.dim);
  for (let i = 0; i < vectors.length; i++) {
    const x = gaussian(rng);
    vectors[i] = c.grid > 0 ? Math.round(x / c.grid) * c.grid : x;
  }
  const partialFrom = c.partial?.from ?? c.count;
  const partialDims = c.partial?.dims ?? c.dim;
  for (let i = partialFrom; i < c.count; i++) for (let d = partialDims; d < c.dim; d++) vectors[i * c.dim + d] = 0;
  const weights = Float64Array.from({ length: c.count }, () => (rng() < c.zeroWeights ? 0 : 0.1 + rng()));
  return { vectors, count: c.count, dim: c.dim, weights, partialFrom, partialDims };
}

const { gpu, available } = await gpuSuite("k-means++ seeding on the GPU");
if (available) {
  for (const c of CASES) {
    gpu(`${c.name}: the CPU's centres bit for bit`, ({ engine }) => {
      const data = makeData(c, 17 + c.k);
      let started = performance.now();
      const cpu = kMeansPlusPlus(data, c.k, initStream(9));
      const cpuMs = performance.now() - started;
      started = performance.now();
      const gpuCentres = gpuKMeansPlusPlus(engine, data, c.k, initStream(9));
      const gpuMs = performance.now() - started;
      assert.is(gpuCentres.length, cpu.length);
      const differing = cpu.reduce((n, x, i) => n + (Object.is(x, gpuCentres[i]) ? 0 : 1), 0);
      assert.is(differing, 0, `${differing} of ${cpu.length} coordinates differ`);
      if (c.count >= 50_000) console.log(`  ${c.name}: CPU ${cpuMs.toFixed(0)} ms, GPU ${gpuMs.toFixed(0)} ms`);
    });
  }
  gpu("shapes the kernels would trust are refused before a launch", ({ engine }) => {
    const data = makeData(CASES[5]!, 3);
    const random = initStream(1);
    expectCode(() => gpuKMeansPlusPlus(engine, data, 0, random), "LAUNCH_REFUSED", "k 0");
    expectCode(() => gpuKMeansPlusPlus(engine, data, data.count + 1, random), "LAUNCH_REFUSED", "k past the count");
    expectCode(() => gpuKMeansPlusPlus(engine, { ...data, dim: 17, vectors: new Float64Array(17 * data.count) }, 4, random), "LAUNCH_REFUSED", "dim 17");
    expectCode(() => gpuKMeansPlusPlus(engine, { ...data, weights: data.weights.subarray(1) }, 4, random), "LAUNCH_REFUSED", "short weights");
    expectCode(() => gpuKMeansPlusPlus(engine, { ...data, partialFrom: data.count + 1 }, 4, random), "LAUNCH_REFUSED", "partial past the end");
    expectCode(() => gpuKMeansPlusPlus(engine, { ...data, partialDims: 5 }, 4, random), "LAUNCH_REFUSED", "partial dims past dim");
  });
}
gpu.run();
