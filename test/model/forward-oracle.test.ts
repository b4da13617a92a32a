import { suite } from "uvu";
import * as assert from "uvu/assert";
import { join } from "node:path";
import { normaliseConfig } from "../../converters/hf/config.js";
import { openCheckpoint } from "../../converters/open.js";
import { SafetensorsFile } from "../../converters/safetensors/reader.js";
import { GpuLlamaForward } from "../../kernels/forward/gpu-forward.js";
import { LlamaForward } from "../../model/llama-forward.js";
import { loadLlamaWeights, type LlamaWeights } from "../../model/llama-weights.js";
import { REPO_ROOT } from "../helpers/paths.js";
import { gpuSuite } from "../helpers/gpu-suite.js";

/**
 * The forward against transformers on every family it claims: test/oracle/forward_check.py made
 * four small random decoders on the GPU machine (transformers 5.17, torch, float64 on the H100)
 * and their logits on 33 fixed ids, kept in test/fixtures/forward-oracle:
 *  - llama3-gqa-untied: Llama, GQA 4/2, llama3 rope scaling, untied head;
 *  - llama-linear-headdim: Llama, head_dim 24 ≠ hidden/heads, one KV head, linear rope scaling, tied;
 *  - mistral: MistralForCausalLM with a 4096-token sliding window (wider than the ids);
 *  - qwen2-bias-tied: Qwen2ForCausalLM, q/k/v biases, tied embeddings, sliding window off.
 * Weights are float32 and both sides compute in float64, except transformers' rotary tables: its
 * RotaryEmbedding forms the angles and their cos/sin in float32 whatever the model's dtype. That
 * puts the agreement at ~1e-7 of the largest logit (measured 1.05–1.81e-7 on all four, CPU and
 * GPU alike), held here to 1e-6; a missed bias, a wrong head_dim or rope scaling moves logits by
 * 1e-2 and more. On a GPU the device forward is held to the same bound.
 */

const ORACLE = join(REPO_ROOT, "test", "fixtures", "forward-oracle");
const VARIANTS = ["llama3-gqa-untied", "llama-linear-headdim", "mistral", "qwen2-bias-tied"] as const;
const TOLERANCE = 1e-6;

async function load(variant: string): Promise<{ weights: LlamaWeights; ids: Int32Array; logits: Float64Array }> {
  const dir = join(ORACLE, variant);
  const checkpoint = await openCheckpoint(dir);
  const weights = await loadLlamaWeights(checkpoint).finally(() => checkpoint.close());
  const oracle = await SafetensorsFile.open(join(dir, "oracle.safetensors"));
  try {
    const idBytes = (await oracle.read("ids")).slice();
    const logitBytes = (await oracle.read("logits")).slice();
    return { weights, ids: new Int32Array(idBytes.buffer), logits: new Float64Array(logitBytes.buffer) };
  } finally {
    await oracle.close();
  }
}

/** max |actual − expected| / max |expected|. */
function relativeError(actual: Float64Array, expected: Float64Array): number {
  assert.is(actual.length, expected.length);
  let worst = 0;
  let scale = 0;
  expected.forEach((x, i) => {
    scale = Math.max(scale, Math.abs(x));
    worst = Math.max(worst, Math.abs(x - actual[i]!));
  });
  assert.ok(scale > 0, "the oracle's logits are all zeros");
  return worst / scale;
}

const cpu = suite("model: forward against transformers on Llama, Mistral and Qwen2 variants");

for (const variant of VARIANTS) {
  cpu(`${variant}: CPU logits equal transformers' logits to ${TOLERANCE}`, async () => {
    const { weights, ids, logits } = await load(variant);
    const error = relativeError(new LlamaForward(weights, ids.length).run(ids), logits);
    console.log(`  ${variant} (CPU): ${error.toExponential(2)} of the largest logit`);
    assert.ok(error <= TOLERANCE, `${variant}: ${error}`);
  });
}

cpu("the families' sliding-window switches: Mistral's window is read, Qwen2's only with use_sliding_window", () => {
  const base = { hidden_size: 64, num_attention_heads: 4, num_hidden_layers: 1, vocab_size: 10 };
  assert.is(normaliseConfig({ ...base, model_type: "mistral", sliding_window: 4096 }, "c").slidingWindow, 4096);
  assert.is(normaliseConfig({ ...base, model_type: "mistral", sliding_window: null }, "c").slidingWindow, undefined);
  assert.is(normaliseConfig({ ...base, model_type: "qwen2", sliding_window: 4096 }, "c").slidingWindow, undefined);
  assert.is(normaliseConfig({ ...base, model_type: "qwen2", sliding_window: 4096, use_sliding_window: true }, "c").slidingWindow, 4096);
  assert.is(normaliseConfig({ ...base, model_type: "llama" }, "c").slidingWindow, undefined);
  assert.is(normaliseConfig({ ...base, model_type: "x", sliding_window: 512, use_sliding_window: false, layer_types: ["sliding_attention"] }, "c").slidingWindow, 512);
  assert.throws(() => normaliseConfig({ ...base, model_type: "mistral", sliding_window: -3 }, "c"), /sliding_window/);
});

cpu("a window longer than an active sliding window is refused (full attention would differ there), by the CPU forward", async () => {
  const { weights } = await load("mistral");
  const narrowed = { ...weights, config: { ...weights.config, slidingWindow: 16 } };
  assert.throws(() => new LlamaForward(narrowed, 17, "mistral/config.json"), (e: Error) => /BAD_ARGUMENT|sliding_window of 16/.test(`${(e as { code?: string }).code} ${e.message}`));
  new LlamaForward(narrowed, 16);
});
cpu.run();

const { gpu, available } = await gpuSuite("kernels/forward against transformers on Llama, Mistral and Qwen2 variants");
if (available) {
  for (const variant of VARIANTS) {
    gpu(`${variant}: GPU logits equal transformers' logits to ${TOLERANCE}`, async ({ engine }) => {
      const { weights, ids, logits } = await load(variant);
      const device = new GpuLlamaForward(engine, weights, ids.length);
      try {
        const error = relativeError(device.run(ids), logits);
        console.log(`  ${variant} (GPU): ${error.toExponential(2)} of the largest logit`);
        assert.ok(error <= TOLERANCE, `${variant}: ${error}`);
      } finally {
        device.release();
      }
    });
  }
  gpu("a window longer than an active sliding window is refused by the GPU forward too", async ({ engine }) => {
    const { weights } = await load("mistral");
    const narrowed = { ...weights, config: { ...weights.config, slidingWindow: 16 } };
    assert.throws(() => new GpuLlamaForward(engine, narrowed, 17), /sliding_window of 16/);
  });
}
gpu.run();
