#!/usr/bin/env node
/**
 * GPTQ on one square layer (default 4096×4096, 4-bit g128, act-order), CPU against GPU in the
 * same run. The GPU path moves the loop's deferred updates, nearly all of its flops, to
 * kernels/linalg (gptq-deferred.ts); the Hessian's preparation (damping, Cholesky, inverse
 * factor) and the in-block column work stay on the CPU in both. Prints wall times per phase and
 * how many codes differ (float64 sums in another order: ties at rounding boundaries).
 *
 *   node dist/bench/gpu-gptq.js [--size 4096] [--samples 8192]
 */
import { quantizeGptq } from "../formats/int-group/quantizers/gptq.js";
import { gemmAdd } from "../formats/second-order/index.js";
import { GpuEngine } from "../kernels/engine.js";
import { gpuDeferredUpdates } from "../kernels/linalg/gptq-deferred.js";

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

const size = arg("size", 4096);
const samples = arg("samples", 2 * size);
let state = 11;
const random = () => ((state = (state * 1664525 + 1013904223) >>> 0) / 2 ** 32);

let started = performance.now();
const x = new Float64Array(samples * size);
for (let t = 0; t < samples; t++) for (let j = 0; j < size; j++) x[t * size + j] = random() - 0.5 + (j > 0 ? 0.7 * x[t * size + j - 1]! : 0);
const h = new Float64Array(size * size);
gemmAdd({ data: h, offset: 0, rowStride: size }, { data: x, offset: 0, rowStride: size, transposed: true }, { data: x, offset: 0, rowStride: size }, size, samples, size, 1 / samples);
const weight = Float32Array.from({ length: size * size }, () => random() - 0.5);
const hessianSeconds = (performance.now() - started) / 1000;
const params = { bits: 4 as const, groupSize: 128, sym: false, scaleDtype: "F16" as const };

const engine = await GpuEngine.open();
started = performance.now();
const gpu = quantizeGptq(weight, size, size, { size, data: h }, { params, actOrder: true, deferred: gpuDeferredUpdates(engine) });
const gpuSeconds = (performance.now() - started) / 1000;
started = performance.now();
const cpu = quantizeGptq(weight, size, size, { size, data: h }, { params, actOrder: true });
const cpuSeconds = (performance.now() - started) / 1000;
let differing = 0;
for (let i = 0; i < cpu.tensor.codes.length; i++) if (cpu.tensor.codes[i] !== gpu.tensor.codes[i]) differing++;

console.log(`# GPTQ ${size}×${size} 4-bit g128 act-order on ${engine.describe()} (Hessian from ${samples} samples, built on the CPU in ${hessianSeconds.toFixed(1)} s)\n`);
console.log("| path | wall s | Hessian loss | codes differing from the CPU's |");
console.log("|---|---|---|---|");
console.log(`| CPU (float64, WebAssembly SIMD products) | ${cpuSeconds.toFixed(2)} | ${cpu.hessianLoss.toExponential(9)} | — |`);
console.log(`| GPU deferred updates (kernels/linalg) | ${gpuSeconds.toFixed(2)} | ${gpu.hessianLoss.toExponential(9)} | ${differing} of ${cpu.tensor.codes.length} |`);
engine.close();
