import { suite } from "uvu";
import * as assert from "uvu/assert";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { openCheckpoint } from "../../converters/open.js";
import { calibrateHessians } from "../../converters/hessians/calibrate.js";
import { openHessianStore } from "../../converters/hessians/store.js";
import { LlamaForward, rmsNorm } from "../../model/llama-forward.js";
import { loadLlamaWeights, type LlamaWeights } from "../../model/llama-weights.js";
import { readNpy } from "../helpers/npy.js";
import { CLI, SHARED_DIR, sharedModel, tempDir } from "../helpers/paths.js";

/**
 * The CPU decoder forward against transformers: the fp32 logits of the first 512-token window
 * of docs-valid (shared/models/token-ids/*.window0.logits-f32.npy, every 64th position) and the
 * perplexities of shared/models/README.md (fp32, first 4096 tokens); calibration's Hessians
 * against XᵀX formed here from the embedding rows (layer 0's q/k/v input needs no attention).
 */

const TEXT = join(SHARED_DIR, "text", "docs-valid.txt");
const weights = new Map<string, Promise<LlamaWeights>>();
function weightsOf(model: string): Promise<LlamaWeights> {
  let w = weights.get(model);
  if (w === undefined) {
    w = openCheckpoint(sharedModel(model)).then(async (checkpoint) => {
      try {
        return await loadLlamaWeights(checkpoint);
      } finally {
        await checkpoint.close();
      }
    });
    weights.set(model, w);
  }
  return w;
}

function firstWindow(model: string): Int32Array {
  const ids = readNpy(join(SHARED_DIR, "models", "token-ids", `${model}.docs-valid.ids.npy`)).data;
  return Int32Array.from(ids.subarray(0, 512));
}

const forward = suite("model: Llama forward against transformers");

for (const model of ["docs-llama-16m", "lmpack-fixture-2m"]) {
  forward(`${model}: logits of window 0 equal transformers fp32 within 1e-4`, async () => {
    const w = await weightsOf(model);
    const reference = readNpy(join(SHARED_DIR, "models", "token-ids", `${model}.window0.logits-f32.npy`));
    const vocab = w.config.vocabSize;
    assert.equal(reference.shape, [8, vocab]);
    const logits = new LlamaForward(w, 512).run(firstWindow(model));
    let worst = 0;
    let at = -1;
    for (let r = 0; r < 8; r++) {
      for (let j = 0; j < vocab; j++) {
        const diff = Math.abs(logits[r * 64 * vocab + j]! - reference.data[r * vocab + j]!);
        if (diff > worst) [worst, at] = [diff, r * vocab + j];
      }
    }
    // Measured 1.3e-5 for both models (logits up to ~22): float32 rounding in the reference.
    assert.ok(worst < 1e-4, `largest difference ${worst} at position ${Math.floor(at / vocab) * 64}, token ${at % vocab}`);
  });
}

forward("lmpack eval: perplexity of the first 4096 tokens equals the transformers fp32 figures", () => {
  for (const [model, expected] of [["lmpack-fixture-2m", 10.9441], ["docs-llama-16m", 11.0807]] as const) {
    const run = spawnSync(process.execPath, [CLI, "eval", sharedModel(model), "--text", TEXT, "--max-tokens", "4096", "--json"], { encoding: "utf8" });
    assert.is(run.status, 0, run.stderr);
    const result = JSON.parse(run.stdout) as { perplexity: number; windows: number; scored: number };
    assert.is(result.windows, 8);
    assert.is(result.scored, 8 * 511);
    // The README gives 4 decimals.
    assert.ok(Math.abs(result.perplexity - expected) < 5e-5, `${model}: ${result.perplexity} vs ${expected}`);
  }
});

forward("a token id outside the vocabulary is refused before any lookup", async () => {
  const w = await weightsOf("lmpack-fixture-2m");
  assert.throws(() => new LlamaForward(w, 8).run(Int32Array.of(1, w.config.vocabSize)), /outside the vocabulary/);
});

forward.run();

const calibration = suite("model: calibration Hessians");

calibration("layer 0's q/k/v Hessian is XᵀX of the normed embedding rows; the store round-trips through lmpack calibrate", async () => {
  const w = await weightsOf("lmpack-fixture-2m");
  const ids = firstWindow("lmpack-fixture-2m").subarray(0, 64);
  const entries = calibrateHessians(new LlamaForward(w, 64), [ids]);
  const q0 = entries.find((e) => e.name === "model.layers.0.self_attn.q_proj")!;
  assert.equal(q0.aliases, ["model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.v_proj"]);
  assert.is(q0.hessian.nSamples, 64);
  const H = w.config.hiddenSize;
  const rows = new Float64Array(64 * H);
  ids.forEach((id, t) => rows.set(w.embed.subarray(id * H, (id + 1) * H), t * H));
  const x = rmsNorm(rows, 64, H, w.layers[0]!.inputNorm, w.config.rmsNormEps);
  let worst = 0;
  let scale = 0;
  for (let i = 0; i < H; i++) {
    for (let j = 0; j < H; j++) {
      let sum = 0;
      for (let t = 0; t < 64; t++) sum += x[t * H + i]! * x[t * H + j]!;
      worst = Math.max(worst, Math.abs(sum - q0.hessian.data[i * H + j]!));
      scale = Math.max(scale, Math.abs(sum));
    }
  }
  assert.ok(worst <= 1e-12 * scale, `XᵀX differs by ${worst} (scale ${scale})`);
  // Every layer input: q, o, gate, down per layer.
  assert.is(entries.length, 4 * w.config.numLayers);

  const dir = await tempDir();
  try {
    const out = join(dir.path, "h");
    const run = spawnSync(process.execPath, [CLI, "calibrate", sharedModel("lmpack-fixture-2m"), "--text", TEXT, "--samples", "2", "--seq-len", "64", "--out", out, "--json"], { encoding: "utf8" });
    assert.is(run.status, 0, run.stderr);
    const summary = JSON.parse(run.stdout) as { inputs: number; tokens: number };
    assert.equal([summary.inputs, summary.tokens], [16, 128]);
    const store = await openHessianStore(out);
    const up = await store.get("model.layers.3.mlp.up_proj", H);
    const down = await store.get("model.layers.3.mlp.down_proj", w.config.intermediateSize!);
    await store.close();
    assert.is(up?.nSamples, 128);
    assert.is(down?.size, w.config.intermediateSize);
    // Symmetric with a positive diagonal.
    for (let i = 0; i < H; i++) {
      assert.ok(up!.data[i * H + i]! > 0);
      for (let j = 0; j < i; j++) assert.is(up!.data[i * H + j], up!.data[j * H + i]);
    }
    const again = spawnSync(process.execPath, [CLI, "calibrate", sharedModel("lmpack-fixture-2m"), "--text", TEXT, "--samples", "2", "--seq-len", "64", "--out", out], { encoding: "utf8" });
    assert.is(again.status, 2, "an existing store is refused without --force");
    assert.match(again.stderr, /OUTPUT_EXISTS/);
  } finally {
    await dir.cleanup();
  }
});

calibration.run();
