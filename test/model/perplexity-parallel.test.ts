import { suite } from "uvu";
import * as assert from "uvu/assert";
import { openCheckpoint } from "../../converters/open.js";
import { LlamaForward } from "../../model/llama-forward.js";
import { loadLlamaWeights, type LlamaWeights } from "../../model/llama-weights.js";
import { perplexity } from "../../model/perplexity.js";
import { perplexityParallel } from "../../model/perplexity-parallel.js";
import { expectCode } from "../helpers/gpu-assert.js";
import { FIXTURE_MODEL } from "../helpers/paths.js";
import { mulberry32 } from "../helpers/prng.js";

/**
 * `lmpack eval --threads`: windows scored on worker threads over shared weights must give the
 * one-thread result bit for bit (window sums added in window order), whatever the thread count,
 * and report progress in window order.
 */

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

test.run();
