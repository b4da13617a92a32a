import { FormatError } from "../errors.js";
import { runGptqLoop, type LoopView } from "../second-order/gptq-loop.js";
import type { Hessian } from "../second-order/hessian.js";
import { invertPermutation, prepareSecondOrder } from "../second-order/prepare.js";
import { concatBits, fitCodebook, vectorColumns, type Codebook, type ColumnBooks } from "./codebook.js";
import { refitCodebooks, type RefitReport } from "./codebook-refit.js";
import { checkArguments, planLayout, resolveVptqOptions, type ResolvedVptqOptions, type VptqQuantizeOptions } from "./quantize-options.js";
import { floatCodec, vectorRows, type VptqFloat, type VptqParams, type VptqTensor } from "./types.js";

export { VPTQ_QUANTIZE_DEFAULTS, type VptqKMeansWeighting, type VptqQuantizeOptions } from "./quantize-options.js";

/**
 * The VPTQ quantizer (Liu et al. 2024), after microsoft/VPTQ branch `algorithm`
 * `VPTQ.fast_vector_quant` (../shared/ref/vptq-spqr.md 1.2): per-column min-max norm, act-order,
 * Hessian-weighted k-means codebooks, then the GPTQ column loop of the shared second-order
 * engine in which every vector of a column takes its nearest centroid; optionally a residual
 * codebook fitted to pass 1's errors and a second loop with main + residual.
 *
 * Departures from the reference, all so that quantization sees what the decoder computes:
 *  - codebooks, scale and bias are rounded to the output dtype before use (the reference picks
 *    indices against fp32 centroids and rounds when packing); a residual reconstruction is
 *    h(main + res), the decoder's 16-bit add;
 *  - the last vector of a column, when out % vectorLen ≠ 0, is compared over its real rows
 *    only, in k-means and in assignment (the reference zero-pads it; the decoder drops padding);
 *  - k-means sample weights are diag of the damped H (the reference's basic_preprocess diag,
 *    up to its uniform scale), but 0 for dead columns, whose inputs are always 0;
 *  - k-means is our own (kmeans.ts), k-means++ by default; "random" is cuML's init, not its stream.
 * And two that lower the layer's output error (and docs-llama-16m's perplexity, bench/RESULTS.md):
 *  - with the norm, the loop, act-order, damping and k-means see D·H·D, the Hessian of the
 *    normalised weight (normHessian); the reference uses H, as if every column's scale were 1;
 *  - after the loop the codebooks are refitted by least squares to the whole H (codebook-refit.ts),
 *    and by default the loop is run once more with them and they are refitted again.
 */

export interface VptqCodebookReport {
  role: "main" | "residual" | "outlier";
  group: number;
  /** Vectors the codebook was fitted to. */
  vectors: number;
  /** Weighted k-means objective after each assignment step (normalised weight space). */
  objectives: number[];
  converged: boolean;
  reseeded: number;
}

export interface VptqQuantizeResult {
  tensor: VptqTensor;
  /**
   * The final loop's Σ ((w − q)/U[c,c])² less the refit's reduction: tr(ΔQ·H'·ΔQᵀ) in the
   * normalised space, H' the damped D·H·D (H with normHessian false); NaN without refinement.
   */
  hessianLoss: number;
  /** Columns with diag H = 0 (original numbering). */
  deadColumns: number[];
  /** The amount added to diag H. */
  damp: number;
  codebooks: VptqCodebookReport[];
  /** The last round of the least-squares codebook refit (codebook-refit.ts) and how many rounds ran, when it ran. */
  refit?: RefitReport & { rounds: number };
}

/** Quantizes a row-major [outFeatures][inFeatures] weight with VPTQ against the input Hessian H. */
export function quantizeVptq(weight: Float32Array, outFeatures: number, inFeatures: number, hessian: Hessian, options: VptqQuantizeOptions = {}): VptqQuantizeResult {
  const o = resolveVptqOptions(options);
  const rows = outFeatures;
  const params = planLayout(outFeatures, inFeatures, o);
  checkArguments(weight, rows, inFeatures, hessian, o);
  const norm = o.enableNorm ? columnNorm(weight, rows, inFeatures, o) : undefined;
  const columnScale = norm !== undefined && o.normHessian ? norm.scale : undefined;
  const refit = o.refine && (o.refitCodebooks === "auto" ? params.numResCentroids === 0 : o.refitCodebooks);
  const prepared = prepareSecondOrder(weight, rows, hessian, { percDamp: o.percDamp, actOrder: o.enablePerm, keepHessian: refit, ...(columnScale === undefined ? {} : { columnScale }), ...(o.layerName === undefined ? {} : { layerName: o.layerName }), ...(o.factorize === undefined ? {} : { factorize: o.factorize }) });
  const { weightT, u, perm } = prepared;
  const position = perm === undefined ? undefined : invertPermutation(perm);
  const dead = new Uint8Array(inFeatures);
  for (const c of prepared.deadColumns) dead[position === undefined ? c : position[c]!] = 1;
  const sampleWeights = new Float64Array(inFeatures);
  for (let i = 0; i < inFeatures; i++) {
    const j = perm === undefined ? i : perm[i]!;
    if (norm !== undefined) for (let r = 0; r < rows; r++) weightT[i * rows + r] = (weightT[i * rows + r]! - norm.bias[j]!) / norm.scale[j]!;
    // Dead columns quantize to Q = 0 (the reference zeroes them after the norm).
    if (dead[i] === 1) weightT.fill(0, i * rows, (i + 1) * rows);
    const scaleSquared = columnScale === undefined ? 1 : columnScale[j]! ** 2;
    sampleWeights[i] = o.kmeansWeighting === "uniform" ? 1 : dead[i] === 1 ? 0 : scaleSquared * hessian.data[j * inFeatures + j]! + prepared.damp;
  }
  const codebooks: VptqCodebookReport[] = [];
  const fit = (sourceT: Float64Array, role: VptqCodebookReport["role"], group: number, from: number, to: number, k: number): Codebook => {
    const vectorLen = role === "outlier" ? params.outlierVectorLen : params.vectorLen;
    // One stream per codebook, so that adding a group or a residual leaves the others as they were.
    const streamId = role === "outlier" ? 0 : role === "main" ? 1 + group : 1 + params.groupNum + group;
    const seed = (o.seed + Math.imul(0x9e3779b9, streamId)) >>> 0;
    const fitted = fitCodebook({ sourceT, rows, from, to, vectorLen, columnWeights: sampleWeights }, { k, init: o.kmeansInit, seed, maxIterations: o.kmeansIterations, tolerance: o.kmeansTolerance, dtype: o.dtype, layerName: o.layerName, ...(o.kmeansBackend === undefined ? {} : { backend: o.kmeansBackend }) });
    codebooks.push({ role, group, vectors: fitted.vectors, objectives: fitted.kmeans.objectives, converged: fitted.kmeans.converged, reseeded: fitted.kmeans.reseeded });
    return fitted.codebook;
  };
  const { groupNum, groupSize, outlierSize } = params;
  const groupColumns = (g: number): [number, number] => [outlierSize + g * groupSize, outlierSize + (g + 1) * groupSize];
  const books: ColumnBooks = {
    outlier: outlierSize > 0 ? fit(weightT, "outlier", 0, 0, outlierSize, params.outlierNumCentroids) : undefined,
    main: Array.from({ length: groupNum }, (_, g) => fit(weightT, "main", g, ...groupColumns(g), params.numCentroids)),
    residual: undefined,
  };
  const tensor = emptyTensor(params, rows, inFeatures, o.dtype, perm, norm, books);
  const residual = params.numResCentroids > 0;
  const pristine = residual || refit ? weightT.slice() : undefined;
  try {
    let pass = runPass(weightT, u, rows, inFeatures, tensor, books, o, residual);
    if (residual && pristine !== undefined) {
      // The reference clusters qerror = w − q: each column's error as it was quantized, before
      // the 1/U[c,c] scaling that drives propagation. Then everything is redone from the start.
      const errorsT = pass.errorsT!;
      books.residual = Array.from({ length: groupNum }, (_, g) => fit(errorsT, "residual", g, ...groupColumns(g), params.numResCentroids));
      tensor.resCentroids = concatBits(books.residual);
      tensor.resIndices = new Uint32Array(tensor.mainIndices.length);
      // The refit still needs the starting weight after this pass.
      pass = runPass(refit ? pristine.slice() : pristine, u, rows, inFeatures, tensor, books, o, false);
    }
    let hessianLoss = pass.hessianLoss;
    let refitReport: RefitReport | undefined;
    let rounds = 0;
    for (let round = 0; refit && pristine !== undefined && prepared.h !== undefined && round < o.refitRounds; round++) {
      if (round > 0) {
        // The loop again from the start, its searches against the refitted codebooks (new indices).
        if (refitReport?.kept !== true) break;
        for (const book of [...books.main, ...(books.residual ?? [])]) o.codebookSearch?.forget?.(book);
        pass = runPass(pristine.slice(), u, rows, inFeatures, tensor, books, o, false);
        hessianLoss = pass.hessianLoss;
      }
      const outlierValuesT = params.outlierSize > 0 ? pass.quantizedT.slice(0, params.outlierSize * rows) : undefined;
      refitReport = refitCodebooks({ targetT: pristine, h: prepared.h, rows, size: inFeatures, tensor, books, outlierValuesT });
      hessianLoss -= refitReport.reduction;
      rounds++;
    }
    return { tensor, hessianLoss, deadColumns: prepared.deadColumns, damp: prepared.damp, codebooks, ...(refitReport === undefined ? {} : { refit: { ...refitReport, rounds } }) };
  } finally {
    // The next layer's codebooks are new objects: the search's copies of these would only pile up.
    for (const book of [books.outlier, ...books.main, ...(books.residual ?? [])]) if (book !== undefined) o.codebookSearch?.forget?.(book);
  }
}

interface ColumnNorm {
  /** Decoded 16-bit values, by original column. */
  scale: Float64Array;
  bias: Float64Array;
  scaleBits: Uint16Array;
  biasBits: Uint16Array;
}

/** bias = min, scale = max − min per original column (1 where that is 0 in the dtype), as 16-bit floats. */
function columnNorm(weight: Float32Array, rows: number, inFeatures: number, o: ResolvedVptqOptions): ColumnNorm {
  const min = new Float64Array(inFeatures).fill(Infinity);
  const max = new Float64Array(inFeatures).fill(-Infinity);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < inFeatures; j++) {
      const w = weight[r * inFeatures + j]!;
      if (w < min[j]!) min[j] = w;
      if (w > max[j]!) max[j] = w;
    }
  }
  const { round, value } = floatCodec(o.dtype);
  const scaleBits = new Uint16Array(inFeatures);
  const biasBits = new Uint16Array(inFeatures);
  const scale = new Float64Array(inFeatures);
  const bias = new Float64Array(inFeatures);
  for (let j = 0; j < inFeatures; j++) {
    biasBits[j] = round(min[j]!);
    scaleBits[j] = round(max[j]! - min[j]!);
    // A constant column (or a range below the dtype's smallest value) would divide by 0.
    if (value(scaleBits[j]!) === 0) scaleBits[j] = round(1);
    scale[j] = value(scaleBits[j]!);
    bias[j] = value(biasBits[j]!);
    if (!Number.isFinite(scale[j]!) || !Number.isFinite(bias[j]!)) {
      throw new FormatError("PACKED_VALUE_INVALID", `column ${j}'s range overflows ${o.dtype}`, { ...(o.layerName === undefined ? {} : { tensor: o.layerName }), actual: [min[j], max[j]] });
    }
  }
  return { scale, bias, scaleBits, biasBits };
}

function emptyTensor(params: VptqParams, rows: number, inFeatures: number, dtype: VptqFloat, perm: Int32Array | undefined, norm: ColumnNorm | undefined, books: ColumnBooks): VptqTensor {
  return {
    params,
    outFeatures: rows,
    inFeatures,
    dtype,
    centroids: concatBits(books.main),
    resCentroids: undefined,
    mainIndices: new Uint32Array(params.groupNum * vectorRows(rows, params.vectorLen) * params.groupSize),
    resIndices: undefined,
    outlierCentroids: books.outlier?.bits,
    outlierIndices: params.outlierSize > 0 ? new Uint16Array(vectorRows(rows, params.outlierVectorLen) * params.outlierSize) : undefined,
    perm: params.enablePerm ? Uint16Array.from(perm ?? []) : undefined,
    weightScale: norm?.scaleBits,
    weightBias: norm?.biasBits,
  };
}

interface PassResult {
  hessianLoss: number;
  /** The pass's weightT, now holding the quantized (decoded, normalised) values. */
  quantizedT: Float64Array;
  /** [K][rows] w − q of every column at the moment it was quantized, when asked for. */
  errorsT: Float64Array | undefined;
}

/**
 * One VPTQ pass over weightT (updated in place to the quantized values) that writes the tensor's
 * indices: the GPTQ loop (on the device when a resident loop takes the layout), or, without
 * refinement, each column on its own. errorsT is the reference's qerror.
 */
function runPass(weightT: Float64Array, u: Float64Array, rows: number, size: number, tensor: VptqTensor, books: ColumnBooks, o: ResolvedVptqOptions, keepErrors: boolean): PassResult {
  if (o.refine) {
    const resident = o.residentLoop?.accepts(tensor.params) === true ? o.residentLoop : undefined;
    const loop = resident !== undefined
      ? resident.run(weightT, u, rows, size, books, tensor, { blockSize: o.blockSize, keepScaledErrors: keepErrors })
      : runGptqLoop(weightT, u, rows, size, vectorColumns(tensor, books, o.codebookSearch), { blockSize: o.blockSize, keepScaledErrors: keepErrors, ...(o.deferred === undefined ? {} : { deferred: o.deferred }) });
    const errorsT = loop.scaledErrorsT;
    if (errorsT !== undefined) for (let c = 0; c < size; c++) for (let r = 0, d = u[c * size + c]!; r < rows; r++) errorsT[c * rows + r]! *= d;
    return { hessianLoss: loop.hessianLoss, quantizedT: weightT, errorsT };
  }
  const quantizer = vectorColumns(tensor, books, o.codebookSearch);
  const errorsT = keepErrors ? new Float64Array(rows * size) : undefined;
  const quantized = new Float64Array(rows);
  const view: LoopView = { weightT, u, rows, size };
  for (let c = 0; c < size; c++) {
    const current = weightT.subarray(c * rows, (c + 1) * rows);
    quantizer.quantizeColumn(c, current, quantized, view);
    for (let r = 0; r < rows; r++) if (errorsT !== undefined) errorsT[c * rows + r] = current[r]! - quantized[r]!;
    current.set(quantized);
  }
  return { hessianLoss: NaN, quantizedT: weightT, errorsT };
}
