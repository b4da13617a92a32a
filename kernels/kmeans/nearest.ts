import { KernelError } from "../../formats/errors.js";
import type { CudaContext, DevicePointer } from "../cuda/driver.js";
import type { CudaModule } from "../cuda/module.js";

/**
 * The exact nearest-centroid search of kernels/kmeans/kmeans.cu (km_nearest_partial_d<dim> +
 * km_nearest_reduce), shared by Lloyd's assignment (lloyd-gpu.ts) and VPTQ's column searches
 * (search-gpu.ts): a thread per vector, the centroids split into slices across blocks when the
 * vectors alone would leave the GPU idle, the slices merged in order so ties keep the lower index.
 */

/** KM_THREADS and KM_TILE in kmeans.cu. */
export const KM_THREADS = 128;
const KM_TILE = 128;
/** Dimensions with a compiled kernel (km_nearest_partial_d1 … d16). */
export const KM_MAX_DIM = 16;
/** Blocks per multiprocessor a search aims for: enough to hide the memory latency of the tiles. */
const BLOCKS_PER_SM = 8;

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
  /** Lower bound on the distance to every other centroid (the second nearest), when wanted. */
  lower?: DevicePointer;
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
    const rowBlocks = Math.ceil(n / KM_THREADS);
    const target = BLOCKS_PER_SM * this.context.info.multiprocessors;
    const tiles = Math.ceil(r.k / KM_TILE);
    const wanted = Math.min(tiles, Math.max(1, Math.ceil(target / rowBlocks)));
    const sliceLength = Math.ceil(tiles / wanted) * KM_TILE;
    const slices = Math.ceil(r.k / sliceLength);
    const scratch = this.ensure(n * slices);
    const todo = r.todo === undefined ? [{ pointer: 0n }, { pointer: 0n }] : [{ pointer: r.todo.list }, { pointer: r.todo.lengthOnDevice }];
    this.module.launch(`km_nearest_partial_d${r.dim}`, { grid: [rowBlocks, slices], block: [KM_THREADS] }, [
      { pointer: r.vectors }, { i64: r.count }, { i64: r.partialFrom }, { i32: r.partialDims },
      { pointer: r.centroids }, { i32: r.k }, { i32: sliceLength }, ...todo,
      { pointer: scratch.best }, { pointer: scratch.index }, { pointer: scratch.second },
    ]);
    this.module.launch("km_nearest_reduce", { grid: [rowBlocks], block: [KM_THREADS] }, [
      { i64: r.count }, ...todo, { i32: slices },
      { pointer: scratch.best }, { pointer: scratch.index }, { pointer: scratch.second },
      { pointer: r.labels }, { pointer: r.distancesSquared }, { pointer: r.lower ?? 0n },
    ]);
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
