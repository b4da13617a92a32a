#!/usr/bin/env node
/**
 * SignRound on one square layer (default 4096×4096), W4G128 and W2G64 asymmetric, with a layer
 * Hessian: 200 tuning steps on the GPU (kernels/signround, ΔW·H through gemmF64) against the CPU
 * path in the same run. A CPU step costs one N·K² float64 product (about 10 s at 4096², WebAssembly
 * SIMD on one core), so the CPU runs only `--cpu-steps` steps; its 200-step time is that per-step
 * time × 200, labelled as extrapolated. The CPU's losses of those first steps are compared with
 * the GPU's (they agree to float64 rounding: only ΔW·H is summed in another order).
 *
 *   node dist/bench/gpu-signround.js [--size 4096] [--samples 2048] [--iters 200] [--cpu-steps 3]
 */
import { defaultSignRoundLr, linearDecayLr, quantizeSignRound, type SignRoundResult } from "../formats/int-group/quantizers/signround.js";
import { SignRoundLayer } from "../formats/int-group/quantizers/signround-grad.js";
import type { IntGroupParams } from "../formats/int-group/types.js";
import { gemmAdd } from "../formats/second-order/index.js";
import { GpuEngine } from "../kernels/engine.js";
import { gemmBackend } from "../kernels/linalg/dgemm.js";
import { gpuSignRound } from "../kernels/signround/signround-gpu.js";

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

const size = arg("size", 4096);
const samples = arg("samples", size / 2);
const iters = arg("iters", 200);
const cpuSteps = arg("cpu-steps", 3);
let state = 11;
const random = () => ((state = (state * 1664525 + 1013904223) >>> 0) / 2 ** 32);

// H = XᵀX / samples of correlated features, as bench/gpu-gptq.ts builds it (fewer samples: SignRound
// needs no inverse, so a rank-deficient H serves as well, and it is built in a quarter of the time).
const hessianStarted = performance.now();
const x = new Float64Array(samples * size);
for (let t = 0; t < samples; t++) for (let j = 0; j < size; j++) x[t * size + j] = random() - 0.5 + (j > 0 ? 0.7 * x[t * size + j - 1]! : 0);
const h = new Float64Array(size * size);
gemmAdd({ data: h, offset: 0, rowStride: size }, { data: x, offset: 0, rowStride: size, transposed: true }, { data: x, offset: 0, rowStride: size }, size, samples, size, 1 / samples);
const hessian = { size, data: h };
const weight = Float32Array.from({ length: size * size }, () => random() - 0.5);
const hessianSeconds = (performance.now() - hessianStarted) / 1000;

const engine = await GpuEngine.open();

interface GpuRun {
  result: SignRoundResult;
  losses: number[];
  wallSeconds: number;
  /** From the first iteration's callback to the last's: the loop alone, per step. */
  stepSeconds: number;
}

function onGpu(params: IntGroupParams): GpuRun {
  const losses: number[] = [];
  const stamps: number[] = [];
  const started = performance.now();
  const result = quantizeSignRound(weight, size, size, params, {
    hessian,
    iters,
    backend: gpuSignRound(engine),
    onStep: (_, loss) => {
      losses.push(loss);
      stamps.push(performance.now());
    },
  });
  const wallSeconds = (performance.now() - started) / 1000;
  const stepSeconds = stamps.length > 1 ? (stamps[stamps.length - 1]! - stamps[0]!) / 1000 / (stamps.length - 1) : Number.NaN;
  return { result, losses, wallSeconds, stepSeconds };
}

/** The first `cpuSteps` iterations on the CPU layer, as quantizeSignRound runs them: evaluate, then step. */
function onCpu(params: IntGroupParams): { losses: number[]; stepSeconds: number } {
  const layer = new SignRoundLayer(weight, size, size, params, hessian);
  const lr = linearDecayLr(defaultSignRoundLr(iters, params.bits), iters);
  const losses: number[] = [];
  const started = performance.now();
  for (let t = 0; t < cpuSteps; t++) {
    losses.push(layer.evaluate());
    layer.step(lr[t]!, lr[t]!, true);
  }
  return { losses, stepSeconds: (performance.now() - started) / 1000 / cpuSteps };
}

const configs: [string, IntGroupParams][] = [
  ["W4G128 asym", { bits: 4, groupSize: 128, sym: false, scaleDtype: "F16" }],
  ["W2G64 asym", { bits: 2, groupSize: 64, sym: false, scaleDtype: "F16" }],
];
// Loads the module and cuBLAS and touches the buffer sizes once, so that no timed row pays for first use.
quantizeSignRound(weight, size, size, configs[0]![1], { hessian, iters: 2, backend: gpuSignRound(engine) });

const rows: string[] = [];
for (const [name, params] of configs) {
  const gpu = onGpu(params);
  const cpu = onCpu(params);
  const agreement = Math.max(...cpu.losses.map((loss, t) => Math.abs(gpu.losses[t]! - loss) / loss));
  const { result } = gpu;
  const losses = `${result.initialLoss.toExponential(6)} → ${result.bestLoss.toExponential(6)} (iteration ${result.bestIter})`;
  rows.push(`| ${name} | GPU | ${(gpu.stepSeconds * 1000).toFixed(2)} ms | ${gpu.wallSeconds.toFixed(2)} (measured, whole call) | ${losses} | — |`);
  rows.push(`| ${name} | CPU | ${(cpu.stepSeconds * 1000).toFixed(0)} ms (${cpuSteps} steps measured) | ${(cpu.stepSeconds * iters).toFixed(0)} (extrapolated: ${iters} × per step) | — | ${agreement.toExponential(2)} |`);
  rows.push(`| ${name} | speed-up | ${(cpu.stepSeconds / gpu.stepSeconds).toFixed(0)}× per step | ${((cpu.stepSeconds * iters) / gpu.wallSeconds).toFixed(0)}× (extrapolated CPU / measured GPU) | | |`);
}

console.log(`# SignRound ${size}×${size}, ${iters} steps, Hessian from ${samples} correlated samples (built on the CPU in ${hessianSeconds.toFixed(1)} s), on ${engine.describe()}; ΔW·H by ${gemmBackend(engine)}\n`);
console.log(`| config | path | per step | ${iters} steps s | loss: RTN → best | max relative loss difference from the GPU, steps 0–${cpuSteps - 1} |`);
console.log("|---|---|---|---|---|---|");
for (const row of rows) console.log(row);
engine.close();
