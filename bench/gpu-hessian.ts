#!/usr/bin/env node
/**
 * Calibration's H += XᵀX for one layer input, GPU against CPU in the same run: d = 4096 (a 7B
 * model's q/k/v, o and gate/up input) and d = 11008 (its down_proj input; H alone is 11008²
 * doubles, 970 MB, so it runs only where the device and the host hold it), 8192 tokens in batches
 * of 2048, as `lmpack calibrate --seq-len 2048` feeds them.
 *
 * - GPU kernel: context.time() events around the launches alone, every batch already on the
 *   device (kernels/linalg/hessian-accumulate.ts launchSyrk), after one warm-up launch.
 * - GPU wall: performance.now() around what calibration pays: GpuHessians.add of each float64
 *   batch (rounded to float32 on the host, uploaded, launched) and the download of H. Its device
 *   buffers come from the context's pool (the kernel run freed the same sizes), so the first
 *   touch of fresh device memory (~15 GB/s on the H100: 65 ms for this H, once per layer input
 *   in a calibration of hundreds of batches) is not in it.
 * - CPU: gemmAdd per batch, the default path of converters/hessians/calibrate.ts.
 *
 * X is random float32, so rounding it loses nothing and the GPU and CPU H differ only by float64
 * summation order; the last column is max |ΔH| / max |H|. GFLOP/s counts 2·tokens·d² for every
 * path, the full product the CPU computes; the GPU computes the tiles on and above the diagonal
 * only, about half of it.
 *
 *   node dist/bench/gpu-hessian.js [--sizes 4096,11008] [--tokens 8192] [--batch 2048]
 */
import { freemem } from "node:os";
import { gemmAdd } from "../formats/second-order/index.js";
import { GpuEngine } from "../kernels/engine.js";
import { GpuHessians, launchSyrk } from "../kernels/linalg/hessian-accumulate.js";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : fallback;
}

const SIZES = arg("sizes", "4096,11008").split(",").map(Number);
const TOKENS = Number(arg("tokens", "8192"));
const BATCH = Number(arg("batch", "2048"));
const engine = await GpuEngine.open();
const context = engine.context;
let state = 5;
const random = () => ((state = (state * 1664525 + 1013904223) >>> 0) / 2 ** 32);

interface Row {
  path: string;
  milliseconds: number;
  difference?: number;
}

/** Kernel time alone: the batches uploaded first, then the launches between events. */
function kernelMilliseconds(batches: Float32Array[], d: number): number {
  const h = context.alloc(d * d * 8);
  const xs = batches.map((x) => context.upload(new Uint8Array(x.buffer, x.byteOffset, x.byteLength)));
  try {
    context.zero(h, d * d * 8);
    launchSyrk(engine, h, xs[0]!, d, batches[0]!.length / d, d, batches[0]!.length); // warm-up: module load, first touch of H
    context.synchronize();
    return context.time(() => batches.forEach((x, b) => launchSyrk(engine, h, xs[b]!, d, x.length / d, d, x.length)));
  } finally {
    for (const pointer of [h, ...xs]) context.free(pointer);
  }
}

function maxRatio(a: Float64Array, b: Float64Array): number {
  let worst = 0;
  let scale = 0;
  for (let k = 0; k < a.length; k++) {
    worst = Math.max(worst, Math.abs(a[k]! - b[k]!));
    scale = Math.max(scale, Math.abs(b[k]!));
  }
  return worst / scale;
}

function bench(d: number): Row[] | string {
  const hBytes = d * d * 8;
  // Device: H twice (kernel run, then GpuHessians), every batch as float32, one staging batch.
  const deviceBytes = 2 * hBytes + TOKENS * d * 4 + BATCH * d * 4;
  if (deviceBytes > 0.9 * context.info.totalBytes) return `needs ${(deviceBytes / 1e9).toFixed(1)} GB of device memory, ${(context.info.totalBytes / 1e9).toFixed(1)} GB there`;
  // Host: X as float32 and float64, the CPU H and the downloaded GPU H.
  const hostBytes = TOKENS * d * 12 + 2 * hBytes;
  if (hostBytes > 0.8 * freemem()) return `needs ${(hostBytes / 1e9).toFixed(1)} GB of host memory, ${(freemem() / 1e9).toFixed(1)} GB free`;

  const batches: Float32Array[] = [];
  for (let t0 = 0; t0 < TOKENS; t0 += BATCH) {
    const x = new Float32Array(Math.min(BATCH, TOKENS - t0) * d);
    for (let k = 0; k < x.length; k++) x[k] = random() - 0.5;
    batches.push(x);
  }
  const wide = batches.map((x) => Float64Array.from(x));

  const kernel = kernelMilliseconds(batches, d);

  const products = new GpuHessians(engine);
  let started = performance.now();
  wide.forEach((x) => products.add("h", x, x.length / d, d));
  const gpuH = products.download("h");
  const gpuWall = performance.now() - started;
  products.release();

  const cpuH = new Float64Array(d * d);
  started = performance.now();
  for (const x of wide) gemmAdd({ data: cpuH, offset: 0, rowStride: d }, { data: x, offset: 0, rowStride: d, transposed: true }, { data: x, offset: 0, rowStride: d }, d, x.length / d, d);
  const cpu = performance.now() - started;

  const difference = maxRatio(gpuH, cpuH);
  return [
    { path: "GPU kernel (events)", milliseconds: kernel },
    { path: "GPU wall (narrow, upload, launch, download)", milliseconds: gpuWall, difference },
    { path: "CPU gemmAdd (WebAssembly SIMD, 1 thread)", milliseconds: cpu },
  ];
}

console.log(`# H += XᵀX, ${TOKENS} tokens in batches of ${BATCH}, on ${engine.describe()}\n`);
console.log("| d | path | ms | tokens/s | GFLOP/s | max \\|ΔH\\| / max \\|H\\| |");
console.log("|---|---|---|---|---|---|");
for (const d of SIZES) {
  const rows = bench(d);
  if (typeof rows === "string") {
    console.log(`| ${d} | skipped: ${rows} | | | | |`);
    continue;
  }
  for (const r of rows) {
    const seconds = r.milliseconds / 1000;
    const gflops = (2 * TOKENS * d * d) / seconds / 1e9;
    console.log(`| ${d} | ${r.path} | ${r.milliseconds.toFixed(1)} | ${Math.round(TOKENS / seconds)} | ${gflops.toFixed(1)} | ${r.difference === undefined ? "" : r.difference.toExponential(2)} |`);
  }
}
console.log(`\nGFLOP/s counts 2·tokens·d² on every row; the GPU computes only the tiles on and above the diagonal (≈ half).`);
engine.close();
