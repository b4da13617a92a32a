#!/usr/bin/env node
/**
 * Float64 GEMM on the GPU, lmpack's own kernel (lq_gemm_f64, kernels/linalg/linalg.cu) against
 * cuBLAS's DGEMM (kernels/cuda/cublas.ts, when found) in the same run, on two shapes:
 * - 4096³, C = A·B: the square product, what the peak rates are quoted for;
 * - GPTQ's deferred update at K = 4096, block 128: C[4096×4096] −= U[128×4096]ᵀ · E[128×4096]
 *   (alpha −1, beta 1, transA), the shape kernels/linalg/gptq-deferred.ts issues once per block.
 *
 * Time: context.time() events around `--repeat` calls after one warm-up call (module load, the
 * cuBLAS handle and its workspace, first touch of C), so neither side pays for first use.
 * GFLOP/s counts 2·m·n·k. The last column compares one call of each from the same C:
 * max |C_own − C_cublas| / max |C|, float64 summation order alone (≈ 1e-16 … 1e-15).
 *
 *   node dist/bench/gpu-dgemm.js [--repeat 5]
 */
import { GpuEngine } from "../kernels/engine.js";
import { gemmBackend, gemmF64With, type GemmBackendChoice, type GemmF64Args } from "../kernels/linalg/dgemm.js";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : fallback;
}

const REPEAT = Number(arg("repeat", "5"));
const engine = await GpuEngine.open();
const context = engine.context;
const backend = gemmBackend(engine);
const hasCublas = backend.startsWith("cublas ");
let state = 3;
const random = () => ((state = (state * 1664525 + 1013904223) >>> 0) / 2 ** 32) - 0.5;
const bytesOf = (a: Float64Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

interface Shape {
  name: string;
  m: number;
  n: number;
  k: number;
  alpha: number;
  beta: number;
  transA: boolean;
}

const SHAPES: Shape[] = [
  { name: "4096³ A·B", m: 4096, n: 4096, k: 4096, alpha: 1, beta: 0, transA: false },
  { name: "GPTQ deferred: 4096×4096 −= (128×4096)ᵀ·(128×4096)", m: 4096, n: 4096, k: 128, alpha: -1, beta: 1, transA: true },
];

/** Milliseconds per call of `choice` on `args`, after one warm-up call. */
function timed(args: GemmF64Args, choice: GemmBackendChoice): number {
  gemmF64With(engine, args, choice);
  context.synchronize();
  return context.time(() => {
    for (let r = 0; r < REPEAT; r++) gemmF64With(engine, args, choice);
  }) / REPEAT;
}

/** C after one call of `choice` from `c0`. */
function once(args: GemmF64Args, c0: Float64Array, choice: GemmBackendChoice): Float64Array {
  context.uploadInto(args.c, bytesOf(c0));
  gemmF64With(engine, args, choice);
  const c = new Float64Array(c0.length);
  context.download(args.c, bytesOf(c));
  return c;
}

console.log(`# Float64 GEMM on ${engine.describe()}: own kernel against ${backend}\n`);
console.log("| product | own kernel ms | own GFLOP/s | cuBLAS ms | cuBLAS GFLOP/s | cuBLAS speed-up | max |ΔC| / max |C| |");
console.log("|---|---|---|---|---|---|---|");
for (const shape of SHAPES) {
  const { m, n, k } = shape;
  const [aRows, aColumns] = shape.transA ? [k, m] : [m, k];
  const a = Float64Array.from({ length: aRows * aColumns }, random);
  const b = Float64Array.from({ length: k * n }, random);
  const c0 = Float64Array.from({ length: m * n }, random);
  const pointers = [context.upload(bytesOf(a)), context.upload(bytesOf(b)), context.upload(bytesOf(c0))] as const;
  try {
    const args: GemmF64Args = { m, n, k, alpha: shape.alpha, beta: shape.beta, a: pointers[0], lda: aColumns, transA: shape.transA, b: pointers[1], ldb: n, c: pointers[2], ldc: n };
    const gflops = (ms: number) => ((2 * m * n * k) / (ms * 1e6)).toFixed(0);
    const own = timed(args, "own");
    let cublasCells = "— | — | — | —";
    if (hasCublas) {
      const blas = timed(args, "cublas");
      const ownC = once(args, c0, "own");
      const blasC = once(args, c0, "cublas");
      let difference = 0;
      let largest = 0;
      for (let i = 0; i < ownC.length; i++) {
        difference = Math.max(difference, Math.abs(ownC[i]! - blasC[i]!));
        largest = Math.max(largest, Math.abs(blasC[i]!));
      }
      cublasCells = `${blas.toFixed(3)} | ${gflops(blas)} | ${(own / blas).toFixed(1)}× | ${(difference / largest).toExponential(1)}`;
    }
    console.log(`| ${shape.name} | ${own.toFixed(3)} | ${gflops(own)} | ${cublasCells} |`);
  } finally {
    for (const pointer of pointers) context.free(pointer);
  }
}
engine.close();
