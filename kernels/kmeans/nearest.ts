import { KernelError } from "../../formats/errors.js";
import type { CudaContext, DevicePointer } from "../cuda/driver.js";
import type { CudaModule } from "../cuda/module.js";

/**
 * The exact nearest-centroid search of kernels/kmeans/kmeans.cu, shared by Lloyd's assignment
 * (lloyd-gpu.ts) and VPTQ's column searches (search-gpu.ts, second-order/vptq-columns-gpu.ts):
 * the centroids split into slices across blocks when the vectors alone would leave the GPU idle,
 * the slices merged in order (km_nearest_reduce) so ties keep the lower index. Two kernels give
 * the same labels and distances bit for bit:
 *  - km_nearest_filtered_d<dim> (nearest-filter.cuh): KM_FILTER_VECTORS vectors a thread, a
 *    float32 filter, float64 only for the centroids that could win. Its cost is the filter's
 *    (dim FMAs a pair) plus, per vector and slice, a few dozen float64 measurements (the running
 *    two smallest): it pays off with many centroids per slice and enough vectors to fill the GPU
 *    without cutting the centroids into short slices;
 *  - km_nearest_partial_d<dim>: a thread per vector, every distance in float64; small codebooks
 *    (the residual ones), short lists of vectors (one column), and `exact` requests.
 */

/** KM_THREADS and KM_TILE in kmeans.cu. */
export const KM_THREADS = 128;
const KM_TILE = 128;
/** Dimensions with a compiled kernel (km_nearest_partial_d1 … d16). */
export const KM_MAX_DIM = 16;
/** Blocks per multiprocessor a search aims for: enough to hide the memory latency of the tiles. */
const BLOCKS_PER_SM = 8;
/** KM_FILTER_VECTORS in nearest-filter.cuh: vectors per thread of the filtered search. */
const KM_FILTER_VECTORS = 4;
/**
 * Fewest centroids the filtered search takes. A vector looks closer (float64 and bookkeeping) at
 * about 2/j of the j-th centroid of a slice, and a warp of 128 vectors pays whenever one of them
 * does: at most of the first ~100 centroids, at about a third of the first 512, at about 1 % of
 * 65,536. Estimated crossover with the all-float64 kernel: ~400 centroids, so k = 256 residual
 * codebooks stay on km_nearest_partial (a guess to check on the GPU with `kernel`).
 */
export const FILTER_MIN_CENTROIDS = 512;
/** Fewest tiles in a slice of the filtered search: every slice starts its float64 measurements anew. */
const FILTER_MIN_SLICE_TILES = 16;
/** Blocks a multiprocessor holds of the filtered search: 4 up to dim 8 (128 registers), 2–3 above (KM_FILTER_MIN_BLOCKS). */
const FILTER_BLOCKS_PER_SM = 3;

export interface NearestRequest {
  /** [count][dim] float64. */
  vectors: DevicePointer;
  count: number;
  dim: number;
  /** Vectors from here on have only partialDims real coordinates. */
  partialFrom: number;
  partialDims: number;
  /** [k][dim] float64. */
  centroids: DevicePointer;
  k: number;
  /** Search only todo[0 … todoCount) (device int32 list, with its length on the device and known here). */
  todo?: { list: DevicePointer; lengthOnDevice: DevicePointer; length: number };
  labels: DevicePointer;
  distancesSquared: DevicePointer;
  /**
   * Lower bound on the distance to every other centroid, when wanted: the second nearest's, or
   * (filtered search) a bound below it by about the float32 error; only ever a bound.
   */
  lower?: DevicePointer;
  /**
   * Which kernel, whatever the sizes (both give the same answer; for comparisons and tests):
   * "float64" (km_nearest_partial) or "filtered" (km_nearest_filtered). Absent: plan() picks.
   */
  kernel?: "float64" | "filtered";
}

/** One search's kernel and grid: rowBlocks × slices blocks, slices of sliceLength centroids. */
interface NearestPlan {
  kernel: string;
  rowBlocks: number;
  sliceLength: number;
  slices: number;
}

/** Scratch for the slices' partial results, grown as needed and kept between searches. */
export class NearestSearcher {
  private scratch: { best: DevicePointer; index: DevicePointer; second: DevicePointer; entries: number } | undefined;

  constructor(private readonly context: CudaContext, private readonly module: CudaModule) {}

  search(r: NearestRequest): void {
    if (!Number.isInteger(r.dim) || r.dim < 1 || r.dim > KM_MAX_DIM) throw new KernelError("LAUNCH_REFUSED", `nearest-centroid search: dimension ${r.dim} has no kernel`, { expected: `1 … ${KM_MAX_DIM}`, actual: r.dim });
    if (r.k < 1 || r.k > 2 ** 31 - 1 || r.partialDims < 1 || r.partialDims > r.dim) throw new KernelError("LAUNCH_REFUSED", "nearest-centroid search: bad centroid count or partial dimension", { actual: [r.k, r.partialDims] });
    const n = r.todo?.length ?? r.count;
    if (n === 0) return;
    if (!Number.isSafeInteger(n) || n > r.count || r.count > 2 ** 31 - 1) throw new KernelError("LAUNCH_REFUSED", "nearest-centroid search: bad vector count", { expected: `todo length ≤ count ≤ ${2 ** 31 - 1}`, actual: [n, r.count] });
    const { kernel, rowBlocks, slices, sliceLength } = this.plan(r, n);
    const scratch = this.ensure(n * slices);
    const todo = r.todo === undefined ? [{ pointer: 0n }, { pointer: 0n }] : [{ pointer: r.todo.list }, { pointer: r.todo.lengthOnDevice }];
    this.module.launch(kernel, { grid: [rowBlocks, slices], block: [KM_THREADS] }, [
      { pointer: r.vectors }, { i64: r.count }, { i64: r.partialFrom }, { i32: r.partialDims },
      { pointer: r.centroids }, { i32: r.k }, { i32: sliceLength }, ...todo,
      { pointer: scratch.best }, { pointer: scratch.index }, { pointer: scratch.second },
    ]);
    this.module.launch("km_nearest_reduce", { grid: [Math.ceil(n / KM_THREADS)], block: [KM_THREADS] }, [
      { i64: r.count }, ...todo, { i32: slices },
      { pointer: scratch.best }, { pointer: scratch.index }, { pointer: scratch.second },
      { pointer: r.labels }, { pointer: r.distancesSquared }, { pointer: r.lower ?? 0n },
    ]);
  }

  /**
   * The filtered kernel where it fills the GPU with slices of at least FILTER_MIN_SLICE_TILES
   * tiles, else the float64 one (or the one the request names). Either way the slices are whole tiles, as many as it takes to
   * reach its blocks-per-multiprocessor target, and never empty.
   */
  private plan(r: NearestRequest, n: number): NearestPlan {
    const tiles = Math.ceil(r.k / KM_TILE);
    const multiprocessors = this.context.info.multiprocessors;
    const slicing = (vectorsPerBlock: number, maxSlices: number, blocksPerSm: number) => {
      const rowBlocks = Math.ceil(n / vectorsPerBlock);
      const wanted = Math.min(maxSlices, Math.max(1, Math.ceil((blocksPerSm * multiprocessors) / rowBlocks)));
      const sliceLength = Math.ceil(tiles / wanted) * KM_TILE;
      return { rowBlocks, sliceLength, slices: Math.ceil(r.k / sliceLength) };
    };
    if (r.kernel !== "float64" && (r.kernel === "filtered" || r.k >= FILTER_MIN_CENTROIDS)) {
      const filtered = slicing(KM_THREADS * KM_FILTER_VECTORS, Math.max(1, Math.floor(tiles / FILTER_MIN_SLICE_TILES)), FILTER_BLOCKS_PER_SM);
      const fills = filtered.rowBlocks * filtered.slices >= FILTER_BLOCKS_PER_SM * multiprocessors;
      if (fills || r.kernel === "filtered") return { kernel: `km_nearest_filtered_d${r.dim}`, ...filtered };
    }
    return { kernel: `km_nearest_partial_d${r.dim}`, ...slicing(KM_THREADS, tiles, BLOCKS_PER_SM) };
  }

  release(): void {
    if (this.scratch === undefined) return;
    for (const pointer of [this.scratch.best, this.scratch.index, this.scratch.second]) this.context.free(pointer);
    this.scratch = undefined;
  }

  private ensure(entries: number): NonNullable<NearestSearcher["scratch"]> {
    if (this.scratch !== undefined && this.scratch.entries >= entries) return this.scratch;
    this.release();
    const best = this.context.alloc(entries * 8);
    let index: DevicePointer | undefined;
    try {
      index = this.context.alloc(entries * 4);
      this.scratch = { best, index, second: this.context.alloc(entries * 8), entries };
    } catch (error) {
      // A failure part-way frees what was already taken.
      this.context.free(best);
      if (index !== undefined) this.context.free(index);
      throw error;
    }
    return this.scratch;
  }
}
