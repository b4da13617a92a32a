import { availableParallelism, freemem } from "node:os";
import { Worker } from "node:worker_threads";
import { UsageError } from "../formats/errors.js";
import { EvalWorkerError } from "./eval-worker-error.js";
import type { Linear, LlamaWeights } from "./llama-weights.js";
import type { PerplexityResult } from "./perplexity.js";

/**
 * Perplexity with the windows spread over worker threads: each window is scored by the same
 * code as `perplexity` (scoreWindow on a LlamaForward over the same weights), and the window
 * sums are added in window order, so the result is bit-identical to the one-thread run whatever
 * the thread count or the order windows finish in. The weights are moved once into shared
 * memory (SharedArrayBuffer) and every worker reads them there: no copy per thread. "Moved":
 * each array is copied into shared memory and the caller's LlamaWeights is rewritten to hold the
 * copy, so the original becomes garbage and the peak is one copy of the weights plus one tensor
 * in transit, not two copies.
 *
 * A worker that dies (an uncaught error, running out of memory, process.exit) fails the whole
 * evaluation at once with an EvalWorkerError naming the worker and the window it held, and the
 * other workers are stopped: its window would otherwise never be scored and the pool would wait
 * for it forever.
 */

export interface ParallelEvalOptions {
  /** Worker threads (≥ 1); default: the cores available, at most one per window. */
  threads?: number;
  /** Config file named in errors (as LlamaForward takes it). */
  file?: string;
  /** Progress over the finished prefix of windows: (windows done, running perplexity). */
  onWindow?: (index: number, running: number) => void;
}

/** Memory a worker needs besides the shared weights: activations and logits of one window, with margin. */
function workerBytes(weights: LlamaWeights, ctx: number): number {
  const { config } = weights;
  return 8 * ctx * (config.vocabSize + 8 * (config.intermediateSize ?? 4 * config.hiddenSize) + ctx * config.numHeads) * 2;
}

/** How many threads to use: asked for, or the cores; never more than the windows or the free memory allows. */
export function evalThreads(weights: LlamaWeights, ctx: number, windows: number, asked?: number): number {
  const byMemory = Math.max(1, Math.floor((0.5 * freemem()) / workerBytes(weights, ctx)));
  return Math.max(1, Math.min(asked ?? availableParallelism(), windows, byMemory));
}

/**
 * Scores `windows` on worker threads. `weights` is modified in place: its Float64Arrays are
 * replaced by shared-memory copies of the same values (see shareWeightsInPlace), which stay
 * usable by the caller afterwards.
 */
export async function perplexityParallel(weights: LlamaWeights, ctx: number, windows: readonly Int32Array[], options: ParallelEvalOptions = {}): Promise<PerplexityResult> {
  const vocab = weights.config.vocabSize;
  // The one-thread path refuses a bad id with a typed error from embed(); refuse it here, before any worker starts.
  windows.forEach((ids, w) => ids.forEach((id, t) => {
    if (!(id >= 0 && id < vocab)) throw new UsageError("BAD_ARGUMENT", `token id at position ${t} of window ${w} is outside the vocabulary`, { actual: id, expected: `0 … ${vocab - 1}` });
  }));
  // No window, no worker: the pool below finishes when the last window comes back, which would be never.
  if (windows.length === 0) return { perplexity: NaN, meanNll: NaN, windows: 0, scored: 0 };
  const threads = evalThreads(weights, ctx, windows.length, options.threads);
  const file = options.file ?? "config.json";
  shareWeightsInPlace(weights);
  const sums = new Float64Array(windows.length);
  const scored = new Float64Array(windows.length);
  const done = new Uint8Array(windows.length);
  let next = 0;
  let prefix = 0;
  let nllPrefix = 0;
  let scoredPrefix = 0;
  const workers = Array.from({ length: threads }, () => new Worker(new URL("./perplexity-worker.js", import.meta.url), { workerData: { weights, ctx, file } }));
  // Set once the evaluation has finished or failed: the exits that terminate() causes below are then expected.
  let settled = false;
  try {
    await new Promise<void>((resolve, reject) => {
      const fail = (error: unknown): void => {
        if (settled) return;
        settled = true;
        reject(error);
      };
      workers.forEach((worker, id) => {
        // The window this worker is scoring: the one lost if it dies.
        let holding: number | undefined;
        const feed = (): void => {
          if (next >= windows.length) return;
          holding = next++;
          worker.postMessage({ index: holding, ids: windows[holding] });
        };
        worker.on("message", (message: { index: number; nllSum: number; scored: number }) => {
          if (settled) return;
          try {
            holding = undefined;
            sums[message.index] = message.nllSum;
            scored[message.index] = message.scored;
            done[message.index] = 1;
            // Progress and the running sums follow window order, as the one-thread loop adds them.
            while (prefix < windows.length && done[prefix] === 1) {
              nllPrefix += sums[prefix]!;
              scoredPrefix += scored[prefix]!;
              options.onWindow?.(prefix, Math.exp(nllPrefix / scoredPrefix));
              prefix++;
            }
            if (prefix === windows.length) {
              settled = true;
              resolve();
            } else feed();
          } catch (error) {
            // onWindow threw: an error in an event listener would otherwise escape as an uncaught exception.
            fail(error);
          }
        });
        worker.on("error", (error: Error & { code?: unknown }) => {
          const outOfMemory = error.code === "ERR_WORKER_OUT_OF_MEMORY";
          fail(new EvalWorkerError(outOfMemory ? "WORKER_OUT_OF_MEMORY" : "WORKER_FAILED", id, holding, outOfMemory ? "ran out of memory" : error.message, { file, cause: error }));
        });
        // No worker exits by itself while the pool runs (its message port keeps it alive): any exit before
        // `settled` is a crash, whatever the code, and the window it held would never come back.
        worker.on("exit", (code: number) => fail(new EvalWorkerError("WORKER_EXITED", id, holding, `stopped with exit code ${code} before the evaluation finished`, { file, actual: code })));
        feed();
      });
    });
  } finally {
    settled = true;
    await Promise.all(workers.map((w) => w.terminate()));
  }
  const meanNll = scoredPrefix > 0 ? nllPrefix / scoredPrefix : NaN;
  return { perplexity: Math.exp(meanNll), meanNll, windows: windows.length, scored: scoredPrefix };
}

/**
 * Moves every Float64Array of `weights` into shared memory (posted to workers without a copy):
 * each array is copied into a SharedArrayBuffer and the field is pointed at the copy at once, so
 * the original is unreferenced before the next one is copied. Arrays already shared are kept; a
 * tied head stays the same array as the embedding.
 */
function shareWeightsInPlace(weights: LlamaWeights): void {
  const share = (a: Float64Array): Float64Array => {
    if (a.buffer instanceof SharedArrayBuffer) return a;
    const out = new Float64Array(new SharedArrayBuffer(a.byteLength));
    out.set(a);
    return out;
  };
  const linear = (l: Linear): void => {
    l.weight = share(l.weight);
    if (l.bias !== undefined) l.bias = share(l.bias);
  };
  const tied = weights.head === weights.embed;
  weights.embed = share(weights.embed);
  weights.head = tied ? weights.embed : share(weights.head);
  weights.finalNorm = share(weights.finalNorm);
  for (const layer of weights.layers) {
    layer.inputNorm = share(layer.inputNorm);
    layer.postAttentionNorm = share(layer.postAttentionNorm);
    for (const l of [layer.q, layer.k, layer.v, layer.o, layer.gate, layer.up, layer.down]) linear(l);
  }
}
