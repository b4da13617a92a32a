#!/usr/bin/env node
/**
 * GPTQ on one square layer (default 4096×4096, 4-bit g128, act-order), CPU against GPU in the
 * same run, three paths:
 * - CPU: everything on the host (float64, WebAssembly SIMD products);
 * - GPU deferred: the loop's deferred updates, nearly all of its flops, on kernels/linalg
 *   (gptq-deferred.ts); the preparation stays on the CPU;
 * - GPU factorize + deferred: the preparation's O(K³) part, U = chol_upper(H⁻¹), on the GPU as
 *   well (cholesky-gpu.ts); damping, permutation and the in-block column work stay on the CPU.
 * Prints per path the preparation (and the U inside it) and the loop separately, and how many
 * codes differ from the CPU's (float64 sums in another order: ties at rounding boundaries).
 *
 *   node dist/bench/gpu-gptq.js [--size 4096] [--samples 8192]
 */
import { quantizeGptq, type GptqOptions, type GptqResult } from "../formats/int-group/quantizers/gptq.js";
import { gemmAdd, upperCholeskyOfInverse, type CholeskyOptions } from "../formats/second-order/index.js";
import { GpuEngine } from "../kernels/engine.js";
import { upperCholeskyOfInverseGpu } from "../kernels/linalg/cholesky-gpu.js";
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

type Factorize = (h: Float64Array, size: number, options: CholeskyOptions) => Float64Array;

interface Timed {
  result: GptqResult;
  /** From the call to the return of `factorize`, the preparation's last step. */
  prepareSeconds: number;
  /** The factorization alone. */
  factorSeconds: number;
  /** From there to the end: the column loop (and the codes' scatter back to row-major). */
  loopSeconds: number;
}

/** One GPTQ run, timed around `factorize` (wrapped) so that the preparation and the loop are told apart. */
function timedGptq(factorize: Factorize, deferred?: GptqOptions["deferred"]): Timed {
  let factorStarted = 0;
  let prepared = 0;
  const timedFactorize: Factorize = (m, n, options) => {
    factorStarted = performance.now();
    const u = factorize(m, n, options);
    prepared = performance.now();
    return u;
  };
  const start = performance.now();
  const result = quantizeGptq(weight, size, size, { size, data: h }, { params, actOrder: true, factorize: timedFactorize, ...(deferred === undefined ? {} : { deferred }) });
  const end = performance.now();
  return { result, prepareSeconds: (prepared - start) / 1000, factorSeconds: (prepared - factorStarted) / 1000, loopSeconds: (end - prepared) / 1000 };
}

const engine = await GpuEngine.open();
const onGpu: Factorize = (m, n, options) => upperCholeskyOfInverseGpu(engine, m, n, options);
// Loads the module and touches the K×K buffers once, so that neither GPU row pays for first use.
onGpu(h, size, {});

const cpu = timedGptq(upperCholeskyOfInverse);
const deferredOnly = gpuDeferredUpdates(engine);
const gpuDeferred = timedGptq(upperCholeskyOfInverse, deferredOnly);
deferredOnly.release();
const deferredBoth = gpuDeferredUpdates(engine);
const gpuBoth = timedGptq(onGpu, deferredBoth);
deferredBoth.release();

function differing(run: Timed): string {
  let count = 0;
  for (let i = 0; i < cpu.result.tensor.codes.length; i++) if (cpu.result.tensor.codes[i] !== run.result.tensor.codes[i]) count++;
  return `${count} of ${cpu.result.tensor.codes.length}`;
}

function row(path: string, run: Timed, codes: string): string {
  const seconds = (s: number) => s.toFixed(2);
  return `| ${path} | ${seconds(run.prepareSeconds)} (U ${seconds(run.factorSeconds)}) | ${seconds(run.loopSeconds)} | ${seconds(run.prepareSeconds + run.loopSeconds)} | ${run.result.hessianLoss.toExponential(9)} | ${codes} |`;
}

console.log(`# GPTQ ${size}×${size} 4-bit g128 act-order on ${engine.describe()} (Hessian from ${samples} samples, built on the CPU in ${hessianSeconds.toFixed(1)} s)\n`);
console.log("| path | prepare s (of which U) | loop s | wall s | Hessian loss | codes differing from the CPU's |");
console.log("|---|---|---|---|---|---|");
console.log(row("CPU (float64, WebAssembly SIMD products)", cpu, "—"));
console.log(row("GPU deferred updates (kernels/linalg)", gpuDeferred, differing(gpuDeferred)));
console.log(row("GPU factorize + GPU deferred updates", gpuBoth, differing(gpuBoth)));
engine.close();
