import { columnCodebooks, writeColumnIndices, type Codebook, type ColumnBooks } from "../../formats/vptq/codebook.js";
import type { VptqResidentLoop } from "../../formats/vptq/resident.js";
import { vectorRows, type VptqTensor } from "../../formats/vptq/types.js";
import type { CudaContext, DevicePointer } from "../cuda/driver.js";
import type { CudaModule } from "../cuda/module.js";
import { launchChecks, type DeviceArray } from "../cuda/launch-checks.js";
import type { GpuEngine } from "../engine.js";
import { KM_MAX_DIM, KM_THREADS, NearestSearcher } from "../kmeans/nearest.js";
import { launchTakeVptqColumn } from "./launch.js";
import { checkResidentLoop, runResidentLoop, type DeviceColumnQuantizer, type DeviceColumnStep } from "./resident-loop.js";

/**
 * VPTQ's column quantizer on the device (formats/vptq/codebook.ts vectorColumns), for the
 * resident loop: per column, the exact nearest-centroid search (kernels/kmeans/nearest.ts) reads
 * the column's vectors straight from the device weight, then with a residual codebook the
 * residual queries and their search, then the take (second-order.cu so_take_vptq_column). Labels
 * stay on the device, [K][stride] int32, until the loop ends; then they are scattered into the
 * tensor's index arrays exactly as vectorColumns writes them.
 *
 * Launches per column: 2 (main search: km_nearest_partial_d<vl> + km_nearest_reduce), +3 with a
 * residual codebook (km_residual_queries + its search), +1 take; the loop adds the propagation.
 *
 * The search kernel loads all vl coordinates of the partial last vector (it ignores those past the
 * real rows): inside the weight that reads the next column, harmlessly; for the last column it
 * would read past the weight, so that column alone is first copied into a padded scratch.
 */

const { refuse, checkExtent } = launchChecks("vptq columns");

/** The device VPTQ loop: the resident loop with vptqDeviceColumns. */
export function gpuVptqLoop(engine: GpuEngine): VptqResidentLoop {
  return {
    get description() {
      return engine.describe();
    },
    accepts: (params) => params.vectorLen <= KM_MAX_DIM && (params.outlierSize === 0 || params.outlierVectorLen <= KM_MAX_DIM),
    run(weightT, u, rows, size, books, tensor, options) {
      // Every refusal before the first device call.
      checkResidentLoop(weightT, u, rows, size, options.blockSize);
      checkLayout(rows, size, books, tensor);
      return runResidentLoop(engine, weightT, u, rows, size, vptqDeviceColumns(engine, tensor, books), options);
    },
  };
}

/** The device column quantizer of `tensor`'s layout (what begin() uploads: every codebook of `books`). */
export function vptqDeviceColumns(engine: GpuEngine, tensor: VptqTensor, books: ColumnBooks): DeviceColumnQuantizer {
  const p = tensor.params;
  const rows = tensor.outFeatures;
  const size = tensor.inFeatures;
  // A column has at most this many vectors, whichever codebook (and vector length) it uses.
  const stride = Math.max(vectorRows(rows, p.vectorLen), p.outlierSize > 0 ? vectorRows(rows, p.outlierVectorLen) : 0);
  const maxVectorLen = Math.max(p.vectorLen, p.outlierSize > 0 ? p.outlierVectorLen : 0);
  const hasResidual = books.residual !== undefined;
  const taken: DevicePointer[] = [];
  const alloc = (elements: number, elementBytes: number): DeviceArray => {
    const pointer = engine.context.alloc(elements * elementBytes);
    taken.push(pointer);
    return { pointer, elements };
  };
  let state: { context: CudaContext; kmeans: CudaModule; searcher: NearestSearcher; values: Map<Codebook, DeviceArray>; main: DeviceArray; res: DeviceArray | undefined; dist2: DeviceArray; queries: DeviceArray | undefined; padded: DeviceArray } | undefined;
  const at = (a: DeviceArray, offset: number): DevicePointer => a.pointer + BigInt(offset * 4);
  return {
    begin(weight, loopRows, loopSize) {
      if (loopRows !== rows || loopSize !== size || weight.elements !== rows * size) throw refuse("begin", "the loop's weight is not the tensor's shape", [rows, size], [loopRows, loopSize, weight.elements]);
      const context = engine.context;
      const kmeans = engine.module("kmeans");
      const values = new Map<Codebook, DeviceArray>();
      for (const book of [books.outlier, ...books.main, ...(books.residual ?? [])]) {
        if (book === undefined || values.has(book)) continue;
        const array = alloc(book.values.length, 8);
        context.uploadInto(array.pointer, new Uint8Array(book.values.buffer, book.values.byteOffset, book.values.byteLength));
        values.set(book, array);
      }
      const searcher = new NearestSearcher(context, kmeans);
      state = { context, kmeans, searcher, values, main: alloc(size * stride, 4), res: hasResidual ? alloc(size * stride, 4) : undefined, dist2: alloc(stride, 8), queries: hasResidual ? alloc(stride * maxVectorLen, 8) : undefined, padded: alloc(stride * maxVectorLen, 8) };
      // The padding is never compared; zeroed so that nothing uninitialised is ever loaded.
      context.zero(state.padded.pointer, state.padded.elements * 8);
    },
    quantizeColumn(c: number, step: DeviceColumnStep) {
      if (state === undefined) throw refuse("quantizeColumn", "called before begin", "begin() first", c);
      const context = state.context;
      const { book, residual } = columnCodebooks(p, books, c);
      const vl = book.vectorLen;
      const count = vectorRows(rows, vl);
      const lastActive = rows - (count - 1) * vl;
      const partialFrom = lastActive < vl ? count - 1 : count;
      let vectors: DeviceArray = { pointer: step.weight.pointer + BigInt(c * rows * 8), elements: step.weight.elements - c * rows };
      if (vectors.elements < count * vl) {
        checkExtent("padded copy", "weight", step.weight, rows, c * rows);
        context.copy(state.padded.pointer, vectors.pointer, rows * 8);
        vectors = state.padded;
      }
      checkExtent("search", "vectors", vectors, count * vl);
      checkExtent("search", "labels", state.main, count, c * stride);
      const mainValues = state.values.get(book)!;
      state.searcher.search({ vectors: vectors.pointer, count, dim: vl, partialFrom, partialDims: lastActive, centroids: mainValues.pointer, k: book.k, labels: at(state.main, c * stride), distancesSquared: state.dist2.pointer });
      let res: { values: DeviceArray; k: number; labels: DeviceArray } | undefined;
      if (residual !== undefined && state.res !== undefined && state.queries !== undefined) {
        const kernel = "km_residual_queries";
        checkExtent(kernel, "queries", vectors, count * vl);
        checkExtent(kernel, "centroids", mainValues, book.k * vl);
        checkExtent(kernel, "residual queries", state.queries, count * vl);
        state.kmeans.launch(kernel, { grid: [Math.ceil((count * vl) / KM_THREADS)], block: [KM_THREADS] }, [
          { pointer: vectors.pointer }, { i64: count }, { i32: vl }, { i64: partialFrom }, { i32: lastActive }, { pointer: mainValues.pointer }, { pointer: at(state.main, c * stride) }, { pointer: state.queries.pointer },
        ]);
        checkExtent(kernel, "residual labels", state.res, count, c * stride);
        const resValues = state.values.get(residual)!;
        state.searcher.search({ vectors: state.queries.pointer, count, dim: vl, partialFrom, partialDims: lastActive, centroids: resValues.pointer, k: residual.k, labels: at(state.res, c * stride), distancesSquared: state.dist2.pointer });
        res = { values: resValues, k: residual.k, labels: { pointer: at(state.res, c * stride), elements: count } };
      }
      launchTakeVptqColumn(engine, {
        weight: step.weight, columnOffset: c * rows, rows, vectorLen: vl,
        main: { values: mainValues, k: book.k, labels: { pointer: at(state.main, c * stride), elements: count } }, residual: res,
        dtype: tensor.dtype, diagonal: step.diagonal, errors: step.errors, errorsOffset: step.errorsOffset, status: step.status,
      });
    },
    finish() {
      if (state === undefined) throw refuse("finish", "called before begin", "begin() first", undefined);
      const context = state.context;
      const main = new Int32Array(size * stride);
      context.download(state.main.pointer, new Uint8Array(main.buffer));
      const res = state.res === undefined ? undefined : new Int32Array(size * stride);
      if (res !== undefined && state.res !== undefined) context.download(state.res.pointer, new Uint8Array(res.buffer));
      scatterLabels(tensor, books, main, res, stride);
    },
    end() {
      const searcher = state?.searcher;
      state = undefined;
      try {
        searcher?.release();
      } finally {
        for (const pointer of taken.splice(0)) engine.context.free(pointer);
      }
    },
  };
}

/** vectorColumns' index writes (codebook.ts writeColumnIndices), for every column at once from the [K][stride] labels. */
function scatterLabels(tensor: VptqTensor, books: ColumnBooks, main: Int32Array, res: Int32Array | undefined, stride: number): void {
  const rows = tensor.outFeatures;
  for (let c = 0; c < tensor.inFeatures; c++) {
    const cb = columnCodebooks(tensor.params, books, c);
    const count = vectorRows(rows, cb.book.vectorLen);
    for (let r = 0; r < count; r++) writeColumnIndices(tensor, cb, c, r, main[c * stride + r]!, cb.residual !== undefined && res !== undefined ? res[c * stride + r]! : undefined);
  }
}

/** Everything the launches' extents follow from, before any device work: refusals name what is wrong. */
function checkLayout(rows: number, size: number, books: ColumnBooks, tensor: VptqTensor): void {
  const what = "resident loop";
  const p = tensor.params;
  const fail = (detail: string, expected: unknown, actual: unknown): never => {
    throw refuse(what, detail, expected, actual);
  };
  if (tensor.outFeatures !== rows || tensor.inFeatures !== size) fail("the tensor's shape is not the loop's", [rows, size], [tensor.outFeatures, tensor.inFeatures]);
  if (!(p.groupNum >= 1 && p.groupSize >= 1 && p.outlierSize >= 0 && p.outlierSize + p.groupNum * p.groupSize === size)) fail("the column partition does not cover the columns", size, [p.outlierSize, p.groupNum, p.groupSize]);
  if (tensor.dtype !== "F16" && tensor.dtype !== "BF16") fail("unknown dtype", ["F16", "BF16"], tensor.dtype);
  const checkBook = (book: Codebook | undefined, role: string, vectorLen: number) => {
    if (book === undefined) return fail(`no ${role} codebook`, "a codebook", undefined);
    if (book.vectorLen !== vectorLen) fail(`the ${role} codebook's vector length is not the layout's`, vectorLen, book.vectorLen);
    if (!(Number.isInteger(vectorLen) && vectorLen >= 1 && vectorLen <= KM_MAX_DIM)) fail(`no search kernel for ${role} vectors of this length`, `1 … ${KM_MAX_DIM}`, vectorLen);
    if (!(Number.isInteger(book.k) && book.k >= 1 && book.k <= 65536)) fail(`the ${role} codebook size is out of range`, "1 … 65536", book.k);
    if (book.values.length !== book.k * vectorLen) fail(`the ${role} codebook has the wrong number of values`, book.k * vectorLen, book.values.length);
  };
  if (books.main.length !== p.groupNum) fail("one main codebook per group", p.groupNum, books.main.length);
  for (const book of books.main) checkBook(book, "main", p.vectorLen);
  if (books.residual !== undefined) {
    if (books.residual.length !== p.groupNum) fail("one residual codebook per group", p.groupNum, books.residual.length);
    for (const book of books.residual) checkBook(book, "residual", p.vectorLen);
  }
  const indices = p.groupNum * vectorRows(rows, p.vectorLen) * p.groupSize;
  if (tensor.mainIndices.length !== indices) fail("mainIndices has the wrong length", indices, tensor.mainIndices.length);
  if (books.residual !== undefined && tensor.resIndices?.length !== indices) fail("resIndices has the wrong length", indices, tensor.resIndices?.length);
  if (p.outlierSize > 0) {
    checkBook(books.outlier, "outlier", p.outlierVectorLen);
    const outlierIndices = vectorRows(rows, p.outlierVectorLen) * p.outlierSize;
    if (tensor.outlierIndices?.length !== outlierIndices) fail("outlierIndices has the wrong length", outlierIndices, tensor.outlierIndices?.length);
  }
}
