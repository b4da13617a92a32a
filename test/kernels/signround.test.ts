import { spawnSync } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { defaultSignRoundLr, linearDecayLr, quantizeSignRound, type SignRoundOptions, type SignRoundResult } from "../../formats/int-group/quantizers/signround.js";
import { groupExtremes, lossNormaliser, SignRoundLayer, type SignRoundBackend, type SignRoundProblem } from "../../formats/int-group/quantizers/signround-grad.js";
import type { IntBits, IntGroupParams, ScaleDType } from "../../formats/int-group/types.js";
import type { Hessian } from "../../formats/second-order/hessian.js";
import { gemmAdd } from "../../formats/second-order/index.js";
import { gpuSignRound, signRoundLaunches } from "../../kernels/signround/signround-gpu.js";
import { assertSameBits, expectCode } from "../helpers/gpu-assert.js";
import { CLI, FIXTURE_MODEL, tempDir } from "../helpers/paths.js";
import { gaussian, mulberry32, type Rng } from "../helpers/prng.js";
import { gpuSuite } from "../helpers/gpu-suite.js";

/**
 * SignRound's tuning loop through a SignRoundBackend. On the CPU: the plumbing (a backend that
 * wraps the CPU layer gives the default path's result bit for bit) and the host-side launch
 * checks. On a GPU (kernels/signround): without a Hessian the whole run is the CPU's bit for bit;
 * with one, only ΔW·H is summed in another order (cuBLAS or the own kernel), so the losses agree
 * to rounding and a few V whose gradient is within rounding of zero step the other way.
 */

/** Rows of different spread, a few outliers, every third row shifted; a zero run and a −0 where the shape allows. */
function randomWeight(rng: Rng, n: number, k: number): Float32Array {
  const w = new Float32Array(n * k);
  for (let row = 0; row < n; row++) {
    const sigma = 0.02 * [0.5, 1, 2][row % 3]!;
    const shift = row % 3 === 2 ? 1.5 * sigma : 0;
    for (let i = 0; i < k; i++) w[row * k + i] = shift + sigma * gaussian(rng) * (rng() < 0.01 ? 6 : 1);
  }
  if (n > 2) w.fill(0, k, k + Math.min(k, 40)).fill(-0, 2 * k + 1, 2 * k + 2);
  return w;
}

/** H = XᵀX / samples + 1e-3·I for X with correlated features (as test/kernels/gptq-deferred.test.ts). */
function randomHessian(rng: Rng, size: number, samples: number): Hessian {
  const x = new Float64Array(samples * size);
  for (let t = 0; t < samples; t++) for (let j = 0; j < size; j++) x[t * size + j] = rng() - 0.5 + (j > 0 ? 0.7 * x[t * size + j - 1]! : 0);
  const h = new Float64Array(size * size);
  gemmAdd({ data: h, offset: 0, rowStride: size }, { data: x, offset: 0, rowStride: size, transposed: true }, { data: x, offset: 0, rowStride: size }, size, samples, size, 1 / samples);
  for (let i = 0; i < size; i++) h[i * size + i]! += 1e-3;
  return { size, data: h };
}

function problemOf(weight: Float32Array, n: number, k: number, quant: IntGroupParams, hessian?: Hessian): SignRoundProblem {
  return { weight, outFeatures: n, inFeatures: k, quant, hessian, ...groupExtremes(weight, n, k, quant.groupSize), lossNorm: lossNormaliser(n, k, hessian) };
}

/** quantizeSignRound with its loss trace. */
function tuned(weight: Float32Array, n: number, k: number, quant: IntGroupParams, options: SignRoundOptions): { result: SignRoundResult; losses: number[] } {
  const losses: number[] = [];
  const result = quantizeSignRound(weight, n, k, quant, { ...options, onStep: (_, loss) => losses.push(loss) });
  return { result, losses };
}

function assertSameRun(actual: ReturnType<typeof tuned>, expected: ReturnType<typeof tuned>, what: string): void {
  const [a, e] = [actual.result, expected.result];
  assert.ok(a.tensor.codes.every((c, i) => c === e.tensor.codes[i]), `${what}: codes differ`);
  assertSameBits(a.tensor.scales, e.tensor.scales, `${what}: scales`);
  assert.ok(a.tensor.zeros.every((z, i) => z === e.tensor.zeros[i]), `${what}: zeros differ`);
  assertSameBits(a.tuned.value, e.tuned.value, `${what}: V`);
  assertSameBits(a.tuned.minScale, e.tuned.minScale, `${what}: β`);
  assertSameBits(a.tuned.maxScale, e.tuned.maxScale, `${what}: α`);
  assert.is(actual.losses.length, expected.losses.length, `${what}: iterations`);
  const at = actual.losses.findIndex((l, i) => !Object.is(l, expected.losses[i]));
  assert.ok(at < 0, `${what}: loss of iteration ${at}: ${actual.losses[at]} vs ${expected.losses[at]}`);
  assert.equal([a.bestIter, a.bestLoss, a.initialLoss], [e.bestIter, e.bestLoss, e.initialLoss], `${what}: best`);
}

const params = (bits: IntBits, groupSize: number, sym: boolean, scaleDtype: ScaleDType = "F16"): IntGroupParams => ({ bits, groupSize, sym, scaleDtype });
const label = (n: number, k: number, p: IntGroupParams) => `${n}×${k} W${p.bits}G${p.groupSize} ${p.sym ? "sym" : "asym"} ${p.scaleDtype}`;

// ---------------------------------------------------------------------------------------------

const plumbing = suite("signround backend plumbing (CPU)");

plumbing("a backend wrapping the CPU layer gives the default path's result bit for bit, and is released once", () => {
  const rng = mulberry32(0x51);
  const [n, k] = [12, 96];
  const quant = params(3, 32, false);
  const weight = randomWeight(rng, n, k);
  const hessian = randomHessian(rng, k, 2 * k);
  const calls: string[] = [];
  const factory = (problem: SignRoundProblem): SignRoundBackend => {
    const expected = problemOf(weight, n, k, quant, hessian);
    assertSameBits(problem.groupMin, expected.groupMin, "groupMin");
    assertSameBits(problem.groupMax, expected.groupMax, "groupMax");
    assert.is(problem.lossNorm, expected.lossNorm);
    const layer = new SignRoundLayer(problem.weight, problem.outFeatures, problem.inFeatures, problem.quant, problem.hessian);
    return {
      evaluate() {
        calls.push("evaluate");
        return layer.evaluate();
      },
      step(lrValue, lrMinmax, tuneMinmax) {
        calls.push("step");
        layer.step(lrValue, lrMinmax, tuneMinmax);
      },
      keepBest() {
        calls.push("keepBest");
        layer.keepBest();
      },
      best() {
        calls.push("best");
        return layer.best();
      },
      release() {
        calls.push("release");
      },
    };
  };
  assertSameRun(tuned(weight, n, k, quant, { hessian, iters: 30, backend: factory }), tuned(weight, n, k, quant, { hessian, iters: 30 }), "wrapped");
  assert.equal(calls.slice(0, 3), ["evaluate", "keepBest", "step"]);
  assert.is(calls.filter((c) => c === "evaluate").length, 30);
  assert.equal(calls.slice(-2), ["best", "release"]);
  calls.length = 0;
  assert.throws(() => quantizeSignRound(weight, n, k, quant, { hessian, iters: 5, backend: factory, onStep: () => { throw new Error("stop"); } }), /stop/);
  assert.equal(calls, ["evaluate", "keepBest", "release"], "released when the loop throws");
});

plumbing("an empty layer never reaches the backend", () => {
  const result = quantizeSignRound(new Float32Array(0), 0, 64, params(4, 32, true), { iters: 3, backend: () => {
      throw new Error("the factory was called for an empty layer");
    },
  });
  assert.is(result.tensor.codes.length, 0);
});

plumbing("launch checks: one thread per group, weight and row; bad problems refused with LAUNCH_REFUSED", () => {
  const rng = mulberry32(0x52);
  const weight = randomWeight(rng, 5, 100);
  const good = problemOf(weight, 5, 100, params(4, 32, true), randomHessian(rng, 100, 50));
  const launches = signRoundLaunches(good, 2 ** 40);
  assert.equal([launches.perGroup.grid[0], launches.perWeight.grid[0], launches.perRow.grid[0]], [1, 2, 1]);
  const bad: [string, Partial<SignRoundProblem>][] = [
    ["no rows", { outFeatures: 0, weight: new Float32Array(0) }],
    ["weight length", { weight: weight.subarray(1) }],
    ["bits", { quant: { ...good.quant, bits: 5 as IntBits } }],
    ["group size", { quant: { ...good.quant, groupSize: 0 } }],
    ["scale dtype", { quant: { ...good.quant, scaleDtype: "F8" as ScaleDType } }],
    ["extremes", { groupMin: good.groupMin.subarray(1) }],
    ["Hessian size", { hessian: { size: 99, data: new Float64Array(99 * 99) } }],
    ["loss normaliser", { lossNorm: 0 }],
  ];
  for (const [what, change] of bad) expectCode(() => signRoundLaunches({ ...good, ...change }, 2 ** 40), "LAUNCH_REFUSED", what);
  expectCode(() => signRoundLaunches(good, 1000), "LAUNCH_REFUSED", "device memory");
});

plumbing.run();

// ---------------------------------------------------------------------------------------------

const { gpu, available } = await gpuSuite("signround on the GPU");
if (available) {

  // K odd, K not a multiple of the group, per-channel, small groups; every width, both grids.
  const shapes: [number, number, number][] = [[7, 100, 32], [5, 129, 64], [16, 256, 128], [3, 77, 77], [33, 64, 16]];
  gpu("data-free: codes, scales, zeros, tuned V/α/β and the loss trace equal the CPU's bit for bit", ({ engine }) => {
    let run = 0;
    for (const [n, k, groupSize] of shapes) {
      for (const bits of [2, 3, 4, 8] as IntBits[]) {
        for (const sym of [false, true]) {
          const scaleDtype = (["F16", "BF16", "F32"] as const)[run % 3]!;
          const quant = params(bits, groupSize, sym, scaleDtype);
          const weight = randomWeight(mulberry32(0x600 + run), n, k);
          const iters = 20 + (run++ % 31);
          assertSameRun(tuned(weight, n, k, quant, { iters, backend: gpuSignRound(engine) }), tuned(weight, n, k, quant, { iters }), label(n, k, quant));
        }
      }
    }
  });

  gpu("data-free: after 40 steps the current V, α, β (not only the best) equal the CPU layer's", ({ engine }) => {
    for (const quant of [params(2, 64, false), params(3, 32, true, "BF16")]) {
      const [n, k] = [24, 200];
      const problem = problemOf(randomWeight(mulberry32(0x700 + quant.bits), n, k), n, k, quant);
      const cpu = new SignRoundLayer(problem.weight, n, k, quant, undefined);
      const device = gpuSignRound(engine)(problem);
      try {
        const lr = linearDecayLr(defaultSignRoundLr(40, quant.bits), 40);
        for (let t = 0; t < 40; t++) {
          assert.is(device.evaluate(), cpu.evaluate(), `${label(n, k, quant)}: loss of step ${t}`);
          device.step(lr[t]!, lr[t]!, true);
          cpu.step(lr[t]!, lr[t]!, true);
        }
        device.keepBest();
        cpu.keepBest();
        const [d, c] = [device.best(), cpu.best()];
        assertSameBits(d.value, c.value, "V");
        assertSameBits(d.minScale, c.minScale, "β");
        assertSameBits(d.maxScale, c.maxScale, "α");
        assert.ok(c.value.some((v) => v !== 0), "V moved");
      } finally {
        device.release();
      }
    }
  });

  // ΔW·H is the one product summed in another order (cuBLAS / the own kernel, FMA, blocked): the
  // first loss agrees to float64 rounding; later a V whose gradient g·s is within rounding of zero
  // may step the other way, so the runs drift apart slowly and only the best loss is compared.
  gpu("with a Hessian: first loss within 1e-12, best loss after 50 steps within 1e-6, < 0.5 % of codes differ", ({ engine }) => {
    const [n, k] = [96, 384];
    const rng = mulberry32(0x800);
    const hessian = randomHessian(rng, k, 2 * k);
    for (const quant of [params(4, 128, false), params(3, 64, true), params(2, 64, false)]) {
      const weight = randomWeight(rng, n, k);
      const cpu = quantizeSignRound(weight, n, k, quant, { hessian, iters: 50 });
      const device = quantizeSignRound(weight, n, k, quant, { hessian, iters: 50, backend: gpuSignRound(engine) });
      const relative = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);
      const differing = cpu.tensor.codes.reduce((count, c, i) => count + (c === device.tensor.codes[i] ? 0 : 1), 0);
      console.log(`  ${label(n, k, quant)}: first loss rel ${relative(device.initialLoss, cpu.initialLoss).toExponential(2)}, best ${relative(device.bestLoss, cpu.bestLoss).toExponential(2)} (iter ${device.bestIter}/${cpu.bestIter}), ${differing} codes differ`);
      assert.ok(relative(device.initialLoss, cpu.initialLoss) <= 1e-12, `initial ${device.initialLoss} vs ${cpu.initialLoss}`);
      assert.ok(relative(device.bestLoss, cpu.bestLoss) <= 1e-6, `best ${device.bestLoss} vs ${cpu.bestLoss}`);
      assert.ok(differing < 0.005 * n * k, `${differing} codes differ`);
    }
  });

  gpu("step before evaluate, and any call after release, are refused with LAUNCH_REFUSED", ({ engine }) => {
    const device = gpuSignRound(engine)(problemOf(randomWeight(mulberry32(0x900), 4, 64), 4, 64, params(4, 32, false)));
    expectCode(() => device.step(0.01, 0.01, true), "LAUNCH_REFUSED", "step first");
    device.evaluate();
    expectCode(() => device.step(Number.NaN, 0.01, true), "LAUNCH_REFUSED", "NaN lr");
    device.release();
    for (const call of [() => device.evaluate(), () => device.keepBest(), () => device.best()]) expectCode(call, "LAUNCH_REFUSED", "after release");
  });

}

// ---------------------------------------------------------------------------------------------

const cli = suite("quantize --method signround --device");
cli(`--device cuda: ${available ? "data-free, the file equals --device cpu's byte for byte" : "refused with NO_DEVICE when no GPU is usable"}`, async () => {
  const dir = await tempDir("lmpack-signround-");
  try {
    const quantize = (device: string, out: string) => spawnSync(process.execPath, [CLI, "quantize", FIXTURE_MODEL, "--method", "signround", "--iters", "8", "--bits", "3", "--group-size", "64", "--device", device, "--to", "lmpack", "--out", out], { encoding: "utf8" });
    const onGpu = quantize("cuda", join(dir.path, "gpu.lmpack"));
    if (!available) {
      assert.is(onGpu.status, 2, onGpu.stderr);
      assert.match(onGpu.stderr, /NO_DEVICE/);
      return;
    }
    assert.is(onGpu.status, 0, onGpu.stderr);
    assert.match(onGpu.stderr, /SignRound tuning on NVIDIA/);
    const onCpu = quantize("cpu", join(dir.path, "cpu.lmpack"));
    assert.is(onCpu.status, 0, onCpu.stderr);
    assert.match(onCpu.stderr, /SignRound tuning on cpu/);
    const [a, b] = await Promise.all([readFile(join(dir.path, "gpu.lmpack")), readFile(join(dir.path, "cpu.lmpack"))]);
    assert.ok(a.equals(b), "the GPU's .lmpack differs from the CPU's");
  } finally {
    await dir.cleanup();
  }
});

gpu.run();
cli.run();
