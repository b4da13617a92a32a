import { suite } from "uvu";
import * as assert from "uvu/assert";
import { FormatError, UsageError } from "../../formats/errors.js";
import { permuteHessian, upperCholeskyOfInverse, type Hessian } from "../../formats/second-order/index.js";
import { halfValues, roundHalf, toHalfBits } from "../../formats/spqr/half.js";
import { quantizeSpqr, type SpqrQuantizeOptions, type SpqrQuantizeResult } from "../../formats/spqr/quantize.js";
import { dequantizeSpqr } from "../../formats/spqr/reference.js";
import { codeOf, fitFirstOrder, fitMinMax, groupScratch, leaveOneOutReduction, quantizeStatistic, type GridSpec, type StatisticOut } from "../../formats/spqr/stats.js";
import { searchStatisticCodes, STATS_SEARCH_RADIUS } from "../../formats/spqr/stats-search.js";
import { PARALLEL_MIN_WEIGHTS, searchStatisticCodesThreaded } from "../../formats/spqr/stats-search-pool.js";
import { helperCount } from "../../formats/threads/chunk-pool.js";
import type { SpqrTensor } from "../../formats/spqr/types.js";
import { gaussian, mulberry32, type Rng } from "../helpers/prng.js";

/**
 * The SpQR quantizer against what it promises: a valid representation (codes, statistics,
 * CSR outliers), a sane outlier share, a decoded weight whose Hessian-weighted error beats
 * the same quantizer without outliers and plain RTN, a loop loss that IS the error of the
 * reference decode, spqr_engine's order of permutation / damping / dead columns in τ, and
 * outliers stored as documented (dense code quantize(0), value compensated or raw).
 */

const SEED = Number(process.env["LMPACK_SPQR_SEED"] ?? 0x5b9a7) >>> 0;
const M = 128;
const N = 256;
const half = halfValues();

/** N(0, 0.02²) weights, `heavy` of them eight times larger (the heavy tail outliers exist for). */
function randomWeight(rng: Rng, m: number, n: number, heavy = 0.01): Float32Array {
  return Float32Array.from({ length: m * n }, () => Math.fround(0.02 * gaussian(rng) * (rng() < heavy ? 8 : 1)));
}

/** H = XᵀX / samples, AR(1)-correlated features with per-feature scales (so act-order matters). */
function calibrationHessian(rng: Rng, n: number, samples: number): Hessian {
  const featureScale = Float64Array.from({ length: n }, () => 0.2 + 3 * rng());
  const x = new Float64Array(samples * n);
  for (let t = 0; t < samples; t++) {
    let previous = 0;
    for (let j = 0; j < n; j++) {
      previous = gaussian(rng) + 0.6 * previous;
      x[t * n + j] = previous * featureScale[j]!;
    }
  }
  const data = new Float64Array(n * n);
  for (let t = 0; t < samples; t++) {
    for (let i = 0; i < n; i++) {
      const xi = x[t * n + i]! / samples;
      for (let j = 0; j < n; j++) data[i * n + j]! += xi * x[t * n + j]!;
    }
  }
  return { size: n, data };
}

function diagonalHessian(rng: Rng, n: number): Hessian {
  const data = new Float64Array(n * n);
  for (let i = 0; i < n; i++) data[i * n + i] = 0.1 + rng();
  return { size: n, data };
}

function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Decodes in fp32 (s = s_s·(qs − s_z), z = z_s·(qz − z_z), w = s·(q − z) + outlier), original column order. */
function decodeF32(t: SpqrTensor): Float64Array {
  const { outFeatures: m, inFeatures: n } = t;
  const { beta1, beta2 } = t.params;
  const f = Math.fround;
  const permuted = new Float64Array(m * n);
  for (let g = 0; g < n / beta2; g++) {
    for (let r = 0; r < m; r++) {
      const stat = g * (m / beta1) + Math.floor(r / beta1);
      const s = f(half[t.scaleScale[stat]!]! * f(t.scaleCodes[g * m + r]! - half[t.scaleZero[stat]!]!));
      const z = f(half[t.zeroScale[stat]!]! * f(t.zeroCodes[g * m + r]! - half[t.zeroZero[stat]!]!));
      for (let c = g * beta2; c < (g + 1) * beta2; c++) permuted[r * n + c] = f(s * f(t.codes[r * n + c]! - z));
    }
  }
  const { rowOffsets, cols, values } = t.outliers;
  for (let r = 0; r < m; r++) for (let i = rowOffsets[r]!; i < rowOffsets[r + 1]!; i++) permuted[r * n + cols[i]!] = f(permuted[r * n + cols[i]!]! + half[values[i]!]!);
  const out = new Float64Array(m * n);
  for (let r = 0; r < m; r++) for (let j = 0; j < n; j++) out[r * n + t.perm[j]!] = permuted[r * n + j]!;
  return out;
}

/** Plain RTN: per row and 16 original columns, a 3-bit min-max grid with an integer zero. */
function rtn(weight: Float32Array, m: number, n: number): Float64Array {
  const out = new Float64Array(m * n);
  for (let r = 0; r < m; r++) {
    for (let g = 0; g < n; g += 16) {
      const row = weight.subarray(r * n + g, r * n + g + 16);
      const min = Math.min(...row);
      const max = Math.max(...row);
      const scale = max > min ? (max - min) / 7 : 1;
      const zero = Math.round(-min / scale);
      for (let c = 0; c < 16; c++) out[r * n + g + c] = scale * (Math.min(7, Math.max(0, Math.round(row[c]! / scale) + zero)) - zero);
    }
  }
  return out;
}

/** tr(ΔW·H·ΔWᵀ). */
function hessianError(weight: ArrayLike<number>, decoded: ArrayLike<number>, h: Float64Array, m: number, n: number): number {
  let total = 0;
  const delta = new Float64Array(n);
  for (let r = 0; r < m; r++) {
    for (let c = 0; c < n; c++) delta[c] = weight[r * n + c]! - decoded[r * n + c]!;
    for (let i = 0; i < n; i++) {
      let dot = 0;
      for (let j = 0; j < n; j++) dot += h[i * n + j]! * delta[j]!;
      total += delta[i]! * dot;
    }
  }
  return total;
}

/** The row's decoded zero, as the quantizer uses it: h(z_s · h(qz − z_z)). */
function decodedZero(t: SpqrTensor, r: number, column: number): number {
  const g = Math.floor(column / t.params.beta2);
  const stat = g * (t.outFeatures / t.params.beta1) + Math.floor(r / t.params.beta1);
  return roundHalf(half[t.zeroScale[stat]!]! * roundHalf(t.zeroCodes[g * t.outFeatures + r]! - half[t.zeroZero[stat]!]!));
}

function forEachOutlier(t: SpqrTensor, visit: (r: number, c: number, bits: number) => void): void {
  const { rowOffsets, cols, values } = t.outliers;
  for (let r = 0; r < t.outFeatures; r++) for (let i = rowOffsets[r]!; i < rowOffsets[r + 1]!; i++) visit(r, cols[i]!, values[i]!);
}

const rngFor = (salt: number) => mulberry32(SEED + salt);
const layer = (() => {
  const rng = rngFor(1);
  return { weight: randomWeight(rng, M, N), hessian: calibrationHessian(rng, N, 2 * N) };
})();
const memo = new Map<string, SpqrQuantizeResult>();
function quantized(options: SpqrQuantizeOptions = {}): SpqrQuantizeResult {
  const key = JSON.stringify(options);
  if (!memo.has(key)) memo.set(key, quantizeSpqr(layer.weight, M, N, layer.hessian, options));
  return memo.get(key)!;
}

const representation = suite("spqr quantize: representation");

representation("outlier share is sane at τ = 0.2 and zero at τ = ∞; every code and statistic is in range", () => {
  const result = quantized();
  const share = result.outlierCount / (M * N);
  assert.ok(share > 0.001 && share < 0.05, `outlier share ${share}`);
  assert.is(quantized({ outlierRelativeThreshold: Infinity }).outlierCount, 0);
  const t = result.tensor;
  assert.ok(t.codes.every((q) => q <= 7), "weight codes 0…7");
  assert.ok(t.scaleCodes.every((q) => q <= 7) && t.zeroCodes.every((q) => q <= 7), "statistic codes 0…7");
  for (const stats of [t.scaleScale, t.scaleZero, t.zeroScale, t.zeroZero]) {
    assert.is(stats.length, (N / 16) * (M / 16));
    assert.ok(stats.every((bits) => Number.isFinite(half[bits]!)), "fp16 statistics are finite");
  }
  const { rowOffsets, cols, values } = t.outliers;
  assert.is(rowOffsets[0], 0);
  assert.is(rowOffsets[M], result.outlierCount);
  assert.is(cols.length, result.outlierCount);
  for (let r = 0; r < M; r++) {
    assert.ok(rowOffsets[r + 1]! >= rowOffsets[r]!, "row offsets monotone");
    for (let i = rowOffsets[r]! + 1; i < rowOffsets[r + 1]!; i++) assert.ok(cols[i]! > cols[i - 1]!, `row ${r}: columns ascending`);
  }
  assert.ok(cols.every((c) => c < N) && values.every((bits) => Number.isFinite(half[bits]!)), "outlier columns in range, values finite");
});

representation("identity keeps the column order; act_order is argsort(diag H) descending, stable on ties", () => {
  assert.equal(Array.from(quantized({ permutationOrder: "identity" }).tensor.perm), Array.from({ length: N }, (_, j) => j));
  const rng = rngFor(2);
  const n = 64;
  const data = new Float64Array(n * n);
  for (let i = 0; i < n; i++) data[i * n + i] = 1 + Math.floor(rng() * 4); // many ties
  const result = quantizeSpqr(randomWeight(rng, 16, n), 16, n, { size: n, data });
  const expected = Array.from({ length: n }, (_, j) => j).sort((a, b) => data[b * n + b]! - data[a * n + a]! || a - b);
  assert.equal(Array.from(result.tensor.perm), expected);
});

representation("at every outlier the dense code is quantize(0) of its row's grid", () => {
  for (const options of [{}, { simplifiedOutliers: true }, { outlierValues: "reference" as const }]) {
    const t = quantized(options).tensor;
    let checked = 0;
    forEachOutlier(t, (r, c) => {
      const expected = Math.min(7, Math.max(0, roundHalfEven(decodedZero(t, r, c))));
      assert.is(t.codes[r * N + c], expected, `row ${r}, column ${c}`);
      checked++;
    });
    assert.ok(checked > 0, "some outliers");
  }
});

const quality = suite("spqr quantize: quality");

quality("the decoded weight beats the same quantizer without outliers, and plain RTN, in tr(ΔW·H·ΔWᵀ)", () => {
  const h = layer.hessian.data;
  const error = (options: SpqrQuantizeOptions) => hessianError(layer.weight, decodeF32(quantized(options).tensor), h, M, N);
  const spqr = error({});
  const noOutliers = error({ outlierRelativeThreshold: Infinity });
  const simplified = error({ simplifiedOutliers: true });
  const plain = hessianError(layer.weight, rtn(layer.weight, M, N), h, M, N);
  assert.ok(spqr < noOutliers, `with outliers ${spqr} < without ${noOutliers}`);
  assert.ok(simplified < noOutliers, `simplified outliers ${simplified} < without ${noOutliers}`);
  assert.ok(spqr < simplified, `leave-one-out ${spqr} < simplified outliers ${simplified}`);
  assert.ok(spqr < plain, `SpQR ${spqr} < RTN ${plain}`);
});

quality("the loop's loss is exactly the error of the reference decode against the damped H", () => {
  const result = quantized();
  const decoded = Float64Array.from(dequantizeSpqr(result.tensor), (bits) => half[bits]!);
  const damped = layer.hessian.data.slice();
  for (let i = 0; i < N; i++) damped[i * N + i]! += result.damp;
  const actual = hessianError(layer.weight, decoded, damped, M, N);
  assert.ok(Math.abs(actual - result.hessianLoss) <= 1e-9 * actual, `loop ${result.hessianLoss} vs decode ${actual}`);
});

quality("τ and damping follow spqr_engine: permute, damp with dead columns counted as 0, then H[c,c] = 1 and W[:,c] = 0", () => {
  const rng = rngFor(3);
  const n = 64;
  const m = 32;
  const weight = randomWeight(rng, m, n);
  const h = calibrationHessian(rng, n, 128);
  const dead = 5;
  for (let j = 0; j < n; j++) h.data[dead * n + j] = h.data[j * n + dead] = 0;
  const result = quantizeSpqr(weight, m, n, h, { percDamp: 0.5 });
  assert.equal(result.deadColumns, [dead]);
  const perm = Int32Array.from(result.tensor.perm);
  assert.is(perm[n - 1], dead, "the dead column sorts last");
  const hp = permuteHessian(h.data, n, perm);
  let diagSum = 0;
  for (let i = 0; i < n; i++) diagSum += hp[i * n + i]!;
  const damp = (0.5 * diagSum) / n;
  assert.ok(Math.abs(result.damp - damp) <= 1e-12 * damp, "damp = percDamp · mean(diag H) with the dead 0");
  for (let i = 0; i < n; i++) hp[i * n + i]! += damp;
  hp[(n - 1) * n + (n - 1)] = 1;
  const u = upperCholeskyOfInverse(hp, n);
  let total = 0;
  for (let j = 0; j < n; j++) {
    const column = Array.from({ length: m }, (_, r) => (perm[j] === dead ? 0 : weight[r * n + perm[j]!]!));
    const mean = column.reduce((a, b) => a + b, 0) / m;
    const variance = column.reduce((a, b) => a + (b - mean) ** 2, 0) / (m - 1);
    total += variance / u[j * n + j]! ** 2;
  }
  const expected = (0.2 * total) / n;
  assert.ok(Math.abs(result.threshold - expected) <= 1e-12 * expected, `τ ${result.threshold} vs ${expected}`);
});

const outliers = suite("spqr quantize: outlier values");

outliers("without error propagation (diagonal H) the stored value is fp16(w), or fp16(w − dense) when compensated", () => {
  const rng = rngFor(4);
  const weight = randomWeight(rng, M, N);
  const h = diagonalHessian(rng, N);
  const raw = quantizeSpqr(weight, M, N, h, { outlierValues: "reference" });
  const compensated = quantizeSpqr(weight, M, N, h);
  assert.ok(raw.outlierCount > 0);
  assert.equal(Array.from(compensated.tensor.outliers.cols), Array.from(raw.tensor.outliers.cols), "the same outliers");
  assert.equal(Array.from(compensated.tensor.codes), Array.from(raw.tensor.codes), "the same codes");
  const perm = raw.tensor.perm;
  forEachOutlier(raw.tensor, (r, c, bits) => assert.is(bits, toHalfBits(weight[r * N + perm[c]!]!), `raw value at row ${r}, column ${c}`));
  // Compensated: the decoded weight is w up to the fp16 roundings of the stored w − dense and
  // of the sum; raw: it is off by the whole dense part s·(q₀ − z).
  const dense = dequantizeSpqr(compensated.tensor, { permuted: true, denseOnly: true });
  const decoded = dequantizeSpqr(compensated.tensor, { permuted: true });
  const decodedRaw = dequantizeSpqr(raw.tensor, { permuted: true });
  let rawMiss = 0;
  let miss = 0;
  forEachOutlier(compensated.tensor, (r, c) => {
    const w = weight[r * N + perm[c]!]!;
    const error = Math.abs(half[decoded[r * N + c]!]! - w);
    const bound = 1.01 * 2 ** -11 * (Math.abs(w - half[dense[r * N + c]!]!) + Math.abs(w)) + 2 ** -24;
    assert.ok(error <= bound, `row ${r}, column ${c}: decoded ${half[decoded[r * N + c]!]} vs ${w}`);
    miss += error;
    rawMiss += Math.abs(half[decodedRaw[r * N + c]!]! - w);
  });
  assert.ok(miss < rawMiss / 10, `compensated miss ${miss} vs raw ${rawMiss}`);
});

outliers("round_zero: integer zeros become the codes on the grid 1·(q − 0), or a typed error when one is outside 0…7", () => {
  const rng = rngFor(5);
  const weight = randomWeight(rng, M, N, 0);
  // Every group holds both signs and no weight is left out of a fit (no outliers), so every
  // rounded zero −min/scale lies in 0…7.
  for (let r = 0; r < M; r++) for (let g = 0; g < N; g += 16) [weight[r * N + g], weight[r * N + g + 1]] = [-0.02, 0.02];
  const h = diagonalHessian(rng, N);
  const t = quantizeSpqr(weight, M, N, h, { roundZero: true, outlierRelativeThreshold: Infinity }).tensor;
  assert.ok(t.zeroScale.every((bits) => bits === 0x3c00) && t.zeroZero.every((bits) => bits === 0), "z_s = 1, z_z = 0");
  const positive = weight.map(Math.abs);
  assert.throws(() => quantizeSpqr(positive, M, N, h, { roundZero: true }), (e: unknown) => e instanceof FormatError && e.code === "PACKED_VALUE_INVALID");
  // Narrower zero codes than weight codes: the rounded zeros are quantized like any statistic.
  const wide = quantizeSpqr(positive, M, N, h, { roundZero: true, bits: 4 }).tensor;
  assert.ok(wide.codes.every((q) => q <= 15) && wide.zeroCodes.every((q) => q <= 7));
  const sym = quantized({ sym: true });
  assert.ok(sym.tensor.codes.every((q) => q <= 7) && Number.isFinite(sym.hessianLoss), "sym runs");
});

const stats = suite("spqr quantize: group statistics");

/** get_leave_one_out_error as written: refit on every leave-one-out subset, O(width²). */
function bruteLeaveOneOut(values: number[], uDiag: number[], spec: GridSpec): number[] {
  const grid = { scale: 0, zero: 0 };
  const errorSq = (k: number) => ((grid.scale * (codeOf(values[k]!, grid.scale, grid.zero, spec.maxq) - grid.zero) - values[k]!) / uDiag[k]!) ** 2;
  fitMinMax(Math.min(...values), Math.max(...values), spec, grid);
  const baseline = values.reduce((sum, _, k) => sum + errorSq(k), 0);
  return values.map((_, j) => {
    const rest = values.filter((_, k) => k !== j);
    fitMinMax(Math.min(...rest), Math.max(...rest), spec, grid);
    return baseline - values.reduce((sum, _, k) => (k === j ? sum : sum + errorSq(k)), 0);
  });
}

stats("the O(width) leave-one-out pass equals the refit-every-subset original, ties and sym included", () => {
  const rng = rngFor(6);
  const width = 16;
  const reduction = new Float64Array(width);
  for (let trial = 0; trial < 2000; trial++) {
    // Quarter steps make repeated minima and maxima common; every 7th row is constant.
    const values = Array.from({ length: width }, () => (trial % 7 === 0 ? 0.25 : rng() < 0.3 ? Math.round(rng() * 4) / 4 : rng() - 0.5));
    const uDiag = Array.from({ length: width }, () => 0.5 + rng());
    const spec: GridSpec = { maxq: 7, sym: trial % 2 === 1, roundZero: false };
    leaveOneOutReduction(Float64Array.from(values), Float64Array.from(uDiag), width, spec, reduction);
    const expected = bruteLeaveOneOut(values, uDiag, spec);
    for (let k = 0; k < width; k++) assert.ok(Math.abs(reduction[k]! - expected[k]!) <= 1e-12 * (1 + Math.abs(expected[k]!)), `trial ${trial}, weight ${k}: ${reduction[k]} vs ${expected[k]}`);
  }
});

stats("a heavy weight is left out of its row's fit by the pre-pass, and not without it", () => {
  const rng = rngFor(7);
  const rows = 8;
  const width = 16;
  const weightT = Float64Array.from({ length: rows * width }, () => 0.06 * rng() - 0.03);
  const heavyAt = Array.from({ length: rows }, () => Math.floor(rng() * width));
  for (let r = 0; r < rows; r++) weightT[heavyAt[r]! * rows + r] = 0.5;
  const spec: GridSpec = { maxq: 7, sym: false, roundZero: false };
  const scale = new Float64Array(rows);
  const zero = new Float64Array(rows);
  const uDiag = new Float64Array(width).fill(1);
  // τ sits above any weight's error on the heavy-stretched grid, ≤ (0.53/14)² ≈ 0.0014, and
  // below what dropping the heavy weight saves (≈ 0.009 for these rows).
  const threshold = 0.003;
  for (const leaveOneOut of [true, false]) {
    fitFirstOrder(weightT, rows, 0, width, uDiag, { leaveOneOut, threshold, spec, looSpec: spec }, groupScratch(width), scale, zero);
    for (let r = 0; r < rows; r++) {
      const row = Array.from({ length: width }, (_, j) => weightT[j * rows + r]!);
      const rest = row.filter((_, j) => j !== heavyAt[r]);
      const fitMin = -zero[r]! * scale[r]!; // zero = −min/scale, not rounded
      if (leaveOneOut) {
        // Left-out weights are replaced by the mean of the others, inside their range.
        assert.ok(scale[r]! <= (Math.max(...rest) - Math.min(...rest)) / 7 + 1e-15, `row ${r}: scale ${scale[r]} fitted without the heavy weight`);
        assert.ok(fitMin >= Math.min(...rest) - 1e-15, `row ${r}: fitted minimum within the others`);
      } else {
        assert.ok(Math.abs(scale[r]! - (0.5 - Math.min(...row)) / 7) <= 1e-15, `row ${r}: scale ${scale[r]} over the whole row`);
        assert.ok(Math.abs(fitMin - Math.min(...row)) <= 1e-15, `row ${r}: fitted minimum`);
      }
    }
  }
});

stats("the statistic search on helper threads gives every row the one-thread result (tile-aligned chunks, odd tile counts, symmetric grids)", () => {
  const rng = rngFor(11);
  const out = (rows: number, beta1: number): StatisticOut => ({ codes: new Uint8Array(rows), scaleBits: new Uint16Array(rows / beta1), zeroBits: new Uint16Array(rows / beta1), decoded: new Float64Array(rows) });
  let [moved, byHelpers] = [0, 0];
  for (const [rows, beta1, sym] of [[4096, 16, false], [1040, 16, false], [2048, 64, true], [8192, 1, false]] as const) {
    const width = 16;
    assert.ok(rows * width >= PARALLEL_MIN_WEIGHTS, "large enough for the helpers");
    const d = Float64Array.from({ length: width }, () => 0.3 + rng());
    const fitted = Float64Array.from({ length: rows * width }, () => 0.04 * gaussian(rng) + (rng() < 0.02 ? 0.1 : 0));
    const [rawScale, rawZero] = [new Float64Array(rows), new Float64Array(rows)];
    const grid = { scale: 0, zero: 0 };
    for (let r = 0; r < rows; r++) {
      const row = fitted.subarray(r * width, (r + 1) * width);
      fitMinMax(Math.min(...row), Math.max(...row), { maxq: 7, sym, roundZero: false }, grid);
      [rawScale[r], rawZero[r]] = [grid.scale, grid.zero];
    }
    const make = (): [StatisticOut, StatisticOut] => {
      const [scale, zero] = [out(rows, beta1), out(rows, beta1)];
      quantizeStatistic(rawScale, beta1, 3, "scales", scale);
      quantizeStatistic(rawZero, beta1, 3, "zeros", zero);
      return [scale, zero];
    };
    const [[scale1, zero1], [scale2, zero2], [rounded]] = [make(), make(), make()];
    searchStatisticCodes(fitted, width, d, beta1, 7, { scale: 3, zero: 3 }, scale1, zero1, sym);
    byHelpers += searchStatisticCodesThreaded(fitted, width, d, beta1, 7, { scale: 3, zero: 3 }, scale2, zero2, sym);
    const label = `${rows} rows, beta1 ${beta1}${sym ? ", sym" : ""}`;
    assert.equal([Array.from(scale2.codes), Array.from(zero2.codes)], [Array.from(scale1.codes), Array.from(zero1.codes)], `${label}: codes`);
    assert.equal([Array.from(scale2.decoded), Array.from(zero2.decoded)], [Array.from(scale1.decoded), Array.from(zero1.decoded)], `${label}: decoded statistics`);
    for (let r = 0; r < rows; r++) if (scale1.codes[r] !== rounded.codes[r]) moved++;
  }
  assert.ok(moved > 1000, `the search moved ${moved} scale codes`);
  // The helpers ran (their worker script loads and serves chunks), where there are any.
  if (helperCount() > 0) assert.ok(byHelpers > 0, "no chunk was searched by a helper thread");
});

/** A group's Σ_j ((h(s·h(q(w_j) − z)) − w_j)/d_j)² for decoded statistics s, z (the search's measure, written out). */
function groupErrorOf(values: Float64Array, d: Float64Array, s: number, z: number): number {
  let sum = 0;
  for (let j = 0; j < values.length; j++) sum += ((roundHalf(s * roundHalf(codeOf(values[j]!, s, z, 7) - z)) - values[j]!) / d[j]!) ** 2;
  return sum;
}

stats("the statistic search: per row, the least group error of every code pair within ±2 (never above rounding's; ties keep it), on unchanged grids", () => {
  const rng = rngFor(8);
  const [rows, width, beta1] = [64, 16, 16];
  const d = Float64Array.from({ length: width }, () => 0.3 + rng());
  let improved = 0;
  for (let trial = 0; trial < 20; trial++) {
    const fitted = Float64Array.from({ length: rows * width }, () => 0.04 * gaussian(rng) + (rng() < 0.02 ? 0.1 : 0));
    const [rawScale, rawZero] = [new Float64Array(rows), new Float64Array(rows)];
    const grid = { scale: 0, zero: 0 };
    for (let r = 0; r < rows; r++) {
      const row = fitted.subarray(r * width, (r + 1) * width);
      fitMinMax(Math.min(...row), Math.max(...row), { maxq: 7, sym: false, roundZero: false }, grid);
      [rawScale[r], rawZero[r]] = [grid.scale, grid.zero];
    }
    const out = (): StatisticOut => ({ codes: new Uint8Array(rows), scaleBits: new Uint16Array(rows / beta1), zeroBits: new Uint16Array(rows / beta1), decoded: new Float64Array(rows) });
    const [scale, zero] = [out(), out()];
    quantizeStatistic(rawScale, beta1, 3, "scales", scale);
    quantizeStatistic(rawZero, beta1, 3, "zeros", zero);
    const before = { scale: structuredClone(scale), zero: structuredClone(zero) };
    searchStatisticCodes(fitted, width, d, beta1, 7, { scale: 3, zero: 3 }, scale, zero);
    assert.equal([scale.scaleBits, scale.zeroBits, zero.scaleBits, zero.zeroBits], [before.scale.scaleBits, before.scale.zeroBits, before.zero.scaleBits, before.zero.zeroBits], "second-order grids unchanged");
    for (let r = 0; r < rows; r++) {
      const t = Math.floor(r / beta1);
      const values = fitted.subarray(r * width, (r + 1) * width);
      const decode = (out: StatisticOut, code: number) => roundHalf(half[out.scaleBits[t]!]! * roundHalf(code - half[out.zeroBits[t]!]!));
      const [cs0, cz0] = [before.scale.codes[r]!, before.zero.codes[r]!];
      const rounded = groupErrorOf(values, d, decode(scale, cs0), decode(zero, cz0));
      let best = rounded;
      for (let cs = Math.max(0, cs0 - STATS_SEARCH_RADIUS); cs <= Math.min(7, cs0 + STATS_SEARCH_RADIUS); cs++) {
        for (let cz = Math.max(0, cz0 - STATS_SEARCH_RADIUS); cz <= Math.min(7, cz0 + STATS_SEARCH_RADIUS); cz++) best = Math.min(best, groupErrorOf(values, d, decode(scale, cs), decode(zero, cz)));
      }
      const chosen = groupErrorOf(values, d, scale.decoded[r]!, zero.decoded[r]!);
      assert.is(scale.decoded[r], decode(scale, scale.codes[r]!), `row ${r}: decoded scale is its code's`);
      assert.is(zero.decoded[r], decode(zero, zero.codes[r]!), `row ${r}: decoded zero is its code's`);
      assert.ok(Math.abs(chosen - best) <= 1e-12 * best, `row ${r}: chose ${chosen}, best in reach ${best}`);
      if (chosen === rounded) assert.equal([scale.codes[r], zero.codes[r]], [cs0, cz0], `row ${r}: a tie keeps the rounded codes`);
      else improved++;
    }
  }
  assert.ok(improved > 100, `the search changed ${improved} of 1280 rows`);
});

quality("the statistic search lowers the loop's loss well below rounding's, at a similar outlier count", () => {
  const [searched, rounded] = [quantized(), quantized({ statsSearch: false })];
  assert.ok(searched.hessianLoss < 0.95 * rounded.hessianLoss, `searched ${searched.hessianLoss} vs rounded ${rounded.hessianLoss}`);
  assert.ok(Math.abs(searched.outlierCount - rounded.outlierCount) <= 0.1 * rounded.outlierCount, `outliers ${searched.outlierCount} vs ${rounded.outlierCount}`);
  // A symmetric grid keeps its zero at the centre: only the scale codes are searched.
  const [sym, symRounded] = [quantized({ sym: true }), quantized({ sym: true, statsSearch: false })];
  assert.equal(Array.from(sym.tensor.zeroCodes), Array.from(symRounded.tensor.zeroCodes), "sym: zero codes as rounded");
  assert.not.equal(Array.from(sym.tensor.scaleCodes), Array.from(symRounded.tensor.scaleCodes), "sym: scale codes searched");
});

const errors = suite("spqr quantize: argument errors");

errors("bad shapes, widths, options and Hessians are typed errors", () => {
  const w = (m: number, n: number) => new Float32Array(m * n);
  const h = (n: number): Hessian => ({ size: n, data: new Float64Array(n * n) });
  const usage = (run: () => unknown, what: string) =>
    assert.throws(run, (e: unknown) => e instanceof UsageError && e.code === "BAD_ARGUMENT", what);
  usage(() => quantizeSpqr(w(24, 32), 24, 32, h(32)), "m not a multiple of beta1");
  usage(() => quantizeSpqr(w(16, 40), 16, 40, h(40)), "n not a multiple of beta2");
  usage(() => quantizeSpqr(w(16, 32), 16, 32, h(32), { bits: 1 }), "bits 1");
  usage(() => quantizeSpqr(w(16, 32), 16, 32, h(32), { bits: 9 }), "bits 9");
  usage(() => quantizeSpqr(w(16, 32), 16, 32, h(32), { qqZeroBits: 9 }), "qqZeroBits 9");
  usage(() => quantizeSpqr(w(16, 32), 16, 32, h(32), { beta2: 0 }), "beta2 0");
  usage(() => quantizeSpqr(w(16, 32), 16, 32, h(32), { percDamp: -1 }), "negative damping");
  usage(() => quantizeSpqr(w(16, 32), 16, 32, h(32), { outlierRelativeThreshold: Number.NaN }), "NaN threshold");
  usage(() => quantizeSpqr(w(16, 32), 16, 32, h(32), { permutationOrder: "spearman" as "identity" }), "unknown permutation");
  usage(() => quantizeSpqr(w(16, 31), 16, 32, h(32)), "weight length");
  usage(() => quantizeSpqr(w(1, 65552), 1, 65552, { size: 65552, data: new Float64Array(0) }, { beta1: 1 }), "n > 65536");
  assert.throws(() => quantizeSpqr(w(16, 32), 16, 32, h(48)), (e: unknown) => e instanceof FormatError && e.code === "SHAPE_SIZE_MISMATCH", "Hessian size");
});

stats("a row whose group sits far from 0 keeps finite fp16 statistics and a bounded error (range widened to 0)", () => {
  const [m, n] = [32, 32];
  const rng = mulberry32(77);
  const weight = new Float32Array(m * n).map(() => (rng() - 0.5) * 0.1);
  for (let c = 0; c < n; c++) weight[c] = 5 + (rng() - 0.5) * 1e-6; // row 0: nearly constant, far from 0
  const h = new Float64Array(n * n);
  for (let i = 0; i < n; i++) h[i * n + i] = 1;
  const { tensor } = quantizeSpqr(weight, m, n, { size: n, data: h }, { outlierRelativeThreshold: Infinity, permutationOrder: "identity" });
  const half = halfValues();
  for (const stat of [tensor.scaleScale, tensor.scaleZero, tensor.zeroScale, tensor.zeroZero]) assert.ok(Array.from(stat).every((b) => Number.isFinite(half[b]!)), "fp16 statistics are finite");
  const decoded = dequantizeSpqr(tensor);
  for (let c = 0; c < n; c++) assert.ok(Math.abs(half[decoded[c]!]! - weight[c]!) < 5 / 7, `row 0 column ${c}: ${half[decoded[c]!]} vs ${weight[c]}`);
  let rest = 0;
  for (let i = n; i < m * n; i++) rest = Math.max(rest, Math.abs(half[decoded[i]!]! - weight[i]!));
  assert.ok(rest < 0.05, `the other rows stay within their own range (max error ${rest})`);
});

representation.run();
quality.run();
outliers.run();
stats.run();
errors.run();
