import { availableParallelism, freemem } from "node:os";
import { Worker } from "node:worker_threads";
import { UsageError } from "../formats/errors.js";
import type { LlamaWeights } from "./llama-weights.js";
import type { PerplexityResult } from "./perplexity.js";

/**
 * Perplexity with the windows spread over worker threads: each window is scored by the same
 * code as `perplexity` (scoreWindow on a LlamaForward over the same weights), and the window
 * sums are added in window order, so the result is bit-identical to the one-thread run whatever
 * the thread count or the order windows finish in. The weights are moved once into shared
 * memory (SharedArrayBuffer) and every worker reads them there: no copy per thread.
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

export async function perplexityParallel(weights: LlamaWeights, ctx: number, windows: readonly Int32Array[], options: ParallelEvalOptions = {}): Promise<PerplexityResult> {
  const vocab = weights.config.vocabSize;
  // The one-thread path refuses a bad id with a typed error from embed(); refuse it here, before any worker starts.
  windows.forEach((ids, w) => ids.forEach((id, t) => {
    if (!(id >= 0 && id < vocab)) throw new UsageError("BAD_ARGUMENT", `token id at position ${t} of window ${w} is outside the vocabulary`, { actual: id, expected: `0 … ${vocab - 1}` });
  }));
  const threads = evalThreads(weights, ctx, windows.length, options.threads);
  const shared = shareWeights(weights);
  const sums = new Float64Array(windows.length);
  const scored = new Float64Array(windows.length);
  const done = new Uint8Array(windows.length);
  let next = 0;
  let prefix = 0;
  let nllPrefix = 0;
  let scoredPrefix = 0;
  const workers = Array.from({ length: threads }, () => new Worker(new URL("./perplexity-worker.js", import.meta.url), { workerData: { weights: shared, ctx, file: options.file ?? "config.json" } }));
  try {
    await Promise.all(workers.map((worker) => new Promise<void>((resolve, reject) => {
      const feed = (): void => {
        if (next >= windows.length) {
          resolve();
          return;
        }
        const index = next++;
        worker.postMessage({ index, ids: windows[index] });
      };
      worker.on("message", (message: { index: number; nllSum: number; scored: number }) => {
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
        feed();
      });
      worker.on("error", reject);
      worker.on("exit", (code) => (code === 0 || next >= windows.length ? undefined : reject(new Error(`evaluation worker exited with code ${code}`))));
      feed();
    })));
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
  const meanNll = scoredPrefix > 0 ? nllPrefix / scoredPrefix : NaN;
  return { perplexity: Math.exp(meanNll), meanNll, windows: windows.length, scored: scoredPrefix };
}

/** The same weights with every Float64Array moved into shared memory (posted to workers without a copy). */
function shareWeights(weights: LlamaWeights): LlamaWeights {
  const share = (a: Float64Array): Float64Array => {
    if (a.buffer instanceof SharedArrayBuffer) return a;
    const out = new Float64Array(new SharedArrayBuffer(a.byteLength));
    out.set(a);
    return out;
  };
  const linear = <L extends { weight: Float64Array; bias: Float64Array | undefined }>(l: L): L => ({ ...l, weight: share(l.weight), bias: l.bias === undefined ? undefined : share(l.bias) });
  const embed = share(weights.embed);
  return {
    config: weights.config,
    embed,
    head: weights.head === weights.embed ? embed : share(weights.head),
    finalNorm: share(weights.finalNorm),
    layers: weights.layers.map((w) => ({ ...w, inputNorm: share(w.inputNorm), postAttentionNorm: share(w.postAttentionNorm), q: linear(w.q), k: linear(w.k), v: linear(w.v), o: linear(w.o), gate: linear(w.gate), up: linear(w.up), down: linear(w.down) })),
  };
}
