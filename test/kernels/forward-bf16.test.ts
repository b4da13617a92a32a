import { suite } from "uvu";
import * as assert from "uvu/assert";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { openCheckpoint } from "../../converters/open.js";
import { GpuLlamaForwardBf16 } from "../../kernels/forward-bf16/gpu-forward-bf16.js";
import { LlamaForward } from "../../model/llama-forward.js";
import { loadLlamaWeights, type LlamaWeights } from "../../model/llama-weights.js";
import { perplexity } from "../../model/perplexity.js";
import { gpuPerplexity } from "../../kernels/forward/gpu-perplexity.js";
import { CLI, SHARED_DIR, sharedModel } from "../helpers/paths.js";
import { mulberry32 } from "../helpers/prng.js";
import { gpuSuite } from "../helpers/gpu-suite.js";

/**
 * The bf16 forward (kernels/forward-bf16): bf16 weights, float32 activations and products. On
 * docs-llama-16m, a bf16 checkpoint, the weights are exact, so it differs from the float64
 * reference forward only by float32 arithmetic: logits within 1e-3 of the largest, perplexity
 * within 0.1 %. The CLI's refusals run everywhere; the rest needs a GPU and cuBLAS.
 */

const TEXT = join(SHARED_DIR, "text", "docs-valid.txt");

const cli = suite("eval --precision");

cli("bf16 on the CPU is refused (BAD_ARGUMENT, exit 1) before anything is read", () => {
  const run = spawnSync(process.execPath, [CLI, "eval", sharedModel("lmpack-fixture-2m"), "--text", TEXT, "--precision", "bf16", "--device", "cpu"], { encoding: "utf8" });
  assert.is(run.status, 1, run.stderr);
  assert.match(run.stderr, /BAD_ARGUMENT.*--precision bf16 is the GPU forward's/);
});

cli("an unknown precision is refused by the option parser", () => {
  const run = spawnSync(process.execPath, [CLI, "eval", sharedModel("lmpack-fixture-2m"), "--text", TEXT, "--precision", "fp8"], { encoding: "utf8" });
  assert.is.not(run.status, 0);
  assert.match(run.stderr, /precision/);
});
cli.run();

const { gpu, available } = await gpuSuite<{ weights: LlamaWeights }>("gpu forward, bf16 weights and float32 arithmetic");
if (!available) {
  gpu("bf16 without a GPU: NO_DEVICE (exit 2)", () => {
    const run = spawnSync(process.execPath, [CLI, "eval", sharedModel("lmpack-fixture-2m"), "--text", TEXT, "--precision", "bf16"], { encoding: "utf8" });
    assert.is(run.status, 2, run.stderr);
    assert.match(run.stderr, /NO_DEVICE/);
  });
} else {
  gpu.before(async (context) => {
    const checkpoint = await openCheckpoint(sharedModel("docs-llama-16m"));
    context.weights = await loadLlamaWeights(checkpoint).finally(() => checkpoint.close());
  });

  gpu("docs-llama-16m: logits within 1e-3 of the float64 forward's largest, argmax equal on ≥ 99 % of positions", ({ engine, weights }) => {
    const rng = mulberry32(4);
    const ids = Int32Array.from({ length: 257 }, () => Math.floor(rng() * weights.config.vocabSize));
    const expected = new LlamaForward(weights, ids.length).run(ids);
    const forward = new GpuLlamaForwardBf16(engine, weights, ids.length);
    try {
      const logits = forward.run(ids);
      let worst = 0;
      let scale = 0;
      expected.forEach((x, i) => {
        scale = Math.max(scale, Math.abs(x));
        worst = Math.max(worst, Math.abs(x - logits[i]!));
      });
      const vocab = weights.config.vocabSize;
      let same = 0;
      for (let t = 0; t < ids.length; t++) {
        const argmax = (a: Float64Array) => {
          let best = 0;
          for (let j = 1; j < vocab; j++) if (a[t * vocab + j]! > a[t * vocab + best]!) best = j;
          return best;
        };
        if (argmax(logits) === argmax(expected)) same++;
      }
      console.log(`  logits: ${(worst / scale).toExponential(2)} of the largest (${scale.toFixed(2)}); argmax equal at ${same}/${ids.length} positions`);
      assert.ok(worst <= 1e-3 * scale, `${worst} of ${scale}`);
      assert.ok(same >= 0.99 * ids.length, `${same} of ${ids.length}`);
      // The same bits twice.
      assert.ok(forward.run(ids).every((x, i) => Object.is(x, logits[i])));
    } finally {
      forward.release();
    }
  });

  gpu("docs-llama-16m: perplexity of 8 windows of 512 within 0.1 % of the float64 forward's", ({ engine, weights }) => {
    const rng = mulberry32(5);
    const windows = Array.from({ length: 8 }, () => Int32Array.from({ length: 512 }, () => Math.floor(rng() * 200)));
    const reference = perplexity(new LlamaForward(weights, 512), windows);
    const forward = new GpuLlamaForwardBf16(engine, weights, 512);
    try {
      const result = gpuPerplexity(forward, windows);
      const relative = Math.abs(result.perplexity - reference.perplexity) / reference.perplexity;
      console.log(`  perplexity ${result.perplexity.toFixed(4)} vs ${reference.perplexity.toFixed(4)} (${relative.toExponential(2)})`);
      assert.ok(relative <= 1e-3);
      assert.is(result.scored, reference.scored);
    } finally {
      forward.release();
    }
  });

  gpu("refusals: a window past maxTokens, an id outside the vocabulary, use after release", ({ engine, weights }) => {
    const forward = new GpuLlamaForwardBf16(engine, weights, 16);
    assert.throws(() => forward.run(new Int32Array(17)), /more than the 16/);
    assert.throws(() => forward.run(Int32Array.of(1, weights.config.vocabSize)), /outside the vocabulary/);
    forward.release();
    assert.throws(() => forward.run(Int32Array.of(1, 2)), /after release/);
  });
}
gpu.run();
