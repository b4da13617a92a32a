import { suite } from "uvu";
import * as assert from "uvu/assert";
import { UsageError } from "../../formats/errors.js";
import { fitGrid, fitGridDetailed, quantizeCode, roundHalfEven } from "../../formats/int-group/grid.js";
import { dequantize } from "../../formats/int-group/reference.js";
import { quantizeRtn } from "../../formats/int-group/quantizers/rtn.js";
import { linearDecayLr, quantizeSignRound, type SignRoundResult } from "../../formats/int-group/quantizers/signround.js";
import { layerLoss, SignRoundLayer, type SignRoundGradients } from "../../formats/int-group/quantizers/signround-grad.js";
import { maxCode, type IntBits, type IntGroupParams, type IntGroupTensor } from "../../formats/int-group/types.js";
import type { Hessian } from "../../formats/second-order/hessian.js";
import { gaussian, mulberry32, type Rng } from "../helpers/prng.js";

/**
 * SignRound on seeded random layers with a random correlated SPD Hessian: never worse than RTN
 * in its own loss and usually better; its tensor is exactly fitGrid/quantizeCode of the best
 * parameters; V respects the schedule's bound; iters=0 is RTN; and the analytic gradients equal
 * finite differences of the straight-through surrogate (round frozen to its current offset).
 */

const SEED = Number(process.env["LMPACK_SIGNROUND_SEED"] ?? 0x5195) >>> 0;

/** Rows of different spread, a few outliers, every third row shifted (so asym grids differ from sym). */
function randomWeight(rng: Rng, n: number, k: number): Float32Array {
  const w = new Float32Array(n * k);
  for (let row = 0; row < n; row++) {
    const sigma = 0.02 * [0.5, 1, 2][row % 3]!;
    const shift = row % 3 === 2 ? 1.5 * sigma : 0;
    for (let i = 0; i < k; i++) w[row * k + i] = shift + sigma * gaussian(rng) * (rng() < 0.01 ? 6 : 1);
  }
  return w;
}

/** H = XᵀX for 2K tokens whose features are mixed (correlated) and of uneven magnitude. */
function randomHessian(rng: Rng, k: number): Hessian {
  const tokens = 2 * k;
  const mix = Float64Array.from({ length: k * k }, (_, i) => (i % (k + 1) === 0 ? 1 : 0) + 0.15 * gaussian(rng));
  const channelScale = Float64Array.from({ length: k }, () => (rng() < 0.05 ? 8 : 0.5 + rng()));
  const x = new Float64Array(tokens * k);
  const z = new Float64Array(k);
  for (let t = 0; t < tokens; t++) {
    for (let j = 0; j < k; j++) z[j] = gaussian(rng);
    for (let j = 0; j < k; j++) for (let c = 0; c < k; c++) x[t * k + c]! += z[j]! * mix[j * k + c]!;
    for (let c = 0; c < k; c++) x[t * k + c]! *= channelScale[c]!;
  }
  const h = new Float64Array(k * k);
  for (let t = 0; t < tokens; t++) for (let a = 0; a < k; a++) for (let b = 0; b < k; b++) h[a * k + b]! += x[t * k + a]! * x[t * k + b]!;
  return { size: k, data: h, nSamples: tokens };
}

function lossOf(tensor: IntGroupTensor, weight: Float32Array, hessian: Hessian | undefined): number {
  const deq = dequantize(tensor, { precision: "f32" });
  return layerLoss(Float64Array.from(deq, (x, i) => x - weight[i]!), tensor.outFeatures, tensor.inFeatures, hessian);
}

const N = 32;
const K = 256;
const rng = mulberry32(SEED);
const hessian = randomHessian(rng, K);
const CASES: IntGroupParams[] = [];
for (const bits of [2, 3, 4] as IntBits[]) for (const sym of [true, false]) for (const groupSize of [32, 64, 128, K]) CASES.push({ bits, groupSize, sym, scaleDtype: "F16" });
const label = (p: IntGroupParams): string => `${p.bits}-bit ${p.sym ? "sym" : "asym"} g${p.groupSize === K ? "pc" : p.groupSize}`;

const tuning = suite(`SignRound vs RTN (seed ${SEED})`);
const results: { params: IntGroupParams; weight: Float32Array; result: SignRoundResult }[] = [];

tuning("loss ≤ RTN's on every case, lower on most; iteration 0 is RTN", () => {
  let improved = 0;
  for (const params of CASES) {
    const weight = randomWeight(rng, N, K);
    const result = quantizeSignRound(weight, N, K, params, { hessian, iters: 100 });
    results.push({ params, weight, result });
    assert.is(result.initialLoss, lossOf(quantizeRtn(weight, N, K, params), weight, hessian), `${label(params)}: initial = RTN`);
    assert.ok(result.bestLoss <= result.initialLoss, `${label(params)}: ${result.bestLoss} ≤ ${result.initialLoss}`);
    if (result.bestLoss < result.initialLoss) improved++;
  }
  assert.ok(improved >= CASES.length - 2, `${improved}/${CASES.length} improved`);
});

tuning("the tensor is fitGrid/quantizeCode of the best parameters, and its dequant gives bestLoss", () => {
  for (const { params, weight, result } of results) {
    const { tensor, tuned } = result;
    const nGroups = tensor.scales.length / N;
    for (let row = 0; row < N; row++) {
      for (let g = 0; g < nGroups; g++) {
        const begin = row * K + g * params.groupSize;
        const group = weight.subarray(begin, begin + params.groupSize);
        const grid = fitGrid(Math.min(...group), Math.max(...group), params, tuned.minScale[row * nGroups + g]!, tuned.maxScale[row * nGroups + g]!);
        assert.is(tensor.scales[g * N + row], grid.scale);
        assert.is(tensor.zeros[g * N + row], grid.zero);
        for (let i = 0; i < group.length; i++) assert.is(tensor.codes[begin + i], quantizeCode(group[i]!, grid, params, tuned.value[begin + i]!));
      }
    }
    assert.is(lossOf(tensor, weight, hessian), result.bestLoss, label(params));
  }
});

tuning("V stays within the schedule's bound, α and β within [0, 1]", () => {
  const iters = 100;
  const lr = linearDecayLr(1 / iters, iters);
  const bound = lr.subarray(0, iters - 1).reduce((a, b) => a + b, 0);
  for (const { params, result } of results) {
    const maxAbsV = result.tuned.value.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    assert.ok(maxAbsV <= bound + 1e-6, `${label(params)}: max |V| ${maxAbsV} ≤ ${bound}`);
    for (const x of [...result.tuned.minScale, ...result.tuned.maxScale]) assert.ok(x >= 0 && x <= 1);
  }
  const defaults = linearDecayLr(1 / 200, 200);
  const defaultBound = defaults.subarray(0, 199).reduce((a, b) => a + b, 0);
  assert.ok(Math.abs(defaultBound - (201 / 400 - 1 / 200 ** 2)) < 1e-6, `200 iterations: |V| ≤ ${defaultBound}`);
});

tuning("data-free mode lowers the weight MSE", () => {
  let improved = 0;
  for (const params of CASES.filter((p) => p.groupSize === 128)) {
    const weight = randomWeight(rng, N, K);
    const result = quantizeSignRound(weight, N, K, params, { iters: 100 });
    assert.is(result.initialLoss, lossOf(quantizeRtn(weight, N, K, params), weight, undefined));
    assert.ok(result.bestLoss <= result.initialLoss);
    if (result.bestLoss < result.initialLoss) improved++;
  }
  assert.is(improved, 6);
});

tuning("iters=0 is RTN exactly; minmax tuning off leaves α = β = 1; onStep sees every iteration", () => {
  const params: IntGroupParams = { bits: 3, groupSize: 64, sym: false, scaleDtype: "F16" };
  const weight = randomWeight(rng, N, K);
  const rtn = quantizeRtn(weight, N, K, params);
  const zero = quantizeSignRound(weight, N, K, params, { hessian, iters: 0 });
  assert.equal(zero.tensor, rtn);
  assert.is(zero.bestLoss, zero.initialLoss);
  assert.is(zero.bestIter, 0);
  const losses: number[] = [];
  const noMinmax = quantizeSignRound(weight, N, K, params, { hessian, iters: 20, enableMinmaxTuning: false, onStep: (t, loss) => losses.push(t, loss) });
  assert.ok(noMinmax.tuned.minScale.every((x) => x === 1) && noMinmax.tuned.maxScale.every((x) => x === 1));
  assert.is(losses.length, 40);
  assert.is(losses[1], noMinmax.initialLoss);
  assert.is(Math.min(...losses.filter((_, i) => i % 2 === 1)), noMinmax.bestLoss);
});

tuning("a short last group (K not a multiple of groupSize) tunes and stays consistent", () => {
  const params: IntGroupParams = { bits: 3, groupSize: 32, sym: true, scaleDtype: "BF16" };
  const weight = randomWeight(rng, 6, 100);
  const h = randomHessian(rng, 100);
  const result = quantizeSignRound(weight, 6, 100, params, { hessian: h, iters: 50 });
  assert.is(result.tensor.scales.length, 4 * 6);
  assert.ok(result.bestLoss < result.initialLoss);
  assert.is(lossOf(result.tensor, weight, h), result.bestLoss);
});

tuning("the lr schedule is LinearLR's: lr·(1 − t/T) in float32", () => {
  const lr = linearDecayLr(0.005, 200);
  assert.is(lr[0], Math.fround(0.005));
  // torch's recursive float32 update drifts from the closed form by a few float32 ulps at most.
  for (let t = 0; t < 200; t++) assert.ok(Math.abs(lr[t]! - 0.005 * (1 - t / 200)) <= 1e-5 * 0.005, `t=${t}: ${lr[t]}`);
});

tuning("refuses bad Hessians and options with BAD_ARGUMENT", () => {
  const weight = randomWeight(rng, 4, 64);
  const params: IntGroupParams = { bits: 4, groupSize: 32, sym: true, scaleDtype: "F16" };
  const bad = [{ hessian: { size: 32, data: new Float64Array(32 * 32) } }, { iters: -1 }, { iters: 1.5 }, { lr: Number.NaN }, { minmaxLr: -1 }];
  for (const options of bad) {
    try {
      quantizeSignRound(weight, 4, 64, params, options);
      assert.unreachable(JSON.stringify(options));
    } catch (error) {
      assert.instance(error, UsageError);
      assert.is((error as UsageError).code, "BAD_ARGUMENT");
    }
  }
});

tuning.run();

// ---------------------------------------------------------------------------------------------

const gradients = suite("SignRound gradients = finite differences of the straight-through surrogate");

/**
 * The loss with round() replaced by "x + its offset at the point" (round_ste's backward view),
 * with the clamps' in/out decisions and the sym sign/branch frozen, evaluated in double.
 */
function surrogateLoss(weight: Float32Array, n: number, k: number, params: IntGroupParams, h: Hessian, point: { v: Float64Array; alpha: Float64Array; beta: Float64Array }, at: { v: Float64Array; alpha: Float64Array; beta: Float64Array }): number {
  const gs = params.groupSize;
  const nGroups = k / gs;
  const maxq = params.sym ? 1 << (params.bits - 1) : maxCode(params.bits);
  const delta = new Float64Array(n * k);
  for (let row = 0; row < n; row++) {
    for (let g = 0; g < nGroups; g++) {
      const gi = row * nGroups + g;
      const begin = row * k + g * gs;
      const group = weight.subarray(begin, begin + gs);
      const wminTmp = Math.min(0, ...group);
      const wmaxTmp = Math.max(0, ...group);
      const fit = fitGridDetailed(wminTmp, wmaxTmp, params, point.beta[gi]!, point.alpha[gi]!);
      const a0 = wmaxTmp * point.alpha[gi]!;
      const b0 = -wminTmp * point.beta[gi]!;
      const raw = (alpha: number, beta: number): number => (params.sym ? (a0 < b0 ? -wminTmp * beta : -wmaxTmp * alpha) : wmaxTmp * alpha - wminTmp * beta) / maxq;
      const s = fit.scale + raw(at.alpha[gi]!, at.beta[gi]!) - raw(point.alpha[gi]!, point.beta[gi]!);
      const zp = params.sym ? 0 : fit.zero + (-wminTmp * at.beta[gi]!) / s - (-wminTmp * point.beta[gi]!) / fit.scale;
      for (let i = 0; i < gs; i++) {
        const w = group[i]!;
        const r0 = roundHalfEven(Math.fround(Math.fround(w / fit.scale) + Math.fround(point.v[begin + i]!)));
        const x0 = w / fit.scale + point.v[begin + i]!;
        const r = r0 + (w / s + at.v[begin + i]! - x0);
        const lo = params.sym ? -maxq : -fit.zero;
        const hi = params.sym ? maxq - 1 : maxq - fit.zero;
        const q = r0 < lo ? lo + (params.sym ? 0 : fit.zero - zp) : r0 > hi ? hi + (params.sym ? 0 : fit.zero - zp) : r;
        delta[begin + i] = s * q - w;
      }
    }
  }
  return layerLoss(delta, n, k, h);
}

for (const sym of [false, true]) {
  gradients(`${sym ? "sym" : "asym"}: ∂loss/∂V, ∂loss/∂α, ∂loss/∂β`, () => {
    const local = mulberry32(SEED + (sym ? 1 : 2));
    const n = 3;
    const k = 16;
    const params: IntGroupParams = { bits: 3, groupSize: 8, sym, scaleDtype: "F32" };
    const weight = randomWeight(local, n, k);
    const h = randomHessian(local, k);
    const layer = new SignRoundLayer(weight, n, k, params, h);
    layer.tuned.value.forEach((_, i, v) => (v[i] = Math.fround(0.6 * (local() - 0.5))));
    layer.tuned.minScale.forEach((_, i, v) => (v[i] = Math.fround(0.6 + 0.4 * local())));
    layer.tuned.maxScale.forEach((_, i, v) => (v[i] = Math.fround(0.6 + 0.4 * local())));
    const point = { v: Float64Array.from(layer.tuned.value), alpha: Float64Array.from(layer.tuned.maxScale), beta: Float64Array.from(layer.tuned.minScale) };
    layer.evaluate();
    const grads: SignRoundGradients = { value: new Float64Array(n * k), minScale: new Float64Array(n * 2), maxScale: new Float64Array(n * 2) };
    layer.step(0, 0, true, grads);
    const check = (key: "v" | "alpha" | "beta", index: number, analytic: number): void => {
      const step = 1e-6;
      const plus = { ...point, [key]: point[key].slice() };
      const minus = { ...point, [key]: point[key].slice() };
      plus[key][index]! += step;
      minus[key][index]! -= step;
      const numeric = (surrogateLoss(weight, n, k, params, h, point, plus) - surrogateLoss(weight, n, k, params, h, point, minus)) / (2 * step);
      assert.ok(Math.abs(numeric - analytic) <= 1e-5 * Math.max(Math.abs(numeric), 1e-3), `${key}[${index}]: analytic ${analytic}, numeric ${numeric}`);
    };
    for (let i = 0; i < n * k; i++) check("v", i, grads.value[i]!);
    for (let gi = 0; gi < n * 2; gi++) {
      check("alpha", gi, grads.maxScale[gi]!);
      check("beta", gi, grads.minScale[gi]!);
    }
  });
}

gradients.run();
