import { suite } from "uvu";
import * as assert from "uvu/assert";
import type { Hessian } from "../../formats/second-order/index.js";
import { cpuCodebookSearch, type Codebook } from "../../formats/vptq/codebook.js";
import { buildKdTree, nearestPoint, nearestPoints } from "../../formats/vptq/kd-tree.js";
import { cpuLloyd, lloydConverged, objectiveSum, reseedEmpty, weightedKMeans, type InitData, type KMeansBackend, type KMeansData, type KMeansInit } from "../../formats/vptq/kmeans.js";
import { quantizeVptq } from "../../formats/vptq/quantize.js";
import { GpuEngine, gpuAvailable } from "../../kernels/engine.js";
import type { DevicePointer } from "../../kernels/cuda/driver.js";
import { gpuLloyd } from "../../kernels/kmeans/lloyd-gpu.js";
import { NearestSearcher } from "../../kernels/kmeans/nearest.js";
import { gpuCodebookSearch } from "../../kernels/kmeans/search-gpu.js";
import { gaussian, mulberry32, type Rng } from "../helpers/prng.js";

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

/**
 * Nearest-centroid searches aimed at the float32 filter of kernels/kmeans/nearest-filter.cuh:
 * cases where float32 cannot tell centroids apart (ties, last-bit differences, cancellation, mixed
 * magnitudes) or must not be used at all (huge, non-finite coordinates).
 */
interface SearchCase {
  name: string;
  dim: number;
  k: number;
  count: number;
  /** The last `partialCount` vectors have only `partialDims` real coordinates. */
  partialDims?: number;
  partialCount?: number;
  build(rng: Rng, c: SearchCase): { vectors: Float64Array; centroids: Float64Array };
}

const normal = (rng: Rng, n: number, scale: number): Float64Array => Float64Array.from({ length: n }, () => scale * gaussian(rng));
/** The float64 next to x towards +∞ (up) or −∞. */
function nextFloat(x: number, up: boolean): number {
  const bits = new BigInt64Array(Float64Array.of(x === 0 ? 0 : x).buffer);
  bits[0] = x === 0 ? 1n : bits[0]! + ((x > 0) === up ? 1n : -1n);
  const next = new Float64Array(bits.buffer)[0]!;
  return x === 0 && !up ? -next : next;
}
/** Each vector near centroid `pick` (a random one), moved by `jitter` relative to it. */
function near(rng: Rng, centroids: Float64Array, dim: number, count: number, jitter: (v: number) => number): Float64Array {
  const vectors = new Float64Array(count * dim);
  for (let i = 0; i < count; i++) {
    const j = Math.floor(rng() * (centroids.length / dim));
    for (let d = 0; d < dim; d++) vectors[i * dim + d] = jitter(centroids[j * dim + d]!);
  }
  return vectors;
}

const SEARCH_CASES: SearchCase[] = [
  { name: "continuous", dim: 8, k: 2048, count: 1500, build: (rng, c) => ({ vectors: normal(rng, c.count * 8, 0.05), centroids: normal(rng, c.k * 8, 0.05) }) },
  {
    name: "duplicate centroids and grid vectors (exact ties)", dim: 8, k: 1024, count: 1000,
    build: (rng, c) => {
      const distinct = Float64Array.from({ length: 64 * 8 }, () => Math.round(4 * gaussian(rng)) / 4);
      const centroids = new Float64Array(c.k * 8);
      for (let j = 0; j < c.k; j++) {
        const b = Math.floor(rng() * 64);
        centroids.set(distinct.subarray(b * 8, b * 8 + 8), j * 8);
      }
      return { vectors: Float64Array.from({ length: c.count * 8 }, () => Math.round(8 * gaussian(rng)) / 8), centroids };
    },
  },
  {
    name: "centroid pairs one ulp apart, vectors at their midpoints (last-bit near ties)", dim: 4, k: 512, count: 800,
    build: (rng, c) => {
      const centroids = normal(rng, c.k * 4, 1);
      for (let j = 1; j < c.k; j += 2) for (let d = 0; d < 4; d++) centroids[j * 4 + d] = nextFloat(centroids[(j - 1) * 4 + d]!, d % 2 === 1);
      const vectors = new Float64Array(c.count * 4);
      for (let i = 0; i < c.count; i++) {
        const j = 2 * Math.floor(rng() * (c.k / 2));
        for (let d = 0; d < 4; d++) vectors[i * 4 + d] = 0.5 * (centroids[j * 4 + d]! + centroids[j * 4 + 4 + d]!) + (i % 3 === 0 ? 1e-16 * gaussian(rng) : 0);
      }
      return { vectors, centroids };
    },
  },
  {
    name: "vectors almost equal to a centroid (cancellation)", dim: 8, k: 1024, count: 800,
    build: (rng, c) => {
      const centroids = normal(rng, c.k * 8, 3);
      return { vectors: near(rng, centroids, 8, c.count, (v) => v * (1 + (rng() < 0.5 ? 1e-15 : 1e-9) * gaussian(rng))), centroids };
    },
  },
  {
    name: "coordinates from 1e-6 to 1e3, mixed within vectors and between them", dim: 6, k: 1024, count: 800,
    build: (rng, c) => {
      const scaled = (n: number, perRow: boolean): Float64Array => {
        const out = new Float64Array(n * 6);
        for (let i = 0; i < n; i++) for (let d = 0, s = 10 ** (9 * rng() - 6); d < 6; d++) out[i * 6 + d] = gaussian(rng) * (perRow ? s : 10 ** (9 * rng() - 6));
        return out;
      };
      return { vectors: scaled(c.count, c.count % 2 === 0), centroids: scaled(c.k, false) };
    },
  },
  {
    name: "huge (> 2^60), infinite, NaN and subnormal coordinates (the exact path)", dim: 8, k: 1024, count: 600,
    build: (rng, c) => {
      const centroids = normal(rng, c.k * 8, 1);
      const vectors = normal(rng, c.count * 8, 1);
      for (let j = 0; j < c.k; j += 97) centroids[j * 8 + (j % 8)] = 2 ** 61;
      Object.assign(centroids, { [5 * 8 + 1]: Infinity, [9 * 8 + 2]: NaN, [11 * 8]: -(2 ** 70), [13 * 8 + 3]: 1e-310, [17 * 8 + 4]: 1e-40 });
      for (let i = 0; i < c.count; i += 37) vectors[i * 8 + (i % 8)] = 2 ** 62;
      Object.assign(vectors, { [3 * 8]: NaN, [4 * 8 + 1]: -Infinity, [6 * 8 + 2]: 1e-320, [7 * 8 + 5]: 3e-39, [8 * 8 + 7]: 2 ** 60 });
      return { vectors, centroids };
    },
  },
  {
    name: "partial last vectors (3 of 8 coordinates; huge values past them are never distances)", dim: 8, k: 1024, count: 1000, partialDims: 3, partialCount: 50,
    build: (rng, c) => {
      const vectors = normal(rng, c.count * 8, 1);
      for (let i = c.count - 50; i < c.count; i++) vectors.fill(1e300, i * 8 + 3, i * 8 + 8);
      return { vectors, centroids: normal(rng, c.k * 8, 1) };
    },
  },
  { name: "a partial last tile", dim: 2, k: 777, count: 700, build: (rng, c) => ({ vectors: normal(rng, c.count * 2, 1), centroids: normal(rng, c.k * 2, 1) }) },
  { name: "the largest dimension", dim: 16, k: 1000, count: 600, build: (rng, c) => ({ vectors: normal(rng, c.count * 16, 1), centroids: normal(rng, c.k * 16, 1) }) },
  { name: "one coordinate", dim: 1, k: 600, count: 600, build: (rng, c) => ({ vectors: normal(rng, c.count, 1), centroids: normal(rng, c.k, 1) }) },
  { name: "4096 centroids: two slices merged", dim: 8, k: 4096, count: 700, build: (rng, c) => ({ vectors: normal(rng, c.count * 8, 1), centroids: normal(rng, c.k * 8, 1) }) },
];

/** The contract's squared distance (kmeans.ts): Σ (x − c)² in coordinate order, one rounding per operation. */
function distance2(vectors: Float64Array, i: number, centroids: Float64Array, j: number, dim: number, active: number): number {
  let sum = 0;
  for (let d = 0; d < active; d++) sum += (vectors[i * dim + d]! - centroids[j * dim + d]!) ** 2;
  return sum;
}

/** One search on the GPU through NearestSearcher, every output downloaded; unlisted vectors keep −7 / 0.5 / 0.25. */
function gpuSearch(engine: GpuEngine, c: SearchCase, data: { vectors: Float64Array; centroids: Float64Array }, kernel: "filtered" | "float64", todo?: Int32Array) {
  const { context } = engine;
  const searcher = new NearestSearcher(context, engine.module("kmeans"));
  const taken: DevicePointer[] = [];
  const upload = (a: Float64Array | Int32Array | Uint32Array): DevicePointer => {
    taken.push(context.upload(new Uint8Array(a.buffer, a.byteOffset, a.byteLength)));
    return taken[taken.length - 1]!;
  };
  const out = { labels: new Int32Array(c.count).fill(-7), dist2: new Float64Array(c.count).fill(0.5), lower: new Float64Array(c.count).fill(0.25) };
  try {
    const [labels, distancesSquared, lower] = [upload(out.labels), upload(out.dist2), upload(out.lower)];
    const list = todo === undefined ? undefined : { list: upload(todo), lengthOnDevice: upload(Uint32Array.of(todo.length)), length: todo.length };
    searcher.search({
      vectors: upload(data.vectors), count: c.count, dim: c.dim, partialFrom: c.count - (c.partialCount ?? 0), partialDims: c.partialDims ?? c.dim,
      centroids: upload(data.centroids), k: c.k, labels, distancesSquared, lower, kernel, ...(list === undefined ? {} : { todo: list }),
    });
    for (const [pointer, array] of [[labels, out.labels], [distancesSquared, out.dist2], [lower, out.lower]] as const) context.download(pointer, new Uint8Array(array.buffer));
  } finally {
    searcher.release();
    for (const pointer of taken) context.free(pointer);
  }
  return out;
}

/** Labels and distances bit for bit against the CPU's arg-min (ties to the lower index); lower ≤ the distance to every other centroid. */
function assertSearch(c: SearchCase, data: { vectors: Float64Array; centroids: Float64Array }, got: ReturnType<typeof gpuSearch>, listed: Iterable<number>, what: string): void {
  const partialFrom = c.count - (c.partialCount ?? 0);
  const bits = new BigUint64Array(got.dist2.buffer);
  for (const i of listed) {
    const active = i < partialFrom ? c.dim : c.partialDims!;
    const d64 = Float64Array.from({ length: c.k }, (_, j) => distance2(data.vectors, i, data.centroids, j, c.dim, active));
    // From +∞ with a strict <: a NaN distance never wins, and with no number at all centroid 0 at +∞ stays.
    let [label, best] = [0, Infinity];
    for (let j = 0; j < c.k; j++) if (d64[j]! < best) [label, best] = [j, d64[j]!];
    assert.is(got.labels[i], label, `${what}: vector ${i}: label`);
    assert.is(bits[i], new BigUint64Array(Float64Array.of(best).buffer)[0], `${what}: vector ${i}: squared distance ${got.dist2[i]} vs ${best}`);
    const other = d64.findIndex((d, j) => j !== label && got.lower[i]! > Math.sqrt(d));
    assert.is(other, -1, `${what}: vector ${i}: lower bound ${got.lower[i]} above the distance to centroid ${other} (${Math.sqrt(d64[other]!)})`);
  }
}

const probe = await gpuAvailable();
const gpu = suite("k-means and codebook searches on the GPU", {} as { engine: GpuEngine });
if (!probe.ok) {
  gpu("GPU tests skipped", () => console.log(`  skipped: no GPU (${probe.reason})`));
} else {
  gpu.before(async (context) => {
    context.engine = await GpuEngine.open();
  });
  for (const c of SEARCH_CASES) {
    gpu(`nearest search, ${c.name} (dim ${c.dim}, k ${c.k}): filtered and float64 kernels equal the CPU bit for bit, lower bounds hold`, ({ engine }) => {
      const data = c.build(mulberry32(c.k + c.dim), c);
      const all = Array.from({ length: c.count }, (_, i) => i);
      for (const kernel of ["filtered", "float64"] as const) assertSearch(c, data, gpuSearch(engine, c, data, kernel), all, `${c.name}, ${kernel}`);
    });
  }
  gpu("nearest search over a todo list (every third vector, reversed): only those are written, bit for bit", ({ engine }) => {
    const c = SEARCH_CASES[0]!;
    const data = c.build(mulberry32(99), c);
    const todo = Int32Array.from({ length: Math.ceil(c.count / 3) }, (_, t) => c.count - 1 - 3 * t);
    for (const kernel of ["filtered", "float64"] as const) {
      const got = gpuSearch(engine, c, data, kernel, todo);
      assertSearch(c, data, got, todo, `todo, ${kernel}`);
      const listed = new Set(todo);
      const touched = got.labels.findIndex((l, i) => !listed.has(i) && (l !== -7 || got.dist2[i] !== 0.5 || got.lower[i] !== 0.25));
      assert.is(touched, -1, `todo, ${kernel}: unlisted vector ${touched} written`);
    }
  });
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
  gpu.after(({ engine }) => engine.close());
}
gpu.run();
