import { suite } from "uvu";
import * as assert from "uvu/assert";
import { openCheckpoint } from "../../converters/open.js";
import type { ModelConfig } from "../../converters/hf/config.js";
import { BlockSignRound } from "../../formats/int-group/quantizers/signround-block.js";
import { backwardBlock } from "../../model/block-grad/backward.js";
import { BLOCK_LINEARS, forwardBlock, type BlockContext, type BlockLinearWeights } from "../../model/block-grad/forward.js";
import { LlamaForward } from "../../model/llama-forward.js";
import { loadLlamaWeights, type DecoderLayerWeights, type Linear } from "../../model/llama-weights.js";
import { inverseFrequencies, ropeTable } from "../../model/rope.js";
import { GpuBlockGrad } from "../../kernels/block-grad/gpu-block-grad.js";
import { gemmOn, launchSwigluBackward } from "../../kernels/block-grad/launch.js";
import { checkBlockWeights, checkWindow, planBlockGrad } from "../../kernels/block-grad/plan.js";
import type { GpuEngine } from "../../kernels/engine.js";
import { expectCode } from "../helpers/gpu-assert.js";
import { FIXTURE_MODEL } from "../helpers/paths.js";
import { gaussian, mulberry32, type Rng } from "../helpers/prng.js";
import { gpuSuite } from "../helpers/gpu-suite.js";

/**
 * One decoder block's forward and ∂loss/∂W on the GPU (kernels/block-grad) against the CPU
 * reference model/block-grad. The products are summed in gemmF64's order and the row sums in a
 * fixed tree, so the two agree to float64 rounding, held here to 1e-9 relative (per array, against
 * its largest magnitude). Without a GPU only the host-side plan and checks run.
 */

const TOLERANCE = 1e-9;

const randn = (rng: Rng, n: number, sigma: number, mean = 0): Float64Array => Float64Array.from({ length: n }, () => Math.fround(mean + sigma * gaussian(rng)));

/** GQA (4 heads on 2 KV heads), head_dim 12 (q wider than hidden), q/k/v and o biases: every bias path. */
function randomBlock(seed: number, positions: number): BlockContext {
  const config: ModelConfig = {
    architecture: "Qwen2ForCausalLM", modelType: "qwen2", hiddenSize: 40, intermediateSize: 72, numLayers: 1, numHeads: 4, numKvHeads: 2, headDim: 12,
    vocabSize: 64, maxPositionEmbeddings: undefined, ropeTheta: 10000, ropeThetaSource: "default", ropeScaling: undefined, rmsNormEps: 1e-6,
    tiedEmbeddings: true, attentionBias: true, bosTokenId: undefined, eosTokenId: undefined, dtype: undefined,
  };
  const rng = mulberry32(seed);
  const lin = (name: string, out: number, inF: number, bias: boolean): Linear => ({ name: `model.layers.0.${name}`, outFeatures: out, inFeatures: inF, weight: randn(rng, out * inF, 1 / Math.sqrt(inF)), bias: bias ? randn(rng, out, 0.1) : undefined });
  const layer: DecoderLayerWeights = {
    inputNorm: randn(rng, 40, 0.1, 1), postAttentionNorm: randn(rng, 40, 0.1, 1),
    q: lin("self_attn.q_proj", 48, 40, true), k: lin("self_attn.k_proj", 24, 40, true), v: lin("self_attn.v_proj", 24, 40, true), o: lin("self_attn.o_proj", 40, 48, true),
    gate: lin("mlp.gate_proj", 72, 40, false), up: lin("mlp.up_proj", 72, 40, false), down: lin("mlp.down_proj", 40, 72, false),
  };
  return { config, layer, rope: ropeTable(inverseFrequencies(config, "test"), config.headDim, positions) };
}

/** Weights other than the block's own (as SignRound passes its fake-quantized ones): the GPU must use these. */
function perturbed(ctx: BlockContext, rng: Rng): BlockLinearWeights {
  return Object.fromEntries(BLOCK_LINEARS.map((key) => [key, ctx.layer[key].weight.map((w) => Math.fround(w + 0.05 * gaussian(rng)))])) as BlockLinearWeights;
}

const zeroGrads = (ctx: BlockContext): BlockLinearWeights => Object.fromEntries(BLOCK_LINEARS.map((key) => [key, new Float64Array(ctx.layer[key].weight.length)])) as BlockLinearWeights;

/** max |actual − expected| / max |expected| ≤ TOLERANCE, with a non-trivial expected array. */
function assertClose(actual: Float64Array, expected: Float64Array, what: string): number {
  assert.is(actual.length, expected.length, `${what}: length`);
  let scale = 0;
  let worst = 0;
  expected.forEach((x, i) => {
    scale = Math.max(scale, Math.abs(x));
    worst = Math.max(worst, Math.abs(x - actual[i]!));
  });
  assert.ok(scale > 0, `${what}: the reference is all zeros`);
  assert.ok(worst <= TOLERANCE * scale, `${what}: differs by ${worst} (max |reference| ${scale}, relative ${worst / scale})`);
  return worst / scale;
}

/** One window through both: output, then every gradient accumulated so far on both sides. */
function compareWindow(device: GpuBlockGrad, ctx: BlockContext, weights: BlockLinearWeights, cpuGrads: BlockLinearWeights, input: Float64Array, tokens: number, dOutput: Float64Array, label: string): void {
  const tape = forwardBlock(ctx, weights, input, tokens);
  const output = device.forward(input, tokens);
  const errors = [`output ${assertClose(output, tape.output, `${label} output`).toExponential(1)}`];
  backwardBlock(ctx, weights, tape, dOutput, cpuGrads);
  device.backward(dOutput);
  const grads = device.gradients();
  for (const key of BLOCK_LINEARS) errors.push(`${key} ${assertClose(grads[key], cpuGrads[key], `${label} ∂W ${key}`).toExponential(1)}`);
  console.log(`  ${label}: ${errors.join(", ")}`);
}

// ---------------------------------------------------------------------------------------------

const host = suite("gpu block grad: host-side plan and checks");

host("the plan counts the seven weights, the frozen parts and one window's tape and scratch", () => {
  const ctx = randomBlock(1, 300);
  const plan = planBlockGrad(ctx, 300);
  assert.equal([plan.qWidth, plan.kvWidth, plan.intermediate, plan.shapes.o, plan.shapes.down], [48, 24, 72, [40, 48], [40, 72]]);
  assert.is(plan.weightElements, BLOCK_LINEARS.reduce((sum, key) => sum + ctx.layer[key].weight.length, 0));
  assert.is(plan.frozenElements, 2 * 40 + 48 + 24 + 24 + 40 + 300 * 12);
  const T = 300;
  assert.is(plan.activationElements, 7 * T * 40 + 4 * T * 48 + 4 * T * 24 + 5 * T * 72 + 4 * T * T + T * T + 2 * T);
});

host("shapes the kernels would trust are refused before anything is allocated", () => {
  const ctx = randomBlock(2, 64);
  const { layer } = ctx;
  expectCode(() => planBlockGrad({ ...ctx, layer: { ...layer, k: { ...layer.k, bias: layer.k.bias!.subarray(1) } } }, 16), "LAUNCH_REFUSED", "short k bias");
  expectCode(() => planBlockGrad({ ...ctx, layer: { ...layer, postAttentionNorm: layer.postAttentionNorm.subarray(1) } }, 16), "LAUNCH_REFUSED", "short norm");
  expectCode(() => planBlockGrad({ ...ctx, layer: { ...layer, down: { ...layer.down, inFeatures: 71 } } }, 16), "LAUNCH_REFUSED", "down's shape");
  expectCode(() => planBlockGrad(ctx, 65), "LAUNCH_REFUSED", "rope table shorter than the window");
  expectCode(() => planBlockGrad({ ...ctx, config: { ...ctx.config, numKvHeads: 3 } }, 16), "LAUNCH_REFUSED", "heads not a multiple of kv heads");
  expectCode(() => planBlockGrad({ ...ctx, config: { ...ctx.config, headDim: 11 } }, 16), "BAD_ARGUMENT", "odd head dim");
  for (const maxTokens of [0, -1, 2.5, Number.NaN]) expectCode(() => planBlockGrad(ctx, maxTokens), "BAD_ARGUMENT", `maxTokens ${maxTokens}`);
  const plan = planBlockGrad(ctx, 16);
  expectCode(() => checkBlockWeights(plan, { ...perturbed(ctx, mulberry32(3)), gate: new Float64Array(72 * 40 - 1) }), "LAUNCH_REFUSED", "short gate weight");
  expectCode(() => checkWindow(plan, new Float64Array(17 * 40), 17, "input"), "BAD_ARGUMENT", "17 tokens on 16");
  expectCode(() => checkWindow(plan, new Float64Array(5 * 40 - 1), 5, "input"), "BAD_ARGUMENT", "short input");
});

host("a product or launch past a buffer's end is refused before the device is touched", () => {
  // Refused before the engine is used: an empty stand-in suffices.
  const engine = {} as GpuEngine;
  const array = (elements: number) => ({ pointer: 4096n, elements });
  expectCode(() => gemmOn(engine, "test", 4, 4, 4, 1, { array: array(16), ld: 4 }, { array: array(16), ld: 4 }, 0, { array: array(16), offset: 1, ld: 4 }), "LAUNCH_REFUSED", "C one past the end");
  expectCode(() => gemmOn(engine, "test", 4, 4, 4, 1, { array: array(16), ld: 4, trans: true }, { array: array(15), ld: 4 }, 0, { array: array(16), ld: 4 }), "LAUNCH_REFUSED", "short B");
  expectCode(() => gemmOn(engine, "test", 4, 4, 4, 1, { array: array(16), ld: 3 }, { array: array(16), ld: 4 }, 0, { array: array(16), ld: 4 }), "LAUNCH_REFUSED", "ld below the row");
  expectCode(() => launchSwigluBackward(engine, array(8), { pointer: 8192n, elements: 8 }, array(8), { pointer: 12288n, elements: 8 }, 8), "LAUNCH_REFUSED", "aliased buffers");
});

host.run();

// ---------------------------------------------------------------------------------------------

const { gpu, available } = await gpuSuite("gpu block grad against model/block-grad");

if (available) {

  gpu("random GQA block with q/k/v/o biases: output and every ∂W to 1e-9, over windows of 300 and 37 tokens accumulated; deterministic", ({ engine }) => {
    const ctx = randomBlock(7, 300);
    const rng = mulberry32(8);
    const weights = perturbed(ctx, rng);
    const device = new GpuBlockGrad(engine, ctx, 300);
    try {
      device.setWeights(weights);
      const cpuGrads = zeroGrads(ctx);
      // The long window first: the shorter one must not read what it left in the buffers.
      const long = randn(rng, 300 * 40, 1);
      compareWindow(device, ctx, weights, cpuGrads, long, 300, randn(rng, 300 * 40, 1), "random 300");
      const short = randn(rng, 37 * 40, 1);
      const dShort = randn(rng, 37 * 40, 1);
      compareWindow(device, ctx, weights, cpuGrads, short, 37, dShort, "random 37 (accumulated)");
      // Same window, same weights, gradients from zero: the same bits twice.
      device.zeroGradients();
      assert.ok(BLOCK_LINEARS.every((key) => device.gradients()[key].every((g) => g === 0)), "zeroGradients left a non-zero");
      const first = device.forward(short, 37);
      device.backward(dShort);
      const once = device.gradients();
      device.zeroGradients();
      const second = device.forward(short, 37);
      device.backward(dShort);
      const twice = device.gradients();
      assert.ok(first.every((x, i) => Object.is(x, second[i])), "a second forward differs");
      for (const key of BLOCK_LINEARS) assert.ok(once[key].every((x, i) => Object.is(x, twice[key][i])), `${key}: a second backward differs`);
    } finally {
      device.release();
    }
  });

  gpu("lmpack-fixture-2m block 1 with SignRound's RTN start weights on block 0's output: output and every ∂W of the MSE to 1e-9", async ({ engine }) => {
    const checkpoint = await openCheckpoint(FIXTURE_MODEL);
    const model = await loadLlamaWeights(checkpoint).finally(() => checkpoint.close());
    const T = 128;
    const rng = mulberry32(9);
    const ids = Int32Array.from({ length: T }, () => Math.floor(rng() * model.config.vocabSize));
    const cpuForward = new LlamaForward(model, T);
    const input = cpuForward.embed(ids);
    cpuForward.layer(0, input, T);
    const layer = model.layers[1]!;
    const ctx: BlockContext = { config: model.config, layer, rope: ropeTable(inverseFrequencies(model.config, FIXTURE_MODEL), model.config.headDim, T) };
    const weights = new BlockSignRound(ctx, { bits: 2, groupSize: 32, sym: false, scaleDtype: "F16" }).quantizedWeights();
    const own = Object.fromEntries(BLOCK_LINEARS.map((key) => [key, layer[key].weight])) as BlockLinearWeights;
    const target = forwardBlock(ctx, own, input, T).output;
    const quantized = forwardBlock(ctx, weights, input, T).output;
    // signround-block.ts lossAndGradients' ∂MSE/∂output.
    const dOutput = quantized.map((y, i) => (2 * (y - target[i]!)) / quantized.length);
    const device = new GpuBlockGrad(engine, ctx, T);
    try {
      device.setWeights(weights);
      compareWindow(device, ctx, weights, zeroGrads(ctx), input, T, dOutput, "fixture block 1");
    } finally {
      device.release();
    }
  });

  gpu("backward without a forward on the current weights, a window past maxTokens and use after release are refused", ({ engine }) => {
    const ctx = randomBlock(10, 16);
    const rng = mulberry32(11);
    const device = new GpuBlockGrad(engine, ctx, 16);
    try {
      expectCode(() => device.forward(randn(rng, 4 * 40, 1), 4), "LAUNCH_REFUSED", "forward before setWeights");
      device.setWeights(perturbed(ctx, rng));
      expectCode(() => device.backward(new Float64Array(4 * 40)), "LAUNCH_REFUSED", "backward before forward");
      device.forward(randn(rng, 4 * 40, 1), 4);
      expectCode(() => device.backward(new Float64Array(5 * 40)), "BAD_ARGUMENT", "∂output of another window");
      device.setWeights(perturbed(ctx, rng));
      expectCode(() => device.backward(new Float64Array(4 * 40)), "LAUNCH_REFUSED", "backward after new weights");
      expectCode(() => device.forward(new Float64Array(17 * 40), 17), "BAD_ARGUMENT", "17 tokens on 16");
    } finally {
      device.release();
    }
    device.release();
    expectCode(() => device.gradients(), "LAUNCH_REFUSED", "after release");
  });

}

gpu.run();
