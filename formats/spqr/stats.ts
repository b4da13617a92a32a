import { f64ToF16Bit } from "../dense/float-bits.js";
import { FormatError } from "../errors.js";
import { halfValues, roundHalf } from "./half.js";

/**
 * The small-grid arithmetic of SpQR (Vahe1994/SpQR quant_groups.py and get_leave_one_out_error
 * in spqr_engine.py), written allocation-free because it runs once per (row, 16-column group):
 * a min-max grid fit, round-to-code, the leave-one-out outlier pre-pass, and the second-order
 * ("bi-level") quantization of a group's per-row statistics with fp16 stats.
 */

/** A grid: value = scale · (code − zero). */
export interface Grid {
  scale: number;
  zero: number;
}

export interface GridSpec {
  /** Largest code, 2^bits − 1. */
  maxq: number;
  /** quant_groups `sym`: |min| = max around a fixed zero (maxq + 1)/2. */
  sym: boolean;
  /** quant_groups `round_zero`: round the zero to an integer. */
  roundZero: boolean;
}

/** quant_groups.quantize divides by scale.clamp_min(1e-9). */
export const MIN_SCALE = 1e-9;

/** torch.round: nearest, ties to even. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x); // ties toward +∞
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** clamp(round(x / scale + zero), 0, maxq), as quant_groups.quantize. */
export function codeOf(x: number, scale: number, zero: number, maxq: number): number {
  const q = roundHalfEven(x / Math.max(scale, MIN_SCALE) + zero);
  return q < 0 ? 0 : q > maxq ? maxq : q;
}

/**
 * Quantizer.find_params for one row: no widening to include 0, and a constant row (min = max)
 * gets the range [−1, +1] so the scale never vanishes.
 */
export function fitMinMax(xmin: number, xmax: number, spec: GridSpec, out: Grid): void {
  if (spec.sym) {
    xmax = Math.max(Math.abs(xmin), xmax);
    if (xmin < 0) xmin = -xmax;
  }
  if (xmin === xmax) {
    xmin = -1;
    xmax = 1;
  }
  out.scale = (xmax - xmin) / spec.maxq;
  const zero = spec.sym ? (spec.maxq + 1) / 2 : -xmin / out.scale;
  out.zero = spec.roundZero && !spec.sym ? roundHalfEven(zero) : zero;
}

// Scratch grids: every function here is synchronous and non-reentrant, so one set suffices.
const fullGrid: Grid = { scale: 0, zero: 0 };
const looGrid: Grid = { scale: 0, zero: 0 };

/** ((q(w) − w) / d)² on a grid. */
function scaledErrorSq(w: number, grid: Grid, maxq: number, d: number): number {
  const e = (grid.scale * (codeOf(w, grid.scale, grid.zero, maxq) - grid.zero) - w) / d;
  return e * e;
}

/**
 * get_leave_one_out_error for one row of a group: reduction[j] = baseline − loo_j, where
 * baseline = Σ_k ((q(w_k) − w_k)/d_k)² on the grid fitted to all `width` values, and loo_j is
 * the same sum over k ≠ j on the grid fitted without w_j (w_j itself costs nothing: it
 * would be kept exactly). `spec` should be the original's: the weight bits and sym, and never
 * a rounded zero (get_leave_one_out_error configures its quantizers without round_zero).
 *
 * The fit without w_j differs from the full fit only when w_j is the unique minimum or the
 * unique maximum; for every other j, loo_j = baseline − e_j, so the reduction is e_j itself.
 * That makes the pass O(width) per row instead of the original's O(width²).
 */
export function leaveOneOutReduction(values: Float64Array, uDiag: Float64Array, width: number, spec: GridSpec, reduction: Float64Array): void {
  let min = Infinity;
  let secondMin = Infinity;
  let argMin = -1;
  let minCount = 0;
  let max = -Infinity;
  let secondMax = -Infinity;
  let argMax = -1;
  let maxCount = 0;
  for (let k = 0; k < width; k++) {
    const v = values[k]!;
    if (v < min) {
      secondMin = min;
      min = v;
      argMin = k;
      minCount = 1;
    } else if (v === min) minCount++;
    else if (v < secondMin) secondMin = v;
    if (v > max) {
      secondMax = max;
      max = v;
      argMax = k;
      maxCount = 1;
    } else if (v === max) maxCount++;
    else if (v > secondMax) secondMax = v;
  }
  fitMinMax(min, max, spec, fullGrid);
  let baseline = 0;
  for (let k = 0; k < width; k++) {
    const e = scaledErrorSq(values[k]!, fullGrid, spec.maxq, uDiag[k]!);
    reduction[k] = e;
    baseline += e;
  }
  // A one-column group leaves nothing to fit; leaving its weight out saves the whole error.
  if (width < 2) return;
  if (minCount === 1) reduction[argMin] = baseline - leaveOutSum(values, uDiag, width, spec, argMin, secondMin, max);
  if (maxCount === 1) reduction[argMax] = baseline - leaveOutSum(values, uDiag, width, spec, argMax, min, secondMax);
}

/** Σ_{k ≠ skip} ((q(w_k) − w_k)/d_k)² on the grid fitted to [xmin, xmax]. */
function leaveOutSum(values: Float64Array, uDiag: Float64Array, width: number, spec: GridSpec, skip: number, xmin: number, xmax: number): number {
  fitMinMax(xmin, xmax, spec, looGrid);
  let sum = 0;
  for (let k = 0; k < width; k++) if (k !== skip) sum += scaledErrorSq(values[k]!, looGrid, spec.maxq, uDiag[k]!);
  return sum;
}

export interface FirstOrderFit {
  /** Run the leave-one-out pre-pass (outliers on, simplified_outliers off). */
  leaveOneOut: boolean;
  /** τ: weights whose leave-one-out reduction exceeds it are left out of the fit. */
  threshold: number;
  /** The weight grid (bits, sym, round_zero). */
  spec: GridSpec;
  /** The leave-one-out grid: the same bits and sym, never a rounded zero (as the original). */
  looSpec: GridSpec;
}

/** Per-row buffers of one group, reused across groups. */
export interface GroupScratch {
  values: Float64Array;
  reduction: Float64Array;
  grid: Grid;
}

export function groupScratch(width: number): GroupScratch {
  return { values: new Float64Array(width), reduction: new Float64Array(width), grid: { scale: 0, zero: 0 } };
}

/**
 * Quantizer.find_params on columns column … column+width−1 of `weightT` ([K][rows]), one grid
 * per row, into scaleOut/zeroOut. With the pre-pass, likely outliers are replaced by the mean
 * of the row's other weights (0 when all are outliers) before the min-max fit.
 */
export function fitFirstOrder(weightT: Float64Array, rows: number, column: number, width: number, uDiag: Float64Array, fit: FirstOrderFit, scratch: GroupScratch, scaleOut: Float64Array, zeroOut: Float64Array, fittedOut?: Float64Array): void {
  const { values, reduction, grid } = scratch;
  const groupDiag = uDiag.subarray(column, column + width);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < width; j++) values[j] = weightT[(column + j) * rows + r]!;
    if (fit.leaveOneOut) {
      leaveOneOutReduction(values, groupDiag, width, fit.looSpec, reduction);
      let sum = 0;
      let count = 0;
      for (let j = 0; j < width; j++) {
        if (reduction[j]! > fit.threshold) continue;
        sum += values[j]!;
        count++;
      }
      const mean = sum / Math.max(count, 1);
      for (let j = 0; j < width; j++) if (reduction[j]! > fit.threshold) values[j] = mean;
    }
    let min = Infinity;
    let max = -Infinity;
    for (let j = 0; j < width; j++) {
      const v = values[j]!;
      if (v < min) min = v;
      if (v > max) max = v;
    }
    fitMinMax(min, max, fit.spec, grid);
    if (!fit.spec.sym && (grid.zero < -fit.spec.maxq || grid.zero > 2 * fit.spec.maxq)) {
      // Departure from quant_groups: a row whose group sits far on one side of 0 (after GPTQ
      // updates and outlier masking a group can be nearly constant) gets a zero −min/scale of
      // 1e5 and more. Its 16-row second-order zero grid then has a step of thousands, which
      // ruins the zeros of the 15 other rows, and the value overflows the fp16 statistics the
      // format stores (the original writes inf). Widening the range to include 0 keeps the zero
      // within [0, maxq] for this row only.
      fitMinMax(Math.min(min, 0), Math.max(max, 0), fit.spec, grid);
    }
    scaleOut[r] = grid.scale;
    zeroOut[r] = grid.zero;
    // The values the grid was fitted to (likely outliers replaced), row-major [rows][width].
    if (fittedOut !== undefined) fittedOut.set(values.subarray(0, width), r * width);
  }
}

/** Where one group's second-order quantization of a statistic goes. */
export interface StatisticOut {
  /** [rows] codes, 0 … 2^bits − 1. */
  codes: Uint8Array;
  /** [rows / beta1] fp16 bits of the scale and zero of each beta1-row group. */
  scaleBits: Uint16Array;
  zeroBits: Uint16Array;
  /** [rows] the statistic as the HF decoder computes it: h(scale · h(code − zero)). */
  decoded: Float64Array;
}

const statGrid: Grid = { scale: 0, zero: 0 };

/**
 * quant_groups' second-order quantization of a per-row statistic (the scales, or the zeros):
 * groups of beta1 consecutive rows, each a `bits`-bit asymmetric min-max grid whose scale and
 * zero are stored as fp16 (save_float_dtype). The codes are chosen on the fp16-rounded grid
 * and the decoded values are computed with the decoder's fp16 operations, so what quantization
 * uses is what the packed tensor decodes to (the original uses the fp32 grid throughout; the
 * two differ by fp16 rounding only). Throws when a grid parameter overflows fp16.
 */
export function quantizeStatistic(values: Float64Array, beta1: number, bits: number, what: string, out: StatisticOut, layerName?: string): void {
  const spec: GridSpec = { maxq: 2 ** bits - 1, sym: false, roundZero: false };
  const half = halfValues();
  for (let t = 0; t * beta1 < values.length; t++) {
    const start = t * beta1;
    let min = Infinity;
    let max = -Infinity;
    for (let r = start; r < start + beta1; r++) {
      min = Math.min(min, values[r]!);
      max = Math.max(max, values[r]!);
    }
    fitMinMax(min, max, spec, statGrid);
    const scaleBits = f64ToF16Bits(statGrid.scale);
    const zeroBits = f64ToF16Bits(statGrid.zero);
    const scale = half[scaleBits]!;
    const zero = half[zeroBits]!;
    if (!Number.isFinite(scale) || !Number.isFinite(zero)) {
      throw new FormatError("PACKED_VALUE_INVALID", `the second-order grid of the ${what} of rows ${start}…${start + beta1 - 1} overflows fp16`, {
        ...(layerName === undefined ? {} : { tensor: layerName }),
        expected: "|value| ≤ 65504",
        actual: [statGrid.scale, statGrid.zero],
      });
    }
    out.scaleBits[t] = scaleBits;
    out.zeroBits[t] = zeroBits;
    for (let r = start; r < start + beta1; r++) {
      const code = codeOf(values[r]!, scale, zero, spec.maxq);
      out.codes[r] = code;
      out.decoded[r] = roundHalf(scale * roundHalf(code - zero));
    }
  }
}

/**
 * round_zero with zero codes at least as wide as the weight codes: quant_groups then keeps the
 * integer zeros unquantized; here they become the codes on the exact grid 1·(q − 0). Throws
 * when a zero falls outside the codes (a group of one sign: −min/scale < 0 or > maxq), which
 * the original would store as a raw fp16 zero that the HF layout has no place for.
 */
export function storeIntegerZeros(zeros: Float64Array, bits: number, out: StatisticOut, layerName?: string): void {
  const maxCode = 2 ** bits - 1;
  for (let r = 0; r < zeros.length; r++) {
    const z = zeros[r]!;
    if (z < 0 || z > maxCode) {
      throw new FormatError("PACKED_VALUE_INVALID", `rounded zero of row ${r} does not fit a ${bits}-bit zero code`, { ...(layerName === undefined ? {} : { tensor: layerName }), expected: `0 … ${maxCode}`, actual: z });
    }
    out.codes[r] = z;
    out.decoded[r] = z;
  }
  out.scaleBits.fill(f64ToF16Bits(1));
  out.zeroBits.fill(0);
}


/** Correctly rounded f64 → fp16 bits (formats/dense/float-bits.ts). */
export const f64ToF16Bits = f64ToF16Bit;
