import * as assert from "uvu/assert";
import { openCheckpoint } from "../../converters/open.js";
import type { BlockGradBackend } from "../../formats/int-group/quantizers/block-grad-backend.js";
import { BlockSignRound, tuneBlockSignRound, type BlockCalibration } from "../../formats/int-group/quantizers/signround-block.js";
import type { IntGroupParams } from "../../formats/int-group/types.js";
import { BLOCK_LINEARS, blockWeights, forwardBlock, type BlockContext } from "../../model/block-grad/forward.js";
import { LlamaForward } from "../../model/llama-forward.js";
import { loadLlamaWeights } from "../../model/llama-weights.js";
import { inverseFrequencies, ropeTable } from "../../model/rope.js";
import { GpuBlockGradBackend } from "../../kernels/block-grad/backend.js";
import { GpuBlockGrad } from "../../kernels/block-grad/gpu-block-grad.js";
import { GpuBlockTuner } from "../../kernels/block-grad/gpu-block-tuner.js";
import { expectCode } from "../helpers/gpu-assert.js";
import { FIXTURE_MODEL } from "../helpers/paths.js";
import { mulberry32 } from "../helpers/prng.js";
import { gpuSuite } from "../helpers/gpu-suite.js";

/**
 * Block-wise SignRound's device-resident tuner (kernels/block-grad/gpu-block-tuner.ts) against
 * the host tuner (signround-block.ts BlockSignRound: parameters and steps on the CPU) driving the
 * same GPU forward/backward. Ŵ, ∂loss/∂output and so the gradients are computed with the same
 * roundings on both sides, so they must be the same bits; the loss is summed in another order
 * (1e-12 relative). Without a GPU the suite says so and skips.
 */

const PARAMS: IntGroupParams = { bits: 2, groupSize: 32, sym: false, scaleDtype: "F16" };
const TOKENS = [96, 64, 96, 80];

/** lmpack-fixture-2m's block 1 on block 0's outputs of random ids; targets: the full-precision block's outputs. */
async function fixtureBlock(): Promise<{ ctx: BlockContext; data: BlockCalibration; maxTokens: number }> {
  const checkpoint = await openCheckpoint(FIXTURE_MODEL);
  const model = await loadLlamaWeights(checkpoint).finally(() => checkpoint.close());
  const maxTokens = Math.max(...TOKENS);
  const rng = mulberry32(21);
  const forward = new LlamaForward(model, maxTokens);
  const layer = model.layers[1]!;
  const ctx: BlockContext = { config: model.config, layer, rope: ropeTable(inverseFrequencies(model.config, FIXTURE_MODEL), model.config.headDim, maxTokens) };
  const inputs = TOKENS.map((tokens) => {
    const state = forward.embed(Int32Array.from({ length: tokens }, () => Math.floor(rng() * model.config.vocabSize)));
    forward.layer(0, state, tokens);
    return state;
  });
  const targets = inputs.map((input, w) => forwardBlock(ctx, blockWeights(layer), input, TOKENS[w]!).output);
  return { ctx, data: { inputs, targets, tokens: TOKENS }, maxTokens };
}

/** The GPU backend with its resident tuner hidden: tuneBlockSignRound then keeps the parameters on the host. */
function hostDriven(backend: GpuBlockGradBackend): BlockGradBackend {
  return {
    setWeights: (w) => backend.setWeights(w),
    forward: (input, tokens) => backend.forward(input, tokens),
    backward: (d) => backend.backward(d),
    zeroGradients: () => backend.zeroGradients(),
    gradients: () => backend.gradients(),
    release: () => backend.release(),
  };
}

const { gpu, available } = await gpuSuite("gpu block tuner against the host tuner");

if (available) {

  gpu("first iteration: Ŵ equals the CPU's quantizedWeights() and every ∂W the host-driven GPU's, bit for bit; the loss to 1e-12", async ({ engine }) => {
    const { ctx, data, maxTokens } = await fixtureBlock();
    const windows = [2, 0, 3];
    const hostBackend = new GpuBlockGradBackend(engine, ctx, maxTokens);
    const grad = new GpuBlockGrad(engine, ctx, maxTokens);
    const tuner = new GpuBlockTuner(engine, grad, ctx, PARAMS, data);
    try {
      const host = new BlockSignRound(ctx, PARAMS, hostBackend);
      const wHat = host.quantizedWeights();
      const hostLoss = host.lossAndGradients(data, windows);
      const hostGrads = host.weightGradients();
      const loss = tuner.lossAndGradients(windows);
      assert.ok(Math.abs(loss - hostLoss) <= 1e-12 * hostLoss, `loss ${loss} vs ${hostLoss}`);
      for (const key of BLOCK_LINEARS) {
        const onDevice = new Float64Array(ctx.layer[key].weight.length);
        engine.context.download(grad.weightBuffer(key).pointer, new Uint8Array(onDevice.buffer));
        assert.ok(onDevice.every((x, i) => Object.is(x, wHat[key][i])), `${key}: Ŵ differs from the CPU's`);
        engine.context.download(grad.gradientBuffer(key).pointer, new Uint8Array(onDevice.buffer));
        assert.ok(onDevice.some((x) => x !== 0), `${key}: the gradient is all zeros`);
        assert.ok(onDevice.every((x, i) => Object.is(x, hostGrads[key][i])), `${key}: ∂W differs from the host-driven GPU's`);
      }
    } finally {
      tuner.release();
      grad.release();
      hostBackend.release();
    }
  });

  gpu("12 iterations through tuneBlockSignRound: resident and host-driven give the same losses, best iteration and codes", async ({ engine }) => {
    const { ctx, data, maxTokens } = await fixtureBlock();
    const options = { iters: 12, batchSize: 2, seed: 5 };
    const run = (resident: boolean) => {
      const backend = new GpuBlockGradBackend(engine, ctx, maxTokens);
      const losses: number[] = [];
      try {
        const result = tuneBlockSignRound(ctx, PARAMS, data, { ...options, backend: resident ? backend : hostDriven(backend), onStep: (_, loss) => losses.push(loss) });
        return { result, losses };
      } finally {
        backend.release();
      }
    };
    const resident = run(true);
    const host = run(false);
    assert.is(resident.losses.length, 12);
    resident.losses.forEach((loss, t) => assert.ok(Math.abs(loss - host.losses[t]!) <= 1e-12 * host.losses[t]!, `iteration ${t}: ${loss} vs ${host.losses[t]}`));
    assert.ok(resident.losses.some((loss) => loss < resident.losses[0]!), "the tuning never lowered the loss");
    assert.is(resident.result.bestIter, host.result.bestIter);
    for (const key of BLOCK_LINEARS) {
      const [a, b] = [resident.result.linears[key].tensor, host.result.linears[key].tensor];
      assert.ok(a.codes.every((c, i) => c === b.codes[i]), `${key}: codes differ`);
      assert.ok(a.scales.every((s, i) => Object.is(s, b.scales[i])), `${key}: scales differ`);
      assert.ok(a.zeros.every((z, i) => Object.is(z, b.zeros[i])), `${key}: zeros differ`);
    }
    console.log(`  losses ${host.losses[0]!.toExponential(4)} → best ${host.result.bestLoss.toExponential(4)} at ${host.result.bestIter}; codes equal`);
  });

  gpu("a batch larger than the calibration and use after release are refused", async ({ engine }) => {
    const { ctx, data, maxTokens } = await fixtureBlock();
    const grad = new GpuBlockGrad(engine, ctx, maxTokens);
    const tuner = new GpuBlockTuner(engine, grad, ctx, PARAMS, data);
    try {
      expectCode(() => tuner.lossAndGradients([0, 1, 2, 3, 0]), "LAUNCH_REFUSED", "five windows of four");
      tuner.release();
      tuner.release();
      expectCode(() => tuner.lossAndGradients([0]), "LAUNCH_REFUSED", "after release");
      expectCode(() => tuner.step(0.01, 0.01, true), "LAUNCH_REFUSED", "step after release");
    } finally {
      tuner.release();
      grad.release();
    }
  });
}

gpu.run();
