import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { calibrateHessians, type HessianProducts } from "../../converters/hessians/calibrate.js";
import { openHessianStore, type HessianEntry } from "../../converters/hessians/store.js";
import { openCheckpoint } from "../../converters/open.js";
import { gemmAdd } from "../../formats/second-order/index.js";
import type { GpuEngine } from "../../kernels/engine.js";
import { GpuHessians, syrkLaunch } from "../../kernels/linalg/hessian-accumulate.js";
import { LlamaForward } from "../../model/llama-forward.js";
import { loadLlamaWeights } from "../../model/llama-weights.js";
import { CLI, FIXTURE_MODEL, SHARED_DIR, tempDir } from "../helpers/paths.js";
import { mulberry32 } from "../helpers/prng.js";
import { expectCode } from "../helpers/gpu-assert.js";
import { gpuSuite } from "../helpers/gpu-suite.js";

/**
 * Calibration's H += XᵀX away from the host H (converters/hessians/calibrate.ts,
 * HessianProducts). On the CPU, an emulated device (its own copy of every H, the same gemmAdd)
 * must give the default path's Hessians bit for bit on the embedded fixture model: that proves
 * calibration routes every product through the interface and reads H back only from result().
 * On a GPU, kernels/linalg's lq_syrk_f32_to_f64_add must agree with the CPU given the same
 * float32 X within float64 summation rounding, |ΔH| ≤ tokens · 2⁻⁵² · Σ_t |x_ti · x_tj| (each
 * side's recursive sum errs by at most (tokens − 1) · 2⁻⁵³ of that sum), and must equal its own
 * summation order (one sequential sum per batch, in token order) bit for bit on sampled rows.
 */

/** A "device" in host memory: one H per key, updated by the default path's gemmAdd on transform(X). */
function emulatedProducts(transform?: (v: number) => number): HessianProducts & { adds: number } {
  const hessians = new Map<string, Float64Array>();
  const emulated = {
    adds: 0,
    add(key: string, input: Float64Array, tokens: number, size: number) {
      let h = hessians.get(key);
      if (h === undefined) hessians.set(key, (h = new Float64Array(size * size)));
      const x = transform === undefined ? input : input.map(transform);
      gemmAdd({ data: h, offset: 0, rowStride: size }, { data: x, offset: 0, rowStride: size, transposed: true }, { data: x, offset: 0, rowStride: size }, size, tokens, size);
      emulated.adds++;
    },
    result(key: string, into: Float64Array) {
      into.set(hessians.get(key) ?? new Float64Array(into.length));
    },
  };
  return emulated;
}

const checkpoint = await openCheckpoint(FIXTURE_MODEL);
const weights = await loadLlamaWeights(checkpoint).finally(() => checkpoint.close());
/** Three short windows of seeded token ids: 16, 37 and 64 tokens. */
const WINDOWS = [16, 37, 64].map((length, w) => {
  const rng = mulberry32(100 + w);
  return Int32Array.from({ length }, () => Math.floor(rng() * weights.config.vocabSize));
});
const TOKENS = WINDOWS.reduce((sum, w) => sum + w.length, 0);
const calibrate = (products?: HessianProducts) => calibrateHessians(new LlamaForward(weights, 64), WINDOWS, undefined, products);

const host = suite("hessian accumulate: calibration through HessianProducts (emulated device)");
host("fixture model, windows of 16, 37, 64 tokens: bit-identical Hessians to the default path", () => {
  const reference = calibrate();
  const device = emulatedProducts();
  const moved = calibrate(device);
  assert.equal(moved.map((e) => [e.name, e.aliases, e.hessian.size, e.hessian.nSamples]), reference.map((e) => [e.name, e.aliases, e.hessian.size, e.hessian.nSamples]));
  moved.forEach((e, k) => assert.ok(Buffer.from(e.hessian.data.buffer).equals(Buffer.from(reference[k]!.hessian.data.buffer)), `${e.name}: H differs`));
  assert.is(device.adds, WINDOWS.length * reference.length, "one product per window and layer input");
  assert.is(reference[0]!.hessian.nSamples, TOKENS);
});
host.run();

/** An engine any use of which throws: these refusals must come before the GPU is touched. */
const untouchable = new Proxy({}, { get: (_, key) => { throw new Error(`the host checks used engine.${String(key)}`); } }) as GpuEngine;
const refusals = suite("hessian accumulate: launch shape and host refusals (LAUNCH_REFUSED before any device call)");
refusals("grid ⌈d/64⌉ × ⌈d/64⌉ of 256-thread blocks", () => {
  for (const [d, tiles] of [[1, 1], [64, 1], [65, 2], [4096, 64], [11008, 172]] as const) assert.equal(syrkLaunch(d, 2048, d, 2048 * d, 1), { grid: [tiles, tiles], block: [256] });
});
const REFUSED: [string, () => unknown][] = [
  ["d = 0", () => syrkLaunch(0, 10, 0, 0, 1)],
  ["fractional d", () => syrkLaunch(64.5, 10, 65, 650, 1)],
  ["0 tokens at the launch", () => syrkLaunch(64, 0, 64, 0, 1)],
  ["a row stride shorter than a row", () => syrkLaunch(64, 10, 63, 640, 1)],
  ["X one float short of its last row", () => syrkLaunch(64, 10, 70, 9 * 70 + 63, 1)],
  ["a NaN scale", () => syrkLaunch(64, 10, 64, 640, Number.NaN)],
  ["65536 tiles per side (gridDim.y ≤ 65535)", () => syrkLaunch(65536 * 64, 1, 65536 * 64, 65536 * 64, 1)],
  ["accumulate: X shorter than tokens × size", () => new GpuHessians(untouchable).accumulate("h", new Float32Array(99), 10, 10)],
  ["accumulate: size 0", () => new GpuHessians(untouchable).accumulate("h", new Float32Array(10), 10, 0)],
  ["accumulate: fractional tokens", () => new GpuHessians(untouchable).accumulate("h", new Float32Array(100), 9.5, 10)],
  ["add: float64 X shorter than tokens × size", () => new GpuHessians(untouchable).add("h", new Float64Array(99), 10, 10)],
];
for (const [name, run] of REFUSED) refusals(name, () => expectCode(run, "LAUNCH_REFUSED"));
refusals.run();

/** The max over elements of |a − b| / S and whether a is symmetric bit for bit. */
function compare(a: Float64Array, b: Float64Array, s: Float64Array, size: number): { worst: number; symmetric: boolean } {
  let worst = 0;
  let symmetric = true;
  for (let i = 0; i < size; i++) {
    for (let j = 0; j < size; j++) {
      const k = i * size + j;
      worst = Math.max(worst, s[k] === 0 ? (a[k] === b[k] ? 0 : Infinity) : Math.abs(a[k]! - b[k]!) / s[k]!);
      if (!Object.is(a[k], a[j * size + i])) symmetric = false;
    }
  }
  return { worst, symmetric };
}

/** CPU H and S = Σ|x_i x_j| of float32 batches, by the calibration path's gemmAdd. */
function cpuProducts(batches: Float32Array[], size: number, scale: number): { h: Float64Array; s: Float64Array } {
  const h = new Float64Array(size * size);
  const s = new Float64Array(size * size);
  for (const x32 of batches) {
    const tokens = x32.length / size;
    const x = Float64Array.from(x32);
    const ax = x.map(Math.abs);
    gemmAdd({ data: h, offset: 0, rowStride: size }, { data: x, offset: 0, rowStride: size, transposed: true }, { data: x, offset: 0, rowStride: size }, size, tokens, size, scale);
    gemmAdd({ data: s, offset: 0, rowStride: size }, { data: ax, offset: 0, rowStride: size, transposed: true }, { data: ax, offset: 0, rowStride: size }, size, tokens, size, Math.abs(scale));
  }
  return { h, s };
}

const { gpu, available } = await gpuSuite("hessian accumulate on the GPU");
if (available) {
  // 3000 × 1024 in uneven batches (one of a single token); 333 features leave partial edge tiles; scale 0.25 is exact.
  for (const [size, sizes, scale] of [[1024, [1000, 1, 999, 1000], 1], [333, [500, 17], 0.25]] as const) {
    const tokens = sizes.reduce((a, b) => a + b, 0);
    gpu(`random float32 X ${tokens}×${size} in batches of ${sizes.join(", ")}, scale ${scale}: |ΔH| ≤ tokens·2⁻⁵²·Σ|x_i x_j|, symmetric, the kernel's own order bit for bit`, ({ engine }) => {
      const rng = mulberry32(size);
      // Mixed magnitudes (a quarter of the features 1000× smaller) so that cancellation shows.
      const batches = sizes.map((n) => Float32Array.from({ length: n * size }, (_, k) => (rng() - 0.5) * (k % size < size / 4 ? 1e-3 : 1)));
      const products = new GpuHessians(engine);
      try {
        for (const x of batches) products.accumulate("x", x, x.length / size, size, scale);
        const h = products.download("x");
        const cpu = cpuProducts(batches, size, scale);
        const { worst, symmetric } = compare(h, cpu.h, cpu.s, size);
        console.log(`  worst |ΔH| / Σ|x_i x_j| = ${worst.toExponential(3)} (bound ${(tokens * 2 ** -52).toExponential(3)})`);
        assert.ok(worst <= tokens * 2 ** -52, `worst ${worst}`);
        assert.ok(symmetric, "GPU H not symmetric bit for bit");
        // The kernel's summation: per batch one sequential float64 sum in token order (float32
        // products are exact), then H = fma(scale, sum, H); scale is a power of two, so JavaScript's
        // h + scale·sum rounds the same.
        for (const i of [0, 63, 64, size - 1, Math.floor(rng() * size)]) {
          for (let j = 0; j < size; j++) {
            let expected = 0;
            for (const x of batches) {
              let sum = 0;
              for (let t = 0; t < x.length / size; t++) sum += x[t * size + i]! * x[t * size + j]!;
              expected += scale * sum;
            }
            if (!Object.is(h[i * size + j], expected)) assert.unreachable(`H[${i}][${j}] = ${h[i * size + j]}, the kernel's order gives ${expected}`);
          }
        }
      } finally {
        products.release();
      }
    });
  }
  gpu("fixture calibration through GpuHessians: within tokens·2⁻⁵² of the CPU on float32 inputs, within 2⁻²² of the float64 store", ({ engine }) => {
    const products = new GpuHessians(engine);
    try {
      const onGpu = calibrate(products);
      const sums = (e: HessianEntry[]) => new Map(e.map((x) => [x.name, x.hessian.data]));
      const reference = sums(calibrate());
      const rounded = sums(calibrate(emulatedProducts(Math.fround)));
      const absRounded = sums(calibrate(emulatedProducts((v) => Math.abs(Math.fround(v)))));
      const abs = sums(calibrate(emulatedProducts(Math.abs)));
      let [tight, loose] = [0, 0];
      for (const e of onGpu) {
        assert.is(e.hessian.nSamples, TOKENS);
        tight = Math.max(tight, compare(e.hessian.data, rounded.get(e.name)!, absRounded.get(e.name)!, e.hessian.size).worst);
        loose = Math.max(loose, compare(e.hessian.data, reference.get(e.name)!, abs.get(e.name)!, e.hessian.size).worst);
      }
      console.log(`  worst |ΔH| / Σ|x_i x_j|: ${tight.toExponential(3)} against float32 X on the CPU, ${loose.toExponential(3)} against the float64 store`);
      assert.ok(tight <= TOKENS * 2 ** -52, `against float32 X: ${tight}`);
      assert.ok(loose <= 2 ** -22 + TOKENS * 2 ** -52, `against the store: ${loose}`);
    } finally {
      products.release();
    }
  });
  gpu("refused: another size under a known key, H larger than the device's memory, a key never added to", ({ engine }) => {
    const products = new GpuHessians(engine);
    try {
      products.accumulate("h", new Float32Array(64 * 3), 3, 64);
      expectCode(() => products.accumulate("h", new Float32Array(65 * 3), 3, 65), "LAUNCH_REFUSED");
      const tooLarge = Math.ceil(Math.sqrt(engine.context.info.totalBytes / 8)) + 64;
      expectCode(() => products.accumulate("big", new Float32Array(tooLarge), 1, tooLarge), "LAUNCH_REFUSED");
      expectCode(() => products.download("never"), "LAUNCH_REFUSED");
      expectCode(() => products.download("big"), "LAUNCH_REFUSED");
      assert.is(products.download("h").length, 64 * 64);
    } finally {
      products.release();
    }
  });
}

const cli = suite("calibrate --device");
cli(`--device cpu names the CPU; --device cuda ${available ? "accumulates on the GPU" : "is refused with NO_DEVICE when no GPU is usable"}`, async () => {
  const dir = await tempDir("lmpack-calibrate-device-");
  try {
    const args = (device: string, out: string) => [CLI, "calibrate", FIXTURE_MODEL, "--text", join(SHARED_DIR, "text", "docs-valid.txt"), "--samples", "2", "--seq-len", "32", "--device", device, "--out", join(dir.path, out)];
    const cpu = spawnSync(process.execPath, [...args("cpu", "cpu"), "--json"], { encoding: "utf8" });
    assert.is(cpu.status, 0, cpu.stderr);
    assert.is((JSON.parse(cpu.stdout) as { device: string }).device, "cpu");
    const run = spawnSync(process.execPath, args("cuda", "cuda"), { encoding: "utf8" });
    if (!available) {
      assert.is(run.status, 2, run.stderr);
      assert.match(run.stderr, /NO_DEVICE/);
      return;
    }
    assert.is(run.status, 0, run.stderr);
    assert.match(run.stderr, /forward and H \+= XᵀX on NVIDIA/);
    assert.match(run.stderr, /accumulated on NVIDIA/);
    // The forward ran on the GPU too (float64, other GEMM order) and X was rounded to float32 for
    // the accumulation: every H within 1e-6 of the CPU's, relative to its largest entry.
    const store = await openHessianStore(join(dir.path, "cuda"));
    const reference = await openHessianStore(join(dir.path, "cpu"));
    try {
      for (const linear of [weights.layers[0]!.q, weights.layers[3]!.o, weights.layers[3]!.up, weights.layers[3]!.down]) {
        const { name, inFeatures: size } = linear;
        const gpuH = await store.get(name, size);
        const cpuH = await reference.get(name, size);
        assert.is(gpuH?.nSamples, 64, name);
        let largest = 0;
        let worst = 0;
        cpuH!.data.forEach((value, i) => {
          largest = Math.max(largest, Math.abs(value));
          worst = Math.max(worst, Math.abs(value - gpuH!.data[i]!));
        });
        assert.ok(worst <= 1e-6 * largest, `${name}: worst |ΔH| ${worst} against max |H| ${largest}`);
      }
    } finally {
      await store.close();
      await reference.close();
    }
  } finally {
    await dir.cleanup();
  }
});

gpu.run();
cli.run();

