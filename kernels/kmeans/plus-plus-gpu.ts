import { KernelError } from "../../formats/errors.js";
import type { InitData } from "../../formats/vptq/kmeans-init.js";
import type { DevicePointer } from "../cuda/driver.js";
import type { GpuEngine } from "../engine.js";
import { KM_MAX_DIM } from "./nearest.js";

/**
 * Weighted k-means++ on the GPU (kernels/kmeans/plus-plus.cuh): the centres of
 * formats/vptq/kmeans-init.ts kMeansPlusPlus for the same random stream, bit for bit. The CPU
 * prunes with the triangle inequality and still walks its clusters one centre at a time on one
 * core (about 0.4 s per docs-llama-16m layer at k = 256, minutes at k = 65,536); here each new
 * centre is measured against every vector at once, and the sampler's sum tree is rebuilt on the
 * device, so the k draws make 2k launches and no transfer until the centroids come back.
 *
 * The random stream is read up front: the CPU draws exactly one value per centre (a fallback
 * draw takes none), so the k values are the same.
 */

/** plus-plus.cuh KM_PP_SPAN: leaves per km_pp_update block. */
const SPAN = 256;
/** plus-plus.cuh KM_PP_TOP_THREADS. */
const TOP_THREADS = 1024;

export function gpuKMeansPlusPlus(engine: GpuEngine, data: InitData, k: number, random: () => number): Float64Array {
  const { count, dim, vectors, weights, partialFrom, partialDims } = data;
  const refuse = (detail: string, expected: unknown, actual: unknown) => new KernelError("LAUNCH_REFUSED", `k-means++ on the GPU: ${detail}`, { expected, actual });
  if (!(Number.isSafeInteger(count) && count >= 1 && count < 2 ** 31)) throw refuse("the vector count must be 1 … 2³¹ − 1", "1 … 2³¹ − 1", count);
  if (!(Number.isSafeInteger(dim) && dim >= 1 && dim <= KM_MAX_DIM)) throw refuse(`the dimension must be 1 … ${KM_MAX_DIM}`, `1 … ${KM_MAX_DIM}`, dim);
  if (!(Number.isSafeInteger(k) && k >= 1 && k <= count)) throw refuse("k must be 1 … the vector count", `1 … ${count}`, k);
  if (vectors.length !== count * dim || weights.length !== count) throw refuse("the vectors are not count × dim with one weight each", count * dim, vectors.length);
  if (!(Number.isSafeInteger(partialFrom) && partialFrom >= 0 && partialFrom <= count)) throw refuse("the first partial vector lies outside the vectors", `0 … ${count}`, partialFrom);
  if (!(Number.isSafeInteger(partialDims) && partialDims >= 0 && partialDims <= dim)) throw refuse("partial vectors must have 0 … dim real coordinates", `0 … ${dim}`, partialDims);
  let leaves = 1;
  while (leaves < count) leaves *= 2;
  const span = Math.min(SPAN, leaves);
  const bytes = 8 * (count * dim + 2 * count + 2 * leaves + k + dim + k * dim + 2);
  if (bytes > engine.context.info.totalBytes) throw refuse("the seeding's buffers exceed the device's memory", `≤ ${engine.context.info.totalBytes} bytes`, bytes);

  const randoms = Float64Array.from({ length: k }, () => random());
  const context = engine.context;
  const module = engine.module("kmeans");
  const owned: DevicePointer[] = [];
  const upload = (values: Float64Array): DevicePointer => {
    const pointer = context.upload(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
    owned.push(pointer);
    return pointer;
  };
  const alloc = (byteCount: number): DevicePointer => {
    const pointer = context.alloc(byteCount);
    owned.push(pointer);
    return pointer;
  };
  try {
    const vectorsOnDevice = upload(vectors);
    const weightsOnDevice = upload(weights);
    const nearest = upload(new Float64Array(count).fill(Infinity));
    const tree = alloc(2 * leaves * 8);
    context.zero(tree, 2 * leaves * 8);
    const randomsOnDevice = upload(randoms);
    const means = upload(partialMeans(data));
    const fallback = alloc(8);
    context.zero(fallback, 8);
    const drawn = alloc(8);
    const centroids = alloc(k * dim * 8);
    const update = (mode: 0 | 1 | 2, centre: number): void =>
      module.launch("km_pp_update", { grid: [leaves / span], block: [span], sharedBytes: span * 8 }, [
        { pointer: vectorsOnDevice }, { pointer: weightsOnDevice }, { pointer: centroids + BigInt(centre * dim * 8) },
        { pointer: nearest }, { pointer: tree }, { i64: count }, { i32: dim }, { i64: partialFrom }, { i32: partialDims }, { i64: leaves }, { i32: mode },
      ]);
    const pick = (next: number): void =>
      module.launch("km_pp_pick", { grid: [1], block: [TOP_THREADS] }, [
        { pointer: tree }, { i64: leaves / span }, { i64: leaves }, { pointer: randomsOnDevice }, { i64: next },
        { pointer: vectorsOnDevice }, { pointer: nearest }, { pointer: means }, { i64: count }, { i32: dim }, { i64: partialFrom }, { i32: partialDims },
        { pointer: fallback }, { pointer: centroids }, { pointer: drawn },
      ]);
    // Before the first centre the leaves are the weights (the CPU's sampler.set(i, w_i)).
    update(0, 0);
    pick(0);
    for (let j = 0; j + 1 < k; j++) {
      update(j === 0 ? 1 : 2, j);
      pick(j + 1);
    }
    const out = new Float64Array(k * dim);
    context.download(centroids, new Uint8Array(out.buffer));
    return out;
  } finally {
    for (const pointer of owned) context.free(pointer);
  }
}

/**
 * seedCentroid's fill for a partial vector's missing coordinates: the mean of the full vectors
 * there, summed in vector order as the CPU sums it (0 without full vectors).
 */
function partialMeans(data: InitData): Float64Array {
  const { dim, vectors, partialFrom, partialDims, count } = data;
  const means = new Float64Array(dim);
  if (partialFrom >= count || partialDims === dim) return means;
  for (let d = partialDims; d < dim; d++) {
    let sum = 0;
    for (let v = 0; v < partialFrom; v++) sum += vectors[v * dim + d]!;
    means[d] = partialFrom > 0 ? sum / partialFrom : 0;
  }
  return means;
}
