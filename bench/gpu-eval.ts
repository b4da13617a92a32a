#!/usr/bin/env node
/**
 * `lmpack eval` on the GPU against the CPU: a model's perplexity on a text with the docs protocol
 * (shared/models/README.md: documents split at "\n\n\n", eos after each, 512-token windows, every
 * full window of the stream), by default docs-llama-16m on docs-valid.txt (442 windows).
 *
 * - GPU: kernels/forward GpuLlamaForward over every window, one after another, after one warm-up
 *   window (module load, cuBLAS handle, first touch of the buffers); the upload of the weights is
 *   timed on its own. Wall clock (performance.now) around what `lmpack eval --device cuda` pays
 *   per window: the ids' upload, the launches, the NLL's download.
 * - CPU: perplexityParallel (what `lmpack eval --device cpu` runs) on the first N windows only,
 *   with the default thread count; its time for every window is extrapolated linearly from those
 *   N and labelled so. The GPU runs the same N windows too, and the last column compares the two
 *   perplexities (relative difference; the forwards agree to float64 rounding).
 *
 *   node dist/bench/gpu-eval.js [--model ../shared/models/docs-llama-16m] [--text ../shared/text/docs-valid.txt] [--cpu-windows 32] [--threads N]
 */
import { availableParallelism } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { readFile } from "node:fs/promises";
import { openCheckpoint } from "../converters/open.js";
import { GpuEngine } from "../kernels/engine.js";
import { GpuLlamaForward } from "../kernels/forward/gpu-forward.js";
import { gpuPerplexity } from "../kernels/forward/gpu-perplexity.js";
import { gemmBackend } from "../kernels/linalg/dgemm.js";
import { evalTokenStream, windows } from "../model/eval-stream.js";
import { loadLlamaWeights } from "../model/llama-weights.js";
import { evalThreads, perplexityParallel } from "../model/perplexity-parallel.js";
import type { PerplexityResult } from "../model/perplexity.js";
import { loadTokenizer } from "../model/tokenizer.js";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : fallback;
}

// dist/bench/ → the checkout → ../shared beside it.
const shared = process.env["LMPACK_SHARED"] ?? join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "shared");
const MODEL = arg("model", join(shared, "models", "docs-llama-16m"));
const TEXT = arg("text", join(shared, "text", "docs-valid.txt"));
const CPU_WINDOWS = Number(arg("cpu-windows", "32"));
const THREADS = process.argv.includes("--threads") ? Number(arg("threads", "1")) : undefined;
const CTX = 512;
if (!(Number.isSafeInteger(CPU_WINDOWS) && CPU_WINDOWS >= 1)) throw new Error(`--cpu-windows must be a positive integer, got ${CPU_WINDOWS}`);

const checkpoint = await openCheckpoint(MODEL);
const tokenizer = await loadTokenizer(MODEL);
const eos = checkpoint.config?.eosTokenId;
const eosId = Array.isArray(eos) ? eos[0]! : eos!;
const stream = evalTokenStream(await readFile(TEXT, "utf8"), tokenizer, eosId);
const all = windows(stream, CTX);
const first = all.slice(0, Math.min(CPU_WINDOWS, all.length));
const weights = await loadLlamaWeights(checkpoint);
await checkpoint.close();

interface Row {
  path: string;
  result: PerplexityResult;
  seconds: number;
  note: string;
}
const rows: Row[] = [];
const timed = <T>(work: () => T): [T, number] => {
  const started = performance.now();
  const value = work();
  return [value, (performance.now() - started) / 1000];
};

const engine = await GpuEngine.open();
const [forward, uploadSeconds] = timed(() => new GpuLlamaForward(engine, weights, CTX, MODEL));
const [, warmSeconds] = timed(() => forward.scoreWindow(all[0]!));
const [gpuAll, gpuAllSeconds] = timed(() => gpuPerplexity(forward, all));
rows.push({ path: `GPU ${engine.describe()}`, result: gpuAll, seconds: gpuAllSeconds, note: "measured" });
const [gpuFirst, gpuFirstSeconds] = timed(() => gpuPerplexity(forward, first));
rows.push({ path: "GPU, same windows as the CPU", result: gpuFirst, seconds: gpuFirstSeconds, note: "measured" });
const backend = gemmBackend(engine);
forward.release();
engine.close();

// The GPU has uploaded its copy: perplexityParallel may now move the host weights into shared memory.
const threads = evalThreads(weights, CTX, first.length, THREADS);
const cpuStarted = performance.now();
const cpuFirst = await perplexityParallel(weights, CTX, first, { threads });
const cpuFirstSeconds = (performance.now() - cpuStarted) / 1000;
rows.push({ path: `CPU, ${threads} threads of ${availableParallelism()}`, result: cpuFirst, seconds: cpuFirstSeconds, note: `measured, first ${first.length} windows` });
const cpuAllSeconds = (cpuFirstSeconds * all.length) / first.length;

console.log(`# lmpack eval: ${MODEL} on ${TEXT}, docs protocol, ${all.length} windows of ${CTX} (${stream.length} tokens)\n`);
console.log(`GEMM: ${backend}. Weights uploaded in ${uploadSeconds.toFixed(2)} s; warm-up window ${warmSeconds.toFixed(2)} s (not counted below).\n`);
console.log("| path | windows | perplexity | seconds | s / window | note |");
console.log("|---|---|---|---|---|---|");
for (const r of rows) console.log(`| ${r.path} | ${r.result.windows} | ${r.result.perplexity.toFixed(6)} | ${r.seconds.toFixed(2)} | ${(r.seconds / r.result.windows).toFixed(4)} | ${r.note} |`);
console.log(`| CPU, ${threads} threads | ${all.length} | (not run) | ${cpuAllSeconds.toFixed(1)} | ${(cpuAllSeconds / all.length).toFixed(4)} | extrapolated from the first ${first.length} windows |`);
// shared/models/README.md, transformers fp32 over every window of docs-valid.txt.
const REFERENCE: Record<string, number> = { "docs-llama-16m": 21.2685, "lmpack-fixture-2m": 16.6965 };
const reference = TEXT.endsWith("docs-valid.txt") ? REFERENCE[MODEL.replace(/\/+$/, "").split("/").pop()!] : undefined;
if (reference !== undefined) console.log(`\ntransformers fp32 on every window (shared/models/README.md): ${reference}; GPU ${gpuAll.perplexity.toFixed(4)}.`);
const relative = Math.abs(gpuFirst.perplexity - cpuFirst.perplexity) / cpuFirst.perplexity;
console.log(`\nGPU vs CPU on the same ${first.length} windows: perplexity relative difference ${relative.toExponential(2)}; GPU speed-up over the CPU ≈ ${(cpuAllSeconds / gpuAllSeconds).toFixed(1)}× (CPU extrapolated).`);
