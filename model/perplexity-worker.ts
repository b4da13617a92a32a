import { parentPort, workerData } from "node:worker_threads";
import { LlamaForward } from "./llama-forward.js";
import type { LlamaWeights } from "./llama-weights.js";
import { scoreWindow } from "./perplexity.js";

/** One evaluation thread of perplexity-parallel.ts: scores the windows it is sent, one at a time. */
const { weights, ctx, file } = workerData as { weights: LlamaWeights; ctx: number; file: string };
const forward = new LlamaForward(weights, ctx, file);

/**
 * Test hook, read only by test/model/perplexity-parallel.test.ts: "exit:<window>" or
 * "throw:<window>" makes this worker die when it is sent that window, as a crash or an
 * out-of-memory abort would, so the pool's failure path can be tested without a real crash.
 */
const FAULT = /^(exit|throw):(\d+)$/.exec(process.env["LMPACK_TEST_EVAL_WORKER_FAULT"] ?? "");

parentPort!.on("message", ({ index, ids }: { index: number; ids: Int32Array }) => {
  if (FAULT !== null && Number(FAULT[2]) === index) {
    if (FAULT[1] === "exit") process.exit(7);
    throw new Error(`injected fault on window ${index}`);
  }
  const score = scoreWindow(forward, ids);
  parentPort!.postMessage({ index, nllSum: score.nllSum, scored: score.scored });
});
