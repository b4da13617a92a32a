import * as assert from "uvu/assert";
import type { GpuEngine } from "../../kernels/engine.js";
import type { DevicePointer } from "../../kernels/cuda/driver.js";
import { NearestSearcher } from "../../kernels/kmeans/nearest.js";
import { gaussian, mulberry32, type Rng } from "../helpers/prng.js";
import { gpuSuite } from "../helpers/gpu-suite.js";

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

const { gpu, available } = await gpuSuite("nearest-centroid searches on the GPU: the float32 filter and the float64 kernel");
if (available) {
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
}
gpu.run();
