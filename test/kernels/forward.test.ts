import { spawnSync } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { openCheckpoint } from "../../converters/open.js";
import type { ModelConfig } from "../../converters/hf/config.js";
import { isLmpackError } from "../../formats/errors.js";
import { GpuLlamaForward } from "../../kernels/forward/gpu-forward.js";
import { elementwiseLaunch, rowsLaunch } from "../../kernels/forward/launch.js";
import { checkWindowIds, planForward } from "../../kernels/forward/plan.js";
import { planBatches } from "../../kernels/forward/resident-states.js";
import { LlamaForward } from "../../model/llama-forward.js";
import { loadLlamaWeights, type Linear, type LlamaWeights } from "../../model/llama-weights.js";
import { logSumExp, windowNll } from "../../model/perplexity.js";
import { loadTokenizer } from "../../model/tokenizer.js";
import { expectCode } from "../helpers/gpu-assert.js";
import { CLI, FIXTURE_MODEL, SHARED_DIR, sharedModel } from "../helpers/paths.js";
import { gaussian, mulberry32, type Rng } from "../helpers/prng.js";
import { gpuSuite } from "../helpers/gpu-suite.js";

/**
 * The decoder forward on the GPU (kernels/forward) against the CPU reference LlamaForward. The
 * products are summed in cuBLAS's / the own GEMM's order and the row sums in a fixed tree, so the
 * two agree to float64 rounding carried through the layers, held here to 1e-9 relative: logits
 * against the largest logit, NLL per position and summed. Without a GPU only the host-side plan
 * and checks run, and `--device cuda` must be refused with NO_DEVICE.
 */

const TOLERANCE = 1e-9;
const DOCS_TEXT = join(SHARED_DIR, "text", "docs-valid.txt");

async function weightsOf(folder: string): Promise<LlamaWeights> {
  const checkpoint = await openCheckpoint(folder);
  try {
    return await loadLlamaWeights(checkpoint);
  } finally {
    await checkpoint.close();
  }
}

/** The first `count` ids of a text file under the model's own tokenizer. */
async function textIds(folder: string, textFile: string, count: number): Promise<Int32Array> {
  const text = (await readFile(textFile, "utf8")).slice(0, 40 * count);
  const ids = (await loadTokenizer(folder)).encode(text);
  assert.ok(ids.length >= count, `${textFile} gives only ${ids.length} tokens`);
  return ids.slice(0, count);
}

/** Float32 values (as the loader widens them), N(mean, sigma²). */
function randomArray(rng: Rng, length: number, sigma: number, mean = 0): Float64Array {
  return Float64Array.from({ length }, () => Math.fround(mean + sigma * gaussian(rng)));
}

/**
 * A Qwen2-like random decoder: GQA (4 heads on 2 KV heads), head_dim 12 (q is wider than the
 * hidden size), untied head, q/k/v biases and an o_proj bias (the residual path's bias), llama3
 * rope scaling, a vocabulary wider than a block's 256 threads.
 */
function tinyQwen(seed: number): LlamaWeights {
  const config: ModelConfig = {
    architecture: "Qwen2ForCausalLM", modelType: "qwen2", hiddenSize: 40, intermediateSize: 72, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 12,
    vocabSize: 1000, maxPositionEmbeddings: 512, ropeTheta: 1e6, ropeThetaSource: "rope_theta",
    ropeScaling: { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 },
    rmsNormEps: 1e-6, tiedEmbeddings: false, attentionBias: true, bosTokenId: undefined, eosTokenId: undefined, dtype: "float32",
  };
  const rng = mulberry32(seed);
  const linear = (name: string, outFeatures: number, inFeatures: number, bias: boolean): Linear => ({
    name, outFeatures, inFeatures, weight: randomArray(rng, outFeatures * inFeatures, 1 / Math.sqrt(inFeatures)), bias: bias ? randomArray(rng, outFeatures, 0.1) : undefined,
  });
  const H = config.hiddenSize;
  const I = config.intermediateSize!;
  const qOut = config.numHeads * config.headDim;
  const kvOut = config.numKvHeads * config.headDim;
  const layers = Array.from({ length: config.numLayers }, (_, i) => {
    const p = `model.layers.${i}`;
    return {
      inputNorm: randomArray(rng, H, 0.1, 1), q: linear(`${p}.self_attn.q_proj`, qOut, H, true), k: linear(`${p}.self_attn.k_proj`, kvOut, H, true),
      v: linear(`${p}.self_attn.v_proj`, kvOut, H, true), o: linear(`${p}.self_attn.o_proj`, H, qOut, true), postAttentionNorm: randomArray(rng, H, 0.1, 1),
      gate: linear(`${p}.mlp.gate_proj`, I, H, false), up: linear(`${p}.mlp.up_proj`, I, H, false), down: linear(`${p}.mlp.down_proj`, H, I, false),
    };
  });
  return { config, embed: randomArray(rng, config.vocabSize * H, 1), layers, finalNorm: randomArray(rng, H, 0.1, 1), head: randomArray(rng, config.vocabSize * H, 1 / Math.sqrt(H)) };
}

function randomIds(seed: number, count: number, vocab: number): Int32Array {
  const rng = mulberry32(seed);
  return Int32Array.from({ length: count }, () => Math.floor(rng() * vocab));
}

// ---------------------------------------------------------------------------------------------

const host = suite("gpu forward: host-side plan and checks");

host("the plan of a GQA model with an untied head counts every weight once and sizes one window", () => {
  const w = tinyQwen(1);
  const plan = planForward(w, 300);
  const layerElements = w.layers.reduce((sum, l) => sum + l.inputNorm.length + l.postAttentionNorm.length + [l.q, l.k, l.v, l.o, l.gate, l.up, l.down].reduce((s, x) => s + x.weight.length + (x.bias?.length ?? 0), 0), 0);
  assert.is(plan.weightElements, layerElements + w.embed.length + w.head.length + w.finalNorm.length);
  assert.equal([plan.qOut, plan.kvOut, plan.tiedHead], [48, 24, false]);
  const T = 300;
  assert.is(plan.activationElements, T * (2 * 40 + 2 * 48 + 2 * 24 + 2 * 72 + T + 1000 + 1 + 12));
  assert.is(planForward({ ...w, head: w.embed }, 8).weightElements, plan.weightElements - w.head.length, "a tied head is uploaded once");
});

host("shapes the kernels would trust are refused before anything is allocated", () => {
  const w = tinyQwen(2);
  const short = { ...w, layers: w.layers.map((l, i) => (i === 1 ? { ...l, k: { ...l.k, weight: l.k.weight.subarray(1) } } : l)) };
  const error = (() => {
    try {
      planForward(short, 16);
    } catch (caught) {
      return caught;
    }
    return assert.unreachable("a short k_proj was accepted");
  })();
  assert.ok(isLmpackError(error), String(error));
  assert.equal([error.code, error.tensor, error.expected, error.actual], ["LAUNCH_REFUSED", "model.layers.1.self_attn.k_proj.weight", 24 * 40, 24 * 40 - 1]);
  expectCode(() => planForward({ ...w, head: w.head.subarray(0, 10) }, 16), "LAUNCH_REFUSED", "short head");
  expectCode(() => planForward({ ...w, layers: w.layers.slice(1) }, 16), "LAUNCH_REFUSED", "missing layer");
  expectCode(() => planForward({ ...w, config: { ...w.config, headDim: 11 } }, 16), "BAD_ARGUMENT", "odd head dim");
  expectCode(() => planForward({ ...w, config: { ...w.config, numKvHeads: 3 } }, 16), "LAUNCH_REFUSED", "heads not a multiple of kv heads");
  expectCode(() => planForward({ ...w, config: { ...w.config, intermediateSize: undefined } }, 16), "LAUNCH_REFUSED", "no intermediate size");
  for (const maxTokens of [0, -1, 2.5, Number.NaN]) expectCode(() => planForward(w, maxTokens), "BAD_ARGUMENT", `maxTokens ${maxTokens}`);
});

host("token ids outside the vocabulary and windows past maxTokens are refused with the CPU forward's code", () => {
  const plan = planForward(tinyQwen(3), 8);
  checkWindowIds(Int32Array.of(0, 999, 5), plan);
  checkWindowIds(new Int32Array(0), plan);
  expectCode(() => checkWindowIds(Int32Array.of(0, 1000), plan), "BAD_ARGUMENT", "id = vocab");
  expectCode(() => checkWindowIds(Int32Array.of(-1), plan), "BAD_ARGUMENT", "negative id");
  expectCode(() => checkWindowIds(new Int32Array(9), plan), "BAD_ARGUMENT", "9 tokens on a forward of 8");
});

host("launch shapes: 256 threads, one per element or one block per row; empty and oversized grids refused", () => {
  assert.equal(elementwiseLaunch("k", 1000), { grid: [4], block: [256] });
  assert.equal(elementwiseLaunch("k", 256), { grid: [1], block: [256] });
  assert.equal(rowsLaunch("k", 511), { grid: [511], block: [256] });
  expectCode(() => elementwiseLaunch("k", 0), "LAUNCH_REFUSED");
  expectCode(() => elementwiseLaunch("k", 256 * 2 ** 31), "LAUNCH_REFUSED");
  expectCode(() => rowsLaunch("k", 2 ** 31), "LAUNCH_REFUSED");
});

host("resident states' batches: consecutive equal-length windows, cut at a length change and at the capacity; empty windows skipped", () => {
  const windows = [4, 4, 4, 2, 2, 0, 4, 4].map((n) => new Int32Array(n));
  assert.equal(planBatches(windows, 2), [{ from: 0, to: 2 }, { from: 2, to: 3 }, { from: 3, to: 5 }, { from: 6, to: 8 }]);
  assert.equal(planBatches(windows, 8), [{ from: 0, to: 3 }, { from: 3, to: 5 }, { from: 6, to: 8 }]);
  assert.equal(planBatches(windows, 1).length, 7);
  assert.equal(planBatches([], 4), []);
});

host.run();

// ---------------------------------------------------------------------------------------------

const { gpu, available } = await gpuSuite("gpu forward against the CPU forward");

/** GPU logits, per-position NLL and window sum against LlamaForward's on `ids`. */
function assertSameWindow(device: GpuLlamaForward, cpu: LlamaForward, ids: Int32Array, label: string): void {
  const vocab = cpu.weights.config.vocabSize;
  const expected = cpu.run(ids);
  const logits = device.run(ids);
  assert.is(logits.length, expected.length, `${label}: logits length`);
  let scale = 0;
  let worst = 0;
  expected.forEach((x, i) => {
    scale = Math.max(scale, Math.abs(x));
    worst = Math.max(worst, Math.abs(x - logits[i]!));
  });
  const nll = device.positionNll(ids);
  assert.is(nll.length, Math.max(0, ids.length - 1), `${label}: NLL length`);
  let worstNll = 0;
  nll.forEach((term, t) => {
    const reference = logSumExp(expected, t * vocab, vocab) - expected[t * vocab + ids[t + 1]!]!;
    worstNll = Math.max(worstNll, Math.abs(term - reference) / Math.max(1, Math.abs(reference)));
  });
  const sum = device.scoreWindow(ids);
  const sumReference = windowNll(expected, ids, vocab);
  const sumRelative = ids.length < 2 ? Math.abs(sum.nllSum) : Math.abs(sum.nllSum - sumReference) / Math.abs(sumReference);
  console.log(`  ${label}: logits ${(worst / scale).toExponential(2)} of max |logit| ${scale.toFixed(2)}, NLL per position ${worstNll.toExponential(2)}, window sum ${sumRelative.toExponential(2)}`);
  assert.ok(worst <= TOLERANCE * scale, `${label}: logits differ by ${worst} (max |logit| ${scale})`);
  assert.ok(worstNll <= TOLERANCE, `${label}: NLL differs by ${worstNll}`);
  assert.ok(sumRelative <= TOLERANCE, `${label}: NLL sum ${sum.nllSum} vs ${sumReference}`);
  assert.is(sum.scored, Math.max(0, ids.length - 1));
  // Fixed-order reductions and one GEMM order per shape: the same window gives the same bits.
  const again = device.positionNll(ids);
  assert.ok(again.every((x, t) => Object.is(x, nll[t])), `${label}: a second run differs`);
}

if (available) {

  const models = [
    { name: "tinystories-656K", folder: sharedModel("tinystories-656K"), text: join(SHARED_DIR, "text", "tinystories-valid-head.txt") },
    { name: "lmpack-fixture-2m", folder: FIXTURE_MODEL, text: DOCS_TEXT },
  ];
  for (const model of models) {
    gpu(`${model.name}: windows of 512, 301 and 1 tokens give the CPU's logits and NLL to 1e-9`, async ({ engine }) => {
      const weights = await weightsOf(model.folder);
      const ids = await textIds(model.folder, model.text, 512);
      const device = new GpuLlamaForward(engine, weights, 512, model.folder);
      try {
        const cpu = new LlamaForward(weights, 512);
        // The long window first: the shorter ones must not read what it left in the buffers.
        assertSameWindow(device, cpu, ids, `${model.name} 512`);
        assertSameWindow(device, cpu, ids.subarray(100, 401), `${model.name} 301`);
        assertSameWindow(device, cpu, ids.subarray(7, 8), `${model.name} 1`);
      } finally {
        device.release();
      }
    });
  }

  gpu("random Qwen2-like decoder (GQA, untied head, qkv and o biases, llama3 rope scaling): the CPU's logits and NLL to 1e-9", ({ engine }) => {
    const weights = tinyQwen(7);
    const device = new GpuLlamaForward(engine, weights, 300);
    try {
      const cpu = new LlamaForward(weights, 300);
      assertSameWindow(device, cpu, randomIds(8, 300, weights.config.vocabSize), "tiny qwen 300");
      assertSameWindow(device, cpu, randomIds(9, 37, weights.config.vocabSize), "tiny qwen 37");
    } finally {
      device.release();
    }
  });

  gpu("an id outside the vocabulary or a window past maxTokens is refused before any launch; the forward stays usable; use after release is refused", ({ engine }) => {
    const weights = tinyQwen(11);
    const device = new GpuLlamaForward(engine, weights, 64);
    const ids = randomIds(12, 64, 1000);
    const before = device.positionNll(ids);
    const bad = ids.slice();
    bad[17] = 1000;
    expectCode(() => device.scoreWindow(bad), "BAD_ARGUMENT", "id = vocab");
    bad[17] = -3;
    expectCode(() => device.run(bad), "BAD_ARGUMENT", "negative id");
    expectCode(() => device.positionNll(new Int32Array(65)), "BAD_ARGUMENT", "65 tokens on a forward of 64");
    // Nothing was launched with the bad ids: the status word is clean and the result unchanged.
    const after = device.positionNll(ids);
    assert.ok(after.every((x, t) => Object.is(x, before[t])), "the forward changed after a refused window");
    device.release();
    device.release();
    expectCode(() => device.positionNll(ids), "LAUNCH_REFUSED", "after release");
  });

}

gpu.run();

// ---------------------------------------------------------------------------------------------

const cli = suite("lmpack eval --device");

function evalJson(device: string, maxTokens: number): { status: number | null; stderr: string; result?: { perplexity: number; device: string; precision: string; windows: number; scored: number } } {
  const run = spawnSync(process.execPath, [CLI, "eval", FIXTURE_MODEL, "--text", DOCS_TEXT, "--max-tokens", String(maxTokens), "--device", device, "--json"], { encoding: "utf8" });
  return { status: run.status, stderr: run.stderr, ...(run.status === 0 ? { result: JSON.parse(run.stdout) } : {}) };
}

cli(`--device cuda ${available ? "gives --device cpu's perplexity to 1e-9 and names the GPU" : "is refused with NO_DEVICE when no GPU is usable; auto falls back to the CPU"}`, () => {
  if (!available) {
    const cuda = spawnSync(process.execPath, [CLI, "eval", FIXTURE_MODEL, "--text", DOCS_TEXT, "--max-tokens", "1024", "--device", "cuda"], { encoding: "utf8" });
    assert.is(cuda.status, 2, cuda.stderr);
    assert.match(cuda.stderr, /NO_DEVICE/);
    const auto = evalJson("auto", 1024);
    assert.is(auto.status, 0, auto.stderr);
    assert.is(auto.result?.device, "cpu");
    return;
  }
  const onGpu = evalJson("cuda", 2048);
  const onCpu = evalJson("cpu", 2048);
  assert.is(onGpu.status, 0, onGpu.stderr);
  assert.is(onCpu.status, 0, onCpu.stderr);
  const [g, c] = [onGpu.result!, onCpu.result!];
  console.log(`  perplexity ${g.device} ${g.perplexity} vs cpu ${c.perplexity}`);
  assert.match(g.device, /NVIDIA/);
  assert.is(c.device, "cpu");
  assert.is(g.precision, "fp32 weights, fp64 arithmetic");
  assert.equal([g.windows, g.scored], [c.windows, c.scored]);
  assert.ok(Math.abs(g.perplexity - c.perplexity) <= TOLERANCE * c.perplexity, `${g.perplexity} vs ${c.perplexity}`);
});

cli.run();
