import { FormatError, UsageError } from "../errors.js";
import { runGptqLoop, type ColumnQuantizer, type DeferredUpdates } from "../second-order/gptq-loop.js";
import type { Hessian } from "../second-order/hessian.js";
import { actOrderPermutation, dampHessian, permuteHessian, scatterFromColumnMajor, toColumnMajor, type PrepareOptions } from "../second-order/prepare.js";
import { upperCholeskyOfInverse } from "../second-order/cholesky.js";
import { halfValues, roundHalf } from "./half.js";
import { codeOf, f64ToF16Bits, fitFirstOrder, groupScratch, quantizeStatistic, storeIntegerZeros, type FirstOrderFit } from "./stats.js";
import { searchStatisticCodesThreaded } from "./stats-search-pool.js";
import type { SpqrOutliers, SpqrTensor } from "./types.js";

/**
 * The SpQR quantizer (Dettmers et al. 2023), after Vahe1994/SpQR spqr_engine.py
 * `SPQRUtil.quantize` (../shared/ref/vptq-spqr.md 2.1): GPTQ over permuted columns with
 * beta2-column groups, per-row min-max grids whose scales and zeros are themselves quantized
 * over beta1-row groups, and unstructured fp16 outliers chosen by their Hessian-weighted error.
 * The column loop, Cholesky factor and permutation helpers are the shared second-order engine.
 *
 * Departures from the original: the first two so that quantization sees what the packed
 * tensor will decode to (the HF decoder computes in fp16 with fp16 second-order stats), the
 * third so that one odd row cannot spoil the shared statistics of its 16-row group, the fourth
 * for a lower error in the same format:
 *  - statistics: codes are chosen on the fp16-rounded second-order grids, and the weight grid of
 *    each row is decoded with the decoder's fp16 operations (stats.ts quantizeStatistic);
 *  - outliers (`outlierValues: "compensated"`, the default): the decoder ADDS the sparse value
 *    to the dense value at its position, whose code encodes 0 but decodes to s·(q₀ − z) ≠ 0.
 *    The original stores w and so decodes to w + s·(q₀ − z); we store fp16(w − s·(q₀ − z)) so
 *    the decoded weight is w up to fp16 rounding, and propagate that decoded weight's error.
 *    `"reference"` stores fp16(w) and keeps w exact in the loop, as spqr_engine does;
 *  - a row whose group lies far on one side of 0 (zero −min/scale outside [−maxq, 2·maxq]) has
 *    its range widened to include 0 (stats.ts fitFirstOrder); the original keeps zeros of 1e5
 *    and more, which overflow the fp16 statistics it saves;
 *  - `statsSearch` (default on): each row's 3-bit scale and zero codes are the pair within ±2 of
 *    the rounded ones whose grid gives the group's weights the least Hessian-weighted error
 *    (stats-search.ts searchStatisticCodes; a large group's rows on helper threads too,
 *    stats-search-pool.ts, with the same result), where the original rounds each statistic to
 *    its nearest code. The format is unchanged. On docs-llama-16m (sequential calibration, five draws) it
 *    took perplexity from 22.68 to 22.03 at ≤ 4.17 bits per weight (τ 0.203), and on the
 *    validation text tinystories-valid-head from 163.8 to 157.8 (bench/RESULTS.md, issue 10).
 * percDamp defaults to main.py's 0.01, not the README recipe's 1.0 (see the option).
 */

export type SpqrPermutationOrder = "act_order" | "identity";
export type SpqrOutlierValues = "compensated" | "reference";

export interface SpqrQuantizeOptions {
  /** Weight code width (SpQR wbits). Default 3; the HF layout holds 3 only. */
  bits?: number;
  /** Rows per second-order group (qq_groupsize, HF beta1). Default 16. */
  beta1?: number;
  /** Columns per first-order group (groupsize, HF beta2). Default 16. */
  beta2?: number;
  /**
   * Fraction of mean(|diag H|) added to diag H. Default 0.01, SpQR main.py's own default; its
   * README recipe passes 1.0, which on lmpack's quality bench (embedding-proxy Hessians,
   * docs-llama-16m) raised the mean output error from 0.417 % to 0.470 % (bench/RESULTS.md).
   */
  percDamp?: number;
  /** Columns per deferred GPTQ update; changes rounding only. Default 128. */
  blockSize?: number;
  /** Where the GPTQ loop's deferred updates run (the GPU: kernels/linalg/gptq-deferred.ts); host memory by default. */
  deferred?: DeferredUpdates;
  /** H's Cholesky / inverse factor (the GPU: kernels/linalg/cholesky-gpu.ts); the CPU's by default. */
  factorize?: PrepareOptions["factorize"];
  /** Column order: by decreasing diag H (stable on ties), or as given. Default "act_order". */
  permutationOrder?: SpqrPermutationOrder;
  /** τ relative to mean_c(var(W[:,c]) / U[c,c]²); Infinity disables outliers. Default 0.2. */
  outlierRelativeThreshold?: number;
  /** Skip the leave-one-out pre-pass when fitting group grids. Default false. */
  simplifiedOutliers?: boolean;
  /** Symmetric weight grids. Default false. */
  sym?: boolean;
  /** Round the weight zeros to integers. Default false. */
  roundZero?: boolean;
  /** Code widths of the quantized scales and zeros. Default 3 each; the HF layout holds 3 only. */
  qqScaleBits?: number;
  qqZeroBits?: number;
  /** What an outlier stores (see above). Default "compensated". */
  outlierValues?: SpqrOutlierValues;
  /** Choose each row's scale and zero codes within ±2 of the rounded ones for its weights' error (stats-search.ts searchStatisticCodes). Default true; false rounds them, as the original. */
  statsSearch?: boolean;
  /** Named in errors. */
  layerName?: string;
}

export const SPQR_QUANTIZE_DEFAULTS: Readonly<Required<Omit<SpqrQuantizeOptions, "layerName" | "deferred" | "factorize">>> = Object.freeze({
  bits: 3,
  beta1: 16,
  beta2: 16,
  percDamp: 0.01,
  blockSize: 128,
  permutationOrder: "act_order",
  outlierRelativeThreshold: 0.2,
  simplifiedOutliers: false,
  sym: false,
  roundZero: false,
  qqScaleBits: 3,
  qqZeroBits: 3,
  outlierValues: "compensated",
  statsSearch: true,
});

type Resolved = Required<Omit<SpqrQuantizeOptions, "layerName" | "deferred" | "factorize">> & { layerName: string | undefined; factorize: PrepareOptions["factorize"] };

export interface SpqrQuantizeResult {
  tensor: SpqrTensor;
  /** Σ ((w − ŵ)/U[c,c])² over all weights: tr(ΔW·H_damped·ΔWᵀ) in quantization order. */
  hessianLoss: number;
  outlierCount: number;
  /** τ in squared scaled-error units (Infinity when outliers are off). */
  threshold: number;
  /** Columns with diag H = 0 (original numbering), quantized as zeros. */
  deadColumns: number[];
  /** The amount added to diag H. */
  damp: number;
}

/** Quantizes a row-major [m][n] weight with SpQR against the input Hessian H (n×n). */
export function quantizeSpqr(weight: Float32Array, m: number, n: number, hessian: Hessian, options: SpqrQuantizeOptions = {}): SpqrQuantizeResult {
  const o: Resolved = { ...SPQR_QUANTIZE_DEFAULTS, ...definedOnly(options), layerName: options.layerName, factorize: options.factorize };
  checkArguments(weight, m, n, hessian, o);
  const { weightT, u, perm, deadColumns, damp } = prepareSpqr(weight, m, n, hessian, o);
  const uDiag = new Float64Array(n);
  for (let c = 0; c < n; c++) uDiag[c] = u[c * n + c]!;
  const threshold = outlierThreshold(weightT, m, n, uDiag, o.outlierRelativeThreshold);
  const tensor = emptyTensor(m, n, o, perm);
  const codesT = new Uint8Array(n * m);
  const outliers = { rows: [] as number[], cols: [] as number[], values: [] as number[] };
  const quantizer = spqrColumns(tensor, codesT, uDiag, threshold, outliers, o);
  const loop = runGptqLoop(weightT, u, m, n, quantizer, { blockSize: o.blockSize, ...(options.deferred === undefined ? {} : { deferred: options.deferred }) });
  scatterFromColumnMajor(codesT, tensor.codes, m, n);
  tensor.outliers = toCsr(outliers, m);
  return { tensor, hessianLoss: loop.hessianLoss, outlierCount: outliers.rows.length, threshold, deadColumns, damp };
}

function definedOnly(options: SpqrQuantizeOptions): Partial<SpqrQuantizeOptions> {
  return Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
}

function checkArguments(weight: Float32Array, m: number, n: number, hessian: Hessian, o: Resolved): void {
  const tensor = o.layerName === undefined ? {} : { tensor: o.layerName };
  const bad = (detail: string, actual: unknown, expected?: unknown): UsageError => new UsageError("BAD_ARGUMENT", detail, { ...tensor, actual, ...(expected === undefined ? {} : { expected }) });
  if (!Number.isSafeInteger(m) || !Number.isSafeInteger(n) || m < 1 || n < 1) throw bad("weight dimensions must be positive integers", [m, n]);
  if (weight.length !== m * n) throw bad("weight length does not match m × n", weight.length, m * n);
  for (const [name, bits] of [["bits", o.bits], ["qqScaleBits", o.qqScaleBits], ["qqZeroBits", o.qqZeroBits]] as const) {
    if (!Number.isInteger(bits) || bits < 2 || bits > 8) throw bad(`${name} must be an integer 2…8`, bits);
  }
  for (const [name, size] of [["beta1", o.beta1], ["beta2", o.beta2], ["blockSize", o.blockSize]] as const) {
    if (!Number.isSafeInteger(size) || size < 1) throw bad(`${name} must be a positive integer`, size);
  }
  if (m % o.beta1 !== 0) throw bad("out features must be a multiple of beta1 (rows per second-order group)", m, `multiple of ${o.beta1}`);
  if (n % o.beta2 !== 0) throw bad("in features must be a multiple of beta2 (columns per group)", n, `multiple of ${o.beta2}`);
  if (n > 65536) throw bad("SpQR stores the permutation and outlier columns as uint16: in features must be ≤ 65536", n);
  if (!Number.isFinite(o.percDamp) || o.percDamp < 0) throw bad("percDamp must be a finite number ≥ 0", o.percDamp);
  if (!(o.outlierRelativeThreshold >= 0)) throw bad("outlierRelativeThreshold must be ≥ 0 (Infinity: no outliers)", o.outlierRelativeThreshold);
  if (o.permutationOrder !== "act_order" && o.permutationOrder !== "identity") throw bad("unknown permutationOrder", o.permutationOrder, ["act_order", "identity"]);
  if (o.outlierValues !== "compensated" && o.outlierValues !== "reference") throw bad("unknown outlierValues", o.outlierValues, ["compensated", "reference"]);
  if (hessian.size !== n || hessian.data.length !== n * n) {
    throw new FormatError("SHAPE_SIZE_MISMATCH", "Hessian size does not match the layer's input features", { ...tensor, expected: n, actual: hessian.size });
  }
}

interface Prepared {
  weightT: Float64Array;
  u: Float64Array;
  perm: Int32Array | undefined;
  deadColumns: number[];
  damp: number;
}

/**
 * spqr_engine's order, which differs from GPTQ's (prepareSecondOrder): permute by the raw
 * diag H (dead columns, diag 0, sort last), then damp with the mean over ALL diagonal entries
 * (dead ones count as 0), then set dead H[c,c] = 1 (overwriting the damping) and W[:,c] = 0.
 */
function prepareSpqr(weight: Float32Array, m: number, n: number, hessian: Hessian, o: Resolved): Prepared {
  const raw = hessian.data;
  const perm = o.permutationOrder === "act_order" ? actOrderPermutation(raw, n) : undefined;
  const weightT = toColumnMajor(weight, m, n, perm);
  const h = perm === undefined ? raw.slice(0, n * n) : permuteHessian(raw, n, perm);
  const deadPositions: number[] = [];
  for (let c = 0; c < n; c++) if (h[c * n + c] === 0) deadPositions.push(c);
  const damp = dampHessian(h, n, o.percDamp);
  for (const c of deadPositions) {
    h[c * n + c] = 1;
    weightT.fill(0, c * m, (c + 1) * m);
  }
  const u = (o.factorize ?? upperCholeskyOfInverse)(h, n, { ...(o.layerName === undefined ? {} : { layerName: o.layerName }), ...(perm === undefined ? {} : { columnLabels: perm }) });
  const deadColumns = deadPositions.map((c) => (perm === undefined ? c : perm[c]!)).sort((a, b) => a - b);
  return { weightT, u, perm, deadColumns, damp };
}

/**
 * τ = relative · mean_c(var(W[:,c]) / U[c,c]²), var unbiased over rows (torch's default) of the
 * permuted weight with dead columns zeroed, as spqr_engine computes it after damping.
 */
function outlierThreshold(weightT: Float64Array, m: number, n: number, uDiag: Float64Array, relative: number): number {
  if (relative === Infinity) return Infinity;
  let total = 0;
  for (let c = 0; c < n; c++) {
    const column = weightT.subarray(c * m, (c + 1) * m);
    let mean = 0;
    for (let r = 0; r < m; r++) mean += column[r]!;
    mean /= m;
    let squares = 0;
    for (let r = 0; r < m; r++) squares += (column[r]! - mean) ** 2;
    total += squares / (m - 1) / uDiag[c]! ** 2;
  }
  return (relative * total) / n;
}

function emptyTensor(m: number, n: number, o: Resolved, perm: Int32Array | undefined): SpqrTensor {
  const statsPerStat = (n / o.beta2) * (m / o.beta1);
  return {
    params: { bits: o.bits, beta1: o.beta1, beta2: o.beta2 },
    outFeatures: m,
    inFeatures: n,
    perm: perm === undefined ? Uint16Array.from({ length: n }, (_, j) => j) : Uint16Array.from(perm),
    codes: new Uint8Array(m * n),
    scaleCodes: new Uint8Array((n / o.beta2) * m),
    zeroCodes: new Uint8Array((n / o.beta2) * m),
    scaleScale: new Uint16Array(statsPerStat),
    scaleZero: new Uint16Array(statsPerStat),
    zeroScale: new Uint16Array(statsPerStat),
    zeroZero: new Uint16Array(statsPerStat),
    outliers: { rowOffsets: new Int32Array(m + 1), cols: new Uint16Array(0), values: new Uint16Array(0) },
  };
}

interface OutlierList {
  rows: number[];
  cols: number[];
  values: number[];
}

/**
 * The per-column work of SPQRUtil.quantize. At each group start: fit the row grids on the
 * group's fully updated columns (leave-one-out pre-pass unless simplified), quantize their
 * scales and zeros, and decode every row's levels. Per column: round to the row's grid; a
 * weight whose scaled error² exceeds τ becomes an outlier with the dense code quantize(0).
 */
function spqrColumns(tensor: SpqrTensor, codesT: Uint8Array, uDiag: Float64Array, threshold: number, outliers: OutlierList, o: Resolved): ColumnQuantizer {
  const m = tensor.outFeatures;
  const { beta1, beta2 } = o;
  const maxq = 2 ** o.bits - 1;
  const levelCount = maxq + 1;
  const outliersOn = threshold !== Infinity;
  const fit: FirstOrderFit = {
    leaveOneOut: outliersOn && !o.simplifiedOutliers,
    threshold,
    spec: { maxq, sym: o.sym, roundZero: o.roundZero },
    looSpec: { maxq, sym: o.sym, roundZero: false },
  };
  // quant_groups applies the second-order zero quantization unless round_zero made the zeros
  // integers that already fit in the statistic's codes.
  const integerZeros = o.roundZero && o.qqZeroBits >= o.bits;
  const scratch = groupScratch(beta2);
  const rawScale = new Float64Array(m);
  const rawZero = new Float64Array(m);
  const scale = new Float64Array(m);
  const zero = new Float64Array(m);
  const levels = new Float64Array(m * levelCount);
  const half = halfValues();
  const statsPerGroup = m / beta1;
  // Shared memory: the search's helper threads read it in place (stats-search-pool.ts).
  const fitted = o.statsSearch ? new Float64Array(new SharedArrayBuffer(8 * m * beta2)) : undefined;

  function fitGroup(g: number, weightT: Float64Array): void {
    fitFirstOrder(weightT, m, g * beta2, beta2, uDiag, fit, scratch, rawScale, rawZero, fitted);
    const rows = [g * m, (g + 1) * m] as const;
    const tiles = [g * statsPerGroup, (g + 1) * statsPerGroup] as const;
    const scaleOut = { codes: tensor.scaleCodes.subarray(...rows), scaleBits: tensor.scaleScale.subarray(...tiles), zeroBits: tensor.scaleZero.subarray(...tiles), decoded: scale };
    quantizeStatistic(rawScale, beta1, o.qqScaleBits, "scales", scaleOut, o.layerName);
    const zeroOut = { codes: tensor.zeroCodes.subarray(...rows), scaleBits: tensor.zeroScale.subarray(...tiles), zeroBits: tensor.zeroZero.subarray(...tiles), decoded: zero };
    if (integerZeros) storeIntegerZeros(rawZero, o.qqZeroBits, zeroOut, o.layerName);
    else quantizeStatistic(rawZero, beta1, o.qqZeroBits, "zeros", zeroOut, o.layerName);
    if (fitted !== undefined) searchStatisticCodesThreaded(fitted, beta2, uDiag.subarray(g * beta2, (g + 1) * beta2), beta1, maxq, { scale: o.qqScaleBits, zero: o.qqZeroBits }, scaleOut, zeroOut, o.sym);
    // What the decoder makes of each code: h(s · h(q − z)).
    for (let r = 0; r < m; r++) for (let q = 0; q < levelCount; q++) levels[r * levelCount + q] = roundHalf(scale[r]! * roundHalf(q - zero[r]!));
  }

  return {
    columnsRead: (column) => (column % beta2 === 0 ? beta2 : 1),
    quantizeColumn(column, current, quantized, view): void {
      if (column % beta2 === 0) fitGroup(column / beta2, view.weightT);
      const d = uDiag[column]!;
      const codes = codesT.subarray(column * m, (column + 1) * m);
      for (let r = 0; r < m; r++) {
        const w = current[r]!;
        let code = codeOf(w, scale[r]!, zero[r]!, maxq);
        let value = levels[r * levelCount + code]!;
        const e = (w - value) / d;
        if (outliersOn && e * e > threshold) {
          code = codeOf(0, scale[r]!, zero[r]!, maxq);
          const dense = levels[r * levelCount + code]!;
          const bits = f64ToF16Bits(o.outlierValues === "compensated" ? w - dense : w);
          const stored = half[bits]!;
          if (!Number.isFinite(stored)) throw new FormatError("PACKED_VALUE_INVALID", `outlier at row ${r}, permuted column ${column} overflows fp16`, { ...(o.layerName === undefined ? {} : { tensor: o.layerName }), expected: "|value| ≤ 65504", actual: w });
          // The decoder adds in f32 and rounds once to fp16 (roundHalf does both).
          value = o.outlierValues === "compensated" ? roundHalf(dense + stored) : w;
          outliers.rows.push(r);
          outliers.cols.push(column);
          outliers.values.push(bits);
        }
        codes[r] = code;
        quantized[r] = value;
      }
    },
  };
}

/** Outliers come in column order, so a counting sort by row keeps columns ascending within each row. */
function toCsr(list: OutlierList, m: number): SpqrOutliers {
  const rowOffsets = new Int32Array(m + 1);
  for (const r of list.rows) rowOffsets[r + 1]!++;
  for (let r = 0; r < m; r++) rowOffsets[r + 1]! += rowOffsets[r]!;
  const next = rowOffsets.slice(0, m);
  const cols = new Uint16Array(list.rows.length);
  const values = new Uint16Array(list.rows.length);
  for (let i = 0; i < list.rows.length; i++) {
    const at = next[list.rows[i]!]!++;
    cols[at] = list.cols[i]!;
    values[at] = list.values[i]!;
  }
  return { rowOffsets, cols, values };
}
