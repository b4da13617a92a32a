import { parentPort, workerData } from "node:worker_threads";
import { LlamaForward } from "./llama-forward.js";
import type { LlamaWeights } from "./llama-weights.js";
import { scoreWindow } from "./perplexity.js";

/** One evaluation thread of perplexity-parallel.ts: scores the windows it is sent, one at a time. */
const { weights, ctx, file } = workerData as { weights: LlamaWeights; ctx: number; file: string };
const forward = new LlamaForward(weights, ctx, file);
parentPort!.on("message", ({ index, ids }: { index: number; ids: Int32Array }) => {
  const score = scoreWindow(forward, ids);
  parentPort!.postMessage({ index, nllSum: score.nllSum, scored: score.scored });
});
