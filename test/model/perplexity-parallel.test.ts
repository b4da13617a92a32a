import { suite } from "uvu";
import * as assert from "uvu/assert";
import { openCheckpoint } from "../../converters/open.js";
import { LlamaForward } from "../../model/llama-forward.js";
import { loadLlamaWeights, type LlamaWeights } from "../../model/llama-weights.js";
import { perplexity } from "../../model/perplexity.js";
import { perplexityParallel } from "../../model/perplexity-parallel.js";
import { EvalWorkerError } from "../../model/eval-worker-error.js";
import { expectCode } from "../helpers/gpu-assert.js";
import { FIXTURE_MODEL } from "../helpers/paths.js";
import { mulberry32 } from "../helpers/prng.js";

/**
 * `lmpack eval --threads`: windows scored on worker threads over shared weights must give the
 * one-thread result bit for bit (window sums added in window order), whatever the thread count,
 * and report progress in window order. A worker that dies fails the evaluation at once instead
 * of leaving the pool waiting for its window.
 */

/** The worker's test hook (model/perplexity-worker.ts): "exit:<window>" or "throw:<window>". */
const FAULT_ENV = "LMPACK_TEST_EVAL_WORKER_FAULT";
/** Far longer than the whole run (well under a second here); a pool that hangs fails the test instead of the suite. */
const HANG_MS = 10_000;

/** Runs perplexityParallel with the fault hook set for its workers; resolves with what it threw (undefined: nothing). */
async function failureOf(weights: LlamaWeights, windows: Int32Array[], fault: string, threads: number): Promise<unknown> {
  process.env[FAULT_ENV] = fault;
  let timer: NodeJS.Timeout | undefined;
  try {
    const hang = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`perplexityParallel neither resolved nor rejected within ${HANG_MS} ms: the pool hangs`)), HANG_MS);
    });
    await Promise.race([perplexityParallel(weights, 64, windows, { threads }), hang]);
    return undefined;
  } catch (caught) {
    return caught;
  } finally {
    clearTimeout(timer);
    delete process.env[FAULT_ENV];
  }
}

const test = suite("perplexity on worker threads", {} as { weights: LlamaWeights; windows: Int32Array[] });
test.before(async (context) => {
  const checkpoint = await openCheckpoint(FIXTURE_MODEL);
  try {
    context.weights = await loadLlamaWeights(checkpoint);
  } finally {
    await checkpoint.close();
  }
  const rng = mulberry32(17);
  const vocab = context.weights.config.vocabSize;
  // Windows of unequal content (and one shorter) so that they finish out of order.
  context.windows = [64, 64, 64, 40, 64, 64].map((length) => Int32Array.from({ length }, () => Math.floor(rng() * vocab)));
});

test("1, 2 and 5 threads give the one-thread loop's perplexity and mean NLL bit for bit; progress in window order", async ({ weights, windows }) => {
  const reference = perplexity(new LlamaForward(weights, 64), windows);
  for (const threads of [1, 2, 5]) {
    const seen: number[] = [];
    const result = await perplexityParallel(weights, 64, windows, { threads, onWindow: (i) => seen.push(i) });
    assert.ok(Object.is(result.perplexity, reference.perplexity), `${threads} threads: ${result.perplexity} vs ${reference.perplexity}`);
    assert.ok(Object.is(result.meanNll, reference.meanNll), `${threads} threads: mean NLL`);
    assert.is(result.scored, reference.scored);
    assert.equal(seen, windows.map((_, i) => i), `${threads} threads: progress order`);
  }
});

test("a token id outside the vocabulary is refused with BAD_ARGUMENT before any worker starts", async ({ weights, windows }) => {
  const bad = windows.map((w) => w.slice());
  bad[2]![5] = weights.config.vocabSize;
  let error: unknown;
  try {
    await perplexityParallel(weights, 64, bad, { threads: 2 });
  } catch (caught) {
    error = caught;
  }
  expectCode(() => {
    if (error !== undefined) throw error;
  }, "BAD_ARGUMENT");
});

test("a worker exiting while it holds the last window rejects with WORKER_EXITED naming it, instead of hanging", async ({ weights, windows }) => {
  const last = windows.length - 1;
  // The last window: once it is handed out nothing is left to feed, which is when the old pool hung.
  const error = await failureOf(weights, windows, `exit:${last}`, 2);
  assert.instance(error, EvalWorkerError, String(error));
  const e = error as EvalWorkerError;
  assert.is(e.code, "WORKER_EXITED");
  assert.is(e.window, last);
  assert.ok(e.worker === 0 || e.worker === 1, `worker ${e.worker}`);
  assert.is(e.actual, 7);
  assert.is(e.exitCode, 70);
  assert.match(e.message, `scoring window ${last}`);
});

test("a worker throwing mid-run rejects with WORKER_FAILED naming the window, the cause kept", async ({ weights, windows }) => {
  const error = await failureOf(weights, windows, "throw:2", 3);
  assert.instance(error, EvalWorkerError, String(error));
  const e = error as EvalWorkerError;
  assert.is(e.code, "WORKER_FAILED");
  assert.is(e.window, 2);
  assert.match(e.message, "injected fault on window 2");
  assert.match(String((e.cause as Error | undefined)?.message), "injected fault on window 2");
});

test("after a failed run the pool is usable again and still gives the one-thread result", async ({ weights, windows }) => {
  const reference = perplexity(new LlamaForward(weights, 64), windows);
  const result = await perplexityParallel(weights, 64, windows, { threads: 2 });
  assert.ok(Object.is(result.perplexity, reference.perplexity));
});

test("the weights are moved, not copied: the caller's arrays now live in shared memory, a tied head still is the embedding", async () => {
  const checkpoint = await openCheckpoint(FIXTURE_MODEL);
  let weights: LlamaWeights;
  try {
    weights = await loadLlamaWeights(checkpoint);
  } finally {
    await checkpoint.close();
  }
  const tied = weights.head === weights.embed;
  const firstQ = weights.layers[0]!.q.weight.slice();
  await perplexityParallel(weights, 16, [Int32Array.from({ length: 16 }, (_, i) => i)], { threads: 1 });
  const arrays = [weights.embed, weights.head, weights.finalNorm, ...weights.layers.flatMap((l) => [l.inputNorm, l.postAttentionNorm, ...[l.q, l.k, l.v, l.o, l.gate, l.up, l.down].flatMap((x) => (x.bias === undefined ? [x.weight] : [x.weight, x.bias]))])];
  // Every field points at a shared copy, so no reference to an original (unshared) array is left to keep it alive.
  assert.ok(arrays.every((a) => a.buffer instanceof SharedArrayBuffer), "an array was left unshared: the original stays alive beside its copy");
  assert.is(weights.head === weights.embed, tied);
  assert.equal(weights.layers[0]!.q.weight, firstQ);
});

test("no windows: NaN at once, no worker waited for", async ({ weights }) => {
  const result = await perplexityParallel(weights, 64, [], { threads: 2 });
  assert.ok(Number.isNaN(result.perplexity));
  assert.is(result.windows, 0);
});

test.run();
