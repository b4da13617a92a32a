import { cpuCodebookSearch, type Codebook, type CodebookSearch } from "../../formats/vptq/codebook.js";
import type { DevicePointer } from "../cuda/driver.js";
import type { GpuEngine } from "../engine.js";
import { KM_MAX_DIM, KM_THREADS, NearestSearcher } from "./nearest.js";

/**
 * VPTQ's per-column searches (formats/vptq/codebook.ts CodebookSearch) on the GPU: the column's
 * vectors go up, each takes its exact nearest main centroid, then, with a residual codebook, the
 * nearest residual centroid to (v − main), and the indices come back. The same arg-min and tie
 * rule as the k-d tree, so the same indices. Codebooks are uploaded once and kept until forget()
 * (the quantizer calls it when a layer is done) or release().
 *
 * A column is small (rows / vectorLen vectors) and the loop is sequential, so each call costs a
 * few launches and two transfers; the centroids are split across blocks (nearest.ts) so that
 * even 512 vectors against 65,536 centroids fill the GPU.
 */
export function gpuCodebookSearch(engine: GpuEngine): CodebookSearch & { release(): void } {
  const context = engine.context;
  const module = engine.module("kmeans");
  const searcher = new NearestSearcher(context, module);
  const books = new Map<Codebook, DevicePointer>();
  let capacity = 0;
  let buffers: { queries: DevicePointer; residuals: DevicePointer; labels: DevicePointer; resLabels: DevicePointer; dist2: DevicePointer } | undefined;
  const bookOnDevice = (book: Codebook): DevicePointer => {
    let pointer = books.get(book);
    if (pointer === undefined) {
      pointer = context.upload(new Uint8Array(book.values.buffer, book.values.byteOffset, book.values.byteLength));
      books.set(book, pointer);
    }
    return pointer;
  };
  const freeBuffers = (): void => {
    if (buffers !== undefined) for (const pointer of Object.values(buffers)) context.free(pointer);
    buffers = undefined;
    capacity = 0;
  };
  const ensure = (count: number, dim: number) => {
    if (buffers !== undefined && capacity >= count * dim) return buffers;
    freeBuffers();
    const entries = count * dim;
    // One allocation at a time, so that a failure part-way frees what was already taken.
    const taken: DevicePointer[] = [];
    const take = (bytes: number): DevicePointer => {
      const pointer = context.alloc(bytes);
      taken.push(pointer);
      return pointer;
    };
    try {
      buffers = { queries: take(entries * 8), residuals: take(entries * 8), labels: take(entries * 4), resLabels: take(entries * 4), dist2: take(entries * 8) };
    } catch (error) {
      for (const pointer of taken) context.free(pointer);
      throw error;
    }
    capacity = entries;
    return buffers;
  };
  return {
    description: engine.describe(),
    nearest(main, residual, queries, count, lastActive, mainOut, resOut) {
      const dim = main.vectorLen;
      if (dim > KM_MAX_DIM || count === 0) return cpuCodebookSearch.nearest(main, residual, queries, count, lastActive, mainOut, resOut);
      const b = ensure(count, dim);
      const partialFrom = lastActive < dim ? count - 1 : count;
      // A partial last vector ends the column early: pad it with zeros (never compared) to whole vectors.
      let whole = queries.subarray(0, count * dim);
      if (whole.length < count * dim) {
        whole = new Float64Array(count * dim);
        whole.set(queries.subarray(0, Math.min(queries.length, count * dim)));
      }
      context.uploadInto(b.queries, new Uint8Array(whole.buffer, whole.byteOffset, count * dim * 8));
      const mainBook = bookOnDevice(main);
      searcher.search({ vectors: b.queries, count, dim, partialFrom, partialDims: lastActive, centroids: mainBook, k: main.k, labels: b.labels, distancesSquared: b.dist2 });
      if (residual !== undefined && resOut !== undefined) {
        module.launch("km_residual_queries", { grid: [Math.ceil((count * dim) / KM_THREADS)], block: [KM_THREADS] }, [
          { pointer: b.queries }, { i64: count }, { i32: dim }, { i64: partialFrom }, { i32: lastActive }, { pointer: mainBook }, { pointer: b.labels }, { pointer: b.residuals },
        ]);
        searcher.search({ vectors: b.residuals, count, dim, partialFrom, partialDims: lastActive, centroids: bookOnDevice(residual), k: residual.k, labels: b.resLabels, distancesSquared: b.dist2 });
        context.download(b.resLabels, new Uint8Array(resOut.buffer, resOut.byteOffset, count * 4));
      }
      context.download(b.labels, new Uint8Array(mainOut.buffer, mainOut.byteOffset, count * 4));
    },
    forget(book) {
      const pointer = books.get(book);
      if (pointer === undefined) return;
      context.free(pointer);
      books.delete(book);
    },
    release() {
      searcher.release();
      freeBuffers();
      for (const pointer of books.values()) context.free(pointer);
      books.clear();
    },
  };
}
