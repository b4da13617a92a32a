import { KernelError } from "../../formats/errors.js";
import { cpuLloyd, lloydConverged, OBJECTIVE_CHUNK, reseedEmpty, type InitData, type KMeansBackend, type KMeansOptions } from "../../formats/vptq/kmeans.js";
import type { DevicePointer } from "../cuda/driver.js";
import type { GpuEngine } from "../engine.js";
import { KM_MAX_DIM, KM_THREADS, NearestSearcher } from "./nearest.js";
import { gpuKMeansPlusPlus } from "./plus-plus-gpu.js";
import { kMeansPlusPlus } from "../../formats/vptq/kmeans-init.js";

/**
 * Lloyd's iterations on the GPU (kernels/kmeans/kmeans.cu) with the CPU loop's semantics bit for
 * bit (formats/vptq/kmeans.ts cpuLloyd): the same labels, centroids, objectives, stopping
 * iteration and re-seeds. Per iteration:
 *  1. assignment: the first one searches every vector; later ones search only the vectors whose
 *     distance bounds cannot prove they keep their label (km_bound_check, Hamerly-style with the
 *     MOVER_CENTROIDS farthest-moving centroids measured directly, as assign.ts does);
 *  2. the objective, in kmeans.ts's chunked order, summed here from the chunks' partials;
 *  3. the mean update: cluster sizes, a stable radix sort of the vectors by label, and one
 *     thread per (cluster, coordinate) summing its members in vector order;
 *  4. empty clusters, when there are any, re-seeded here by kmeans.ts's own reseedEmpty.
 * The vectors, labels, distances and bounds stay on the device; per iteration only the todo
 * count, the chunk partials, the cluster sizes and the centroid moves come back.
 */

/**
 * Centroids measured directly by the bound check. assign.ts measures 16; here each costs a
 * vector one distance against a search's k, and with k = 65,536 the moves have a long tail: the
 * 1025th largest move, which every other bound must absorb, is far below the 17th.
 */
const MOVER_CENTROIDS = 1024;
/** Vectors (labels) per radix-sort tile, one block each: kmeans.cu's KM_RADIX_TILE_VECTORS (256 threads × 8 rounds). */
const RADIX_TILE_VECTORS = 2048;

export function gpuLloyd(engine: GpuEngine): KMeansBackend {
  return {
    description: engine.describe(),
    // k-means++ seeding on the GPU too (plus-plus-gpu.ts), the CPU's centres bit for bit.
    plusPlus: (set, k, random) => (set.dim > KM_MAX_DIM ? kMeansPlusPlus(set, k, random) : gpuKMeansPlusPlus(engine, set, k, random)),
    lloyd(set, centroids, options) {
      if (set.dim > KM_MAX_DIM) return cpuLloyd.lloyd(set, centroids, options);
      const run = new LloydRun(engine, set, options.k);
      try {
        return run.iterate(centroids, options);
      } finally {
        run.release();
      }
    },
  };
}

class LloydRun {
  private readonly allocated: DevicePointer[] = [];
  private readonly module;
  private readonly searcher: NearestSearcher;
  private readonly vectors: DevicePointer;
  private readonly weights: DevicePointer;
  private readonly centroids: DevicePointer;
  private readonly before: DevicePointer;
  private readonly labels: DevicePointer;
  private readonly dist2: DevicePointer;
  private readonly lower: DevicePointer;
  private readonly todo: DevicePointer;
  private readonly todoLength: DevicePointer;
  private readonly chunkSums: DevicePointer;
  private readonly counts: DevicePointer;
  private readonly offsets: DevicePointer;
  private readonly keys: [DevicePointer, DevicePointer];
  private readonly values: [DevicePointer, DevicePointer];
  private readonly histogram: DevicePointer;
  private readonly moves: DevicePointer;
  private readonly movers: DevicePointer;
  private readonly chunks: number;
  private readonly tiles: number;

  constructor(private readonly engine: GpuEngine, private readonly set: InitData, private readonly k: number) {
    const { count, dim } = set;
    if (count >= 2 ** 31) throw new KernelError("LAUNCH_REFUSED", "k-means on the GPU: more than 2³¹ − 1 vectors", { actual: count });
    const context = engine.context;
    this.module = engine.module("kmeans");
    this.searcher = new NearestSearcher(context, this.module);
    const alloc = (bytes: number): DevicePointer => {
      const pointer = context.alloc(bytes);
      this.allocated.push(pointer);
      return pointer;
    };
    try {
      this.vectors = this.upload(set.vectors);
      this.weights = this.upload(set.weights);
      this.centroids = alloc(k * dim * 8);
      this.before = alloc(k * dim * 8);
      this.labels = alloc(count * 4);
      this.dist2 = alloc(count * 8);
      this.lower = alloc(count * 8);
      this.todo = alloc(count * 4);
      this.todoLength = alloc(4);
      this.chunks = Math.ceil(count / OBJECTIVE_CHUNK);
      this.chunkSums = alloc(this.chunks * 8);
      this.counts = alloc(k * 4);
      this.offsets = alloc(k * 4);
      this.keys = [alloc(count * 4), alloc(count * 4)];
      this.values = [alloc(count * 4), alloc(count * 4)];
      this.tiles = Math.ceil(count / RADIX_TILE_VECTORS);
      this.histogram = alloc(256 * this.tiles * 4);
      this.moves = alloc(k * 8);
      this.movers = alloc(MOVER_CENTROIDS * 4);
    } catch (error) {
      // An allocation failed part-way (out of device memory): free what was already taken.
      this.release();
      throw error;
    }
  }

  iterate(centroids: Float64Array, options: KMeansOptions) {
    const { count } = this.set;
    const context = this.engine.context;
    context.uploadInto(this.centroids, bytes(centroids));
    const objectives: number[] = [];
    let converged = false;
    let reseeded = 0;
    let bounds = { movers: 0, largestOther: 0 };
    for (let iteration = 0; iteration < options.maxIterations; iteration++) {
      const searched = iteration === 0 ? this.searchAll() : this.searchUnproven(bounds);
      const objective = this.objective();
      objectives.push(objective);
      options.onIteration?.(iteration, objective, searched);
      if (lloydConverged(objectives, options.tolerance)) {
        converged = true;
        break;
      }
      if (iteration === options.maxIterations - 1) break;
      context.copy(this.before, this.centroids, this.k * this.set.dim * 8);
      const sizes = this.updateMeans();
      if (sizes.includes(0)) reseeded += this.reseed(sizes);
      bounds = this.measureMoves();
    }
    const labels = new Int32Array(count);
    context.download(this.labels, bytes(labels));
    context.download(this.centroids, bytes(centroids));
    return { labels, objectives, converged, reseeded };
  }

  release(): void {
    this.searcher.release();
    for (const pointer of this.allocated) this.engine.context.free(pointer);
    this.allocated.length = 0;
  }

  private upload(array: Float64Array): DevicePointer {
    const pointer = this.engine.context.upload(bytes(array));
    this.allocated.push(pointer);
    return pointer;
  }

  private request() {
    const { count, dim, partialFrom, partialDims } = this.set;
    return { vectors: this.vectors, count, dim, partialFrom, partialDims, centroids: this.centroids, k: this.k, labels: this.labels, distancesSquared: this.dist2, lower: this.lower };
  }

  private searchAll(): number {
    this.searcher.search(this.request());
    return this.set.count;
  }

  /** The bound check, then a search of the vectors it could not clear; returns how many those were. */
  private searchUnproven(bounds: { movers: number; largestOther: number }): number {
    const { count, dim, partialFrom, partialDims } = this.set;
    const context = this.engine.context;
    context.zero(this.todoLength, 4);
    this.module.launch(`km_bound_check_d${dim}`, { grid: [Math.ceil(count / KM_THREADS)], block: [KM_THREADS] }, [
      { pointer: this.vectors }, { i64: count }, { i64: partialFrom }, { i32: partialDims }, { pointer: this.centroids },
      { pointer: this.movers }, { i32: bounds.movers }, { f64: bounds.largestOther },
      { pointer: this.labels }, { pointer: this.dist2 }, { pointer: this.lower }, { pointer: this.todo }, { pointer: this.todoLength },
    ]);
    const length = new Uint32Array(1);
    context.download(this.todoLength, bytes(length));
    if (length[0]! > 0) this.searcher.search({ ...this.request(), todo: { list: this.todo, lengthOnDevice: this.todoLength, length: length[0]! } });
    return length[0]!;
  }

  private objective(): number {
    const context = this.engine.context;
    this.module.launch("km_objective_chunks", { grid: [Math.ceil(this.chunks / KM_THREADS)], block: [KM_THREADS] }, [
      { pointer: this.weights }, { pointer: this.dist2 }, { i64: this.set.count }, { pointer: this.chunkSums },
    ]);
    const partials = new Float64Array(this.chunks);
    context.download(this.chunkSums, bytes(partials));
    let total = 0;
    for (const partial of partials) total += partial;
    return total;
  }

  /** Means of the current labels into the device centroids; returns the cluster sizes. */
  private updateMeans(): Uint32Array {
    const { count, dim, partialFrom, partialDims } = this.set;
    const { k } = this;
    const context = this.engine.context;
    context.zero(this.counts, k * 4);
    this.module.launch("km_count", { grid: [Math.ceil(count / KM_THREADS)], block: [KM_THREADS] }, [{ pointer: this.labels }, { i64: count }, { pointer: this.counts }]);
    const sizes = new Uint32Array(k);
    context.download(this.counts, bytes(sizes));
    const offsets = new Uint32Array(k);
    for (let j = 1; j < k; j++) offsets[j] = offsets[j - 1]! + sizes[j - 1]!;
    context.uploadInto(this.offsets, bytes(offsets));
    const members = this.sortByLabel();
    this.module.launch("km_means", { grid: [Math.ceil((k * dim) / KM_THREADS)], block: [KM_THREADS] }, [
      { pointer: this.vectors }, { pointer: this.weights }, { i32: dim }, { i64: partialFrom }, { i32: partialDims },
      { pointer: members }, { pointer: this.offsets }, { pointer: this.counts }, { i32: k }, { pointer: this.centroids },
    ]);
    return sizes;
  }

  /** Stable LSD radix sort of the vector indices by label, 8 bits a pass; returns the sorted indices. */
  private sortByLabel(): DevicePointer {
    const { count } = this.set;
    const passes = Math.max(1, Math.ceil(Math.log2(Math.max(2, this.k)) / 8));
    let keysIn = this.labels;
    let valuesIn: DevicePointer = 0n;
    for (let pass = 0; pass < passes; pass++) {
      const out = pass % 2;
      this.module.launch("km_radix_histogram", { grid: [this.tiles], block: [256] }, [{ pointer: keysIn }, { i64: count }, { i32: 8 * pass }, { pointer: this.histogram }, { i64: this.tiles }]);
      this.module.launch("km_scan_exclusive", { grid: [1], block: [1024] }, [{ pointer: this.histogram }, { i64: 256 * this.tiles }]);
      this.module.launch("km_radix_scatter", { grid: [this.tiles], block: [256] }, [
        { pointer: keysIn }, { pointer: valuesIn }, { pointer: this.keys[out]! }, { pointer: this.values[out]! },
        { i64: count }, { i32: 8 * pass }, { pointer: this.histogram }, { i64: this.tiles },
      ]);
      keysIn = this.keys[out]!;
      valuesIn = this.values[out]!;
    }
    return valuesIn;
  }

  /**
   * kmeans.ts's reseedEmpty on the host copies of the labels, distances and centroids. The moved
   * vectors lose their distance bound, so their next assignment is a full search.
   */
  private reseed(sizes: Uint32Array): number {
    const { count, dim } = this.set;
    const context = this.engine.context;
    const labels = new Int32Array(count);
    const distances = new Float64Array(count);
    const centroids = new Float64Array(this.k * dim);
    context.download(this.labels, bytes(labels));
    context.download(this.dist2, bytes(distances));
    context.download(this.centroids, bytes(centroids));
    const before = labels.slice();
    const taken = reseedEmpty(this.set, this.k, labels, distances, Int32Array.from(sizes), centroids);
    if (taken === 0) return 0;
    const lower = new Float64Array(count);
    context.download(this.lower, bytes(lower));
    for (let i = 0; i < count; i++) if (labels[i] !== before[i]) lower[i] = -Infinity;
    context.uploadInto(this.lower, bytes(lower));
    context.uploadInto(this.labels, bytes(labels));
    context.uploadInto(this.centroids, bytes(centroids));
    return taken;
  }

  /** The MOVER_CENTROIDS farthest-moving centroids (to the device) and the largest move of the rest. */
  private measureMoves(): { movers: number; largestOther: number } {
    const { k } = this;
    const context = this.engine.context;
    this.module.launch("km_moves", { grid: [Math.ceil(k / KM_THREADS)], block: [KM_THREADS] }, [
      { pointer: this.before }, { pointer: this.centroids }, { i32: k }, { i32: this.set.dim }, { pointer: this.moves },
    ]);
    const moves = new Float64Array(k);
    context.download(this.moves, bytes(moves));
    // The largest move of the centroids not measured: the (MOVER_CENTROIDS+1)-th largest, or 0.
    const largestOther = k > MOVER_CENTROIDS ? moves.slice().sort()[k - MOVER_CENTROIDS - 1]! : 0;
    const movers = new Int32Array(Math.min(k, MOVER_CENTROIDS));
    let count = 0;
    for (let j = 0; j < k && count < movers.length; j++) if (moves[j]! > largestOther) movers[count++] = j;
    context.uploadInto(this.movers, bytes(movers.subarray(0, count)));
    return { movers: count, largestOther };
  }
}

function bytes(array: Float64Array | Int32Array | Uint32Array): Uint8Array {
  return new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
}
