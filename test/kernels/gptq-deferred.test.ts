import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { quantizeGptq } from "../../formats/int-group/quantizers/gptq.js";
import { gemmAdd, type DeferredUpdates } from "../../formats/second-order/index.js";
import { gpuDeferredUpdates } from "../../kernels/linalg/gptq-deferred.js";
import { mulberry32, type Rng } from "../helpers/prng.js";
import { CLI, FIXTURE_MODEL, tempDir } from "../helpers/paths.js";
import { gpuSuite } from "../helpers/gpu-suite.js";

/**
 * GPTQ's deferred updates away from the host weight (formats/second-order/gptq-loop.ts,
 * DeferredUpdates). On the CPU, an emulated device (a separate copy of the weight and the same
 * gemmAdd) must give the default path's result bit for bit: that proves the loop fetches every
 * column it reads. On a GPU, kernels/linalg must agree with the CPU to float64 rounding.
 */

/** H = XᵀX / samples + 1e-3·I for X with correlated features: a realistic, well-conditioned Hessian. */
function hessian(rng: Rng, size: number, samples: number): Float64Array {
  const x = new Float64Array(samples * size);
  for (let t = 0; t < samples; t++) for (let j = 0; j < size; j++) x[t * size + j] = rng() - 0.5 + (j > 0 ? 0.7 * x[t * size + j - 1]! : 0);
  const h = new Float64Array(size * size);
  gemmAdd({ data: h, offset: 0, rowStride: size }, { data: x, offset: 0, rowStride: size, transposed: true }, { data: x, offset: 0, rowStride: size }, size, samples, size, 1 / samples);
  for (let i = 0; i < size; i++) h[i * size + i]! += 1e-3;
  return h;
}

/** A "device" in host memory: its own copy of the weight, updated by the same gemmAdd. */
function emulatedDevice(): DeferredUpdates & { fetched: number } {
  let device: Float64Array = new Float64Array(0);
  let factor: Float64Array = new Float64Array(0);
  let [rows, size] = [0, 0];
  const emulated = {
    fetched: 0,
    begin(weightT: Float64Array, u: Float64Array, r: number, s: number) {
      [device, factor, rows, size] = [weightT.slice(), u, r, s];
    },
    fetch(weightT: Float64Array, from: number, to: number) {
      weightT.set(device.subarray(from * rows, to * rows), from * rows);
      emulated.fetched += to - from;
    },
    apply(errors: Float64Array, from: number, to: number, target: number) {
      if (to <= from || target >= size) return;
      gemmAdd({ data: device, offset: target * rows, rowStride: rows }, { data: factor, offset: from * size + target, rowStride: size, transposed: true }, { data: errors, offset: 0, rowStride: rows }, size - target, to - from, rows, -1);
    },
    end(weightT: Float64Array, from: number) {
      emulated.fetch(weightT, from, size);
    },
  };
  return emulated;
}

const params = { bits: 4 as const, groupSize: 64, sym: false, scaleDtype: "F16" as const };
const layer = (seed: number, rows: number, size: number) => {
  const rng = mulberry32(seed);
  return { weight: Float32Array.from({ length: rows * size }, () => rng() - 0.5), h: { size, data: hessian(rng, size, 2 * size) } };
};

const host = suite("gptq deferred updates: the loop's fetches (emulated device)");
for (const actOrder of [false, true]) {
  host(`200×384 4-bit g64${actOrder ? " act-order" : ""}, block 128: bit-identical codes, scales and loss to the default path`, () => {
    const { weight, h } = layer(actOrder ? 2 : 1, 200, 384);
    const reference = quantizeGptq(weight, 200, 384, h, { params, actOrder });
    const device = emulatedDevice();
    const moved = quantizeGptq(weight, 200, 384, h, { params, actOrder, deferred: device });
    assert.ok(moved.tensor.codes.every((c, i) => c === reference.tensor.codes[i]), "codes differ");
    assert.ok(moved.tensor.scales.every((s, i) => Object.is(s, reference.tensor.scales[i])), "scales differ");
    assert.is(moved.hessianLoss, reference.hessianLoss);
    assert.is(device.fetched, 384 - 128, "every column after the first block fetched once");
  });
}
// g100 makes blocks end early (a group straddles the block's end: the columns the block already
// updated must not be fetched back stale); g256 and per-channel groups are wider than a block (the
// group's columns past the block's end must be fetched before its grid is fitted).
for (const groupSize of [100, 256, 384]) {
  host(`200×384 4-bit g${groupSize} act-order, block 128: bit-identical codes, scales and loss to the default path`, () => {
    const { weight, h } = layer(groupSize, 200, 384);
    const options = { params: { ...params, groupSize }, actOrder: true };
    const reference = quantizeGptq(weight, 200, 384, h, options);
    const moved = quantizeGptq(weight, 200, 384, h, { ...options, deferred: emulatedDevice() });
    assert.ok(moved.tensor.codes.every((c, i) => c === reference.tensor.codes[i]), "codes differ");
    assert.ok(moved.tensor.scales.every((s, i) => Object.is(s, reference.tensor.scales[i])), "scales differ");
    assert.ok(Object.is(moved.hessianLoss, reference.hessianLoss), `loss ${moved.hessianLoss} vs ${reference.hessianLoss}`);
  });
}
host.run();

const { gpu, available } = await gpuSuite("gptq deferred updates on the GPU");
if (available) {
  gpu("1000×1536 4-bit g64 act-order: codes equal the CPU's but for rounding-boundary ties, loss within 1e-9", async ({ engine }) => {
    const { weight, h } = layer(3, 1000, 1536);
    const cpu = quantizeGptq(weight, 1000, 1536, h, { params, actOrder: true });
    const deferred = gpuDeferredUpdates(engine);
    const gpuResult = quantizeGptq(weight, 1000, 1536, h, { params, actOrder: true, deferred });
    let differing = 0;
    for (let i = 0; i < cpu.tensor.codes.length; i++) if (cpu.tensor.codes[i] !== gpuResult.tensor.codes[i]) differing++;
    console.log(`  ${differing} of ${cpu.tensor.codes.length} codes differ; loss CPU ${cpu.hessianLoss.toExponential(12)}, GPU ${gpuResult.hessianLoss.toExponential(12)}`);
    assert.ok(differing <= cpu.tensor.codes.length * 1e-5, `${differing} codes differ`);
    assert.ok(Math.abs(gpuResult.hessianLoss - cpu.hessianLoss) <= 1e-9 * cpu.hessianLoss, `loss ${gpuResult.hessianLoss} vs ${cpu.hessianLoss}`);
  });
}
const cli = suite("quantize --device");
cli(`--device cuda: ${available ? "the GPTQ loop runs on the GPU and the result verifies" : "refused with NO_DEVICE when no GPU is usable"}`, async () => {
  const dir = await tempDir("lmpack-device-");
  try {
    const out = join(dir.path, "gptq.lmpack");
    const run = spawnSync(process.execPath, [CLI, "quantize", FIXTURE_MODEL, "--method", "gptq", "--hessians", "embedding-proxy", "--device", "cuda", "--to", "lmpack", "--out", out], { encoding: "utf8" });
    if (!available) {
      assert.is(run.status, 2, run.stderr);
      assert.match(run.stderr, /NO_DEVICE/);
      return;
    }
    assert.is(run.status, 0, run.stderr);
    assert.match(run.stderr, /GPTQ factorization and loop on NVIDIA/);
    const verify = spawnSync(process.execPath, [CLI, "verify", out, "--against", FIXTURE_MODEL, "--device", "cuda"], { encoding: "utf8" });
    assert.is(verify.status, 0, verify.stdout + verify.stderr);
  } finally {
    await dir.cleanup();
  }
});

gpu.run();
cli.run();
