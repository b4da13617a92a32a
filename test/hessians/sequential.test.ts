import { suite } from "uvu";
import * as assert from "uvu/assert";
import { spawnSync } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Checkpoint } from "../../converters/checkpoint.js";
import { calibrateHessians } from "../../converters/hessians/calibrate.js";
import { SequentialHessians, type SequentialOptions } from "../../converters/hessians/sequential.js";
import { GpuEngine, gpuAvailable } from "../../kernels/engine.js";
import { GpuLlamaForward } from "../../kernels/forward/gpu-forward.js";
import { layerBufferBytesPerWindow } from "../../kernels/forward/activations.js";
import { planForward } from "../../kernels/forward/plan.js";
import { GpuHessians } from "../../kernels/linalg/hessian-accumulate.js";
import { quantizeCheckpoint } from "../../converters/int-group/quantize-checkpoint.js";
import { exportLmpack } from "../../converters/lmpack/export.js";
import { openCheckpoint } from "../../converters/open.js";
import { UsageError } from "../../formats/errors.js";
import type { Hessian, HessianSource } from "../../formats/second-order/hessian.js";
import { LlamaForward } from "../../model/llama-forward.js";
import { loadLlamaWeights, type DecoderLayerWeights, type LlamaWeights } from "../../model/llama-weights.js";
import { readNpy } from "../helpers/npy.js";
import { CLI, FIXTURE_MODEL, SHARED_DIR, tempDir } from "../helpers/paths.js";

/**
 * Sequential calibration on the fixture model: layer l's H must be exactly what calibrateHessians
 * gives on a model whose earlier linears are explicitly swapped for the dequantized weights the
 * exported file holds; layer 0's q/k/v H must equal the full-precision calibration's.
 */

const TOKENS = 48;
const WINDOWS = 3;
/** True-sequential groups, in order: a group's H is taken with the groups before it quantized. */
const GROUPS: (keyof DecoderLayerWeights)[][] = [["q", "k", "v"], ["o"], ["gate", "up"], ["down"]];
const GPTQ = { method: "gptq" as const, bits: 4 as const, groupSize: 64, sym: false, percDamp: 0.01 };

/** WINDOWS windows of TOKENS tokens, or of the given lengths. */
function calibrationWindows(lengths: readonly number[] = Array.from({ length: WINDOWS }, () => TOKENS)): Int32Array[] {
  const ids = readNpy(join(SHARED_DIR, "models", "token-ids", "lmpack-fixture-2m.docs-valid.ids.npy")).data;
  return lengths.map((length, w) => Int32Array.from(ids.subarray(w * 1000, w * 1000 + length)));
}

async function withFixture<T>(use: (checkpoint: Checkpoint) => Promise<T>): Promise<T> {
  const checkpoint = await openCheckpoint(FIXTURE_MODEL);
  try {
    return await use(checkpoint);
  } finally {
    await checkpoint.close();
  }
}

/** Quantizes the fixture with GPTQ on sequential Hessians, pulling layers in `order`; records every H handed out. */
async function quantizeSequentially(checkpoint: Checkpoint, trueSequential: boolean, order: "storage" | "reversed", gpu: Pick<SequentialOptions, "forward" | "products" | "resident"> = {}, windows = calibrationWindows()): Promise<{ view: Checkpoint; handed: Map<string, Hessian>; close(): Promise<void> }> {
  const sequential = new SequentialHessians(await loadLlamaWeights(checkpoint), windows, { trueSequential, ...gpu });
  const handed = new Map<string, Hessian>();
  const recording: HessianSource = {
    get: async (name, inFeatures) => {
      const h = (await sequential.get(name, inFeatures))!;
      handed.set(name, h);
      return h;
    },
  };
  const view = sequential.follow(quantizeCheckpoint(checkpoint, { ...GPTQ, hessians: recording }));
  const tensors = order === "storage" ? view.tensors : [...view.tensors].reverse();
  for (const t of tensors) if (t.packed !== undefined) await t.packed.load();
  return { view, handed, close: () => sequential.close() };
}

/** `full` with layers before `layer`, and groups before `group` in `layer`, taken from `quantized`. */
function mixed(full: LlamaWeights, quantized: LlamaWeights, layer: number, group: number): LlamaWeights {
  const layers = full.layers.map((fp, l) => {
    if (l < layer) return quantized.layers[l]!;
    if (l > layer) return fp;
    const swapped = { ...fp };
    for (const names of GROUPS.slice(0, group)) for (const n of names) (swapped as Record<string, unknown>)[n] = quantized.layers[l]![n];
    return swapped;
  });
  return { ...full, layers };
}

function hessianIn(entries: ReturnType<typeof calibrateHessians>, name: string): Float64Array {
  const entry = entries.find((e) => e.name === name || e.aliases.includes(name));
  assert.ok(entry !== undefined, `no calibration entry for ${name}`);
  return entry.hessian.data;
}

/** Index of the first element whose bits differ, or -1. */
function firstDifference(a: Float64Array, b: Float64Array): number {
  if (a.length !== b.length) return 0;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return i;
  return -1;
}

const sequential = suite("hessians: sequential calibration");

sequential("layer 0: every H equals calibrateHessians' layer by layer; with true-sequential only q/k/v's, o's sees quantized q/k/v", async () => {
  await withFixture(async (checkpoint) => {
    const reference = calibrateHessians(new LlamaForward(await loadLlamaWeights(checkpoint), TOKENS), calibrationWindows());
    const layerByLayer = (await quantizeSequentially(checkpoint, false, "storage")).handed;
    for (const name of ["q_proj", "k_proj", "v_proj", "o_proj"].map((n) => `model.layers.0.self_attn.${n}`).concat(["gate_proj", "up_proj", "down_proj"].map((n) => `model.layers.0.mlp.${n}`))) {
      assert.is(firstDifference(layerByLayer.get(name)!.data, hessianIn(reference, name)), -1, name);
    }
    const trueSequential = (await quantizeSequentially(checkpoint, true, "storage")).handed;
    assert.is(firstDifference(trueSequential.get("model.layers.0.self_attn.q_proj")!.data, hessianIn(reference, "model.layers.0.self_attn.q_proj")), -1);
    assert.is.not(firstDifference(trueSequential.get("model.layers.0.self_attn.o_proj")!.data, hessianIn(reference, "model.layers.0.self_attn.o_proj")), -1);
  });
});

for (const trueSequential of [true, false]) {
  sequential(`${trueSequential ? "true-sequential" : "layer by layer"}: every H equals calibration with the earlier linears explicitly replaced by the exported dequantized weights`, async () => {
    const dir = await tempDir();
    try {
      await withFixture(async (checkpoint) => {
        const { view, handed } = await quantizeSequentially(checkpoint, trueSequential, "storage");
        const out = join(dir.path, "seq.lmpack");
        await exportLmpack(view, out, { overwrite: false });
        const exported = await openCheckpoint(out);
        const quantized = await loadLlamaWeights(exported).finally(() => exported.close());
        const full = await loadLlamaWeights(checkpoint);
        const fullPrecision = calibrateHessians(new LlamaForward(full, TOKENS), calibrationWindows());
        assert.is(handed.size, 28, "every linear asked for its H once");
        for (const [name, h] of handed) {
          const [, layerText, kind] = /layers\.(\d+)\.\w+\.(\w+)_proj$/.exec(name)!;
          const layer = Number(layerText);
          const group = trueSequential ? GROUPS.findIndex((g) => g.includes(kind as keyof DecoderLayerWeights)) : 0;
          const explicit = calibrateHessians(new LlamaForward(mixed(full, quantized, layer, group), TOKENS), calibrationWindows());
          assert.is(firstDifference(h.data, hessianIn(explicit, name)), -1, name);
          assert.is(h.nSamples, WINDOWS * TOKENS);
          // Beyond layer 0's first inputs the quantized layers must show.
          if (layer > 0) assert.is.not(firstDifference(h.data, hessianIn(fullPrecision, name)), -1, `${name} equals the full-precision H`);
        }
      });
    } finally {
      await dir.cleanup();
    }
  });
}

sequential("the pull order does not matter: layers pulled last-first give the same Hessians", async () => {
  await withFixture(async (checkpoint) => {
    const forward = (await quantizeSequentially(checkpoint, true, "storage")).handed;
    const reversed = (await quantizeSequentially(checkpoint, true, "reversed")).handed;
    assert.equal([...reversed.keys()].sort(), [...forward.keys()].sort());
    for (const [name, h] of forward) assert.is(firstDifference(h.data, reversed.get(name)!.data), -1, name);
  });
});

sequential("refuses hidden states beyond the cap and linears it does not know", async () => {
  await withFixture(async (checkpoint) => {
    const weights = await loadLlamaWeights(checkpoint);
    const bytes = WINDOWS * TOKENS * weights.config.hiddenSize * 8;
    try {
      new SequentialHessians(weights, calibrationWindows(), { maxStateBytes: bytes - 1 });
      assert.unreachable("a state over the cap was accepted");
    } catch (error) {
      assert.instance(error, UsageError);
      assert.is((error as UsageError).code, "BAD_ARGUMENT");
    }
    const source = new SequentialHessians(weights, calibrationWindows(), { maxStateBytes: bytes });
    try {
      await source.get("lm_head", weights.config.hiddenSize);
      assert.unreachable("an unknown linear was accepted");
    } catch (error) {
      assert.instance(error, UsageError);
    }
  });
});

sequential("CLI: quantize --method gptq --hessians sequential writes a model eval loads, perplexity near the stored-H one", async () => {
  const dir = await tempDir();
  try {
    // A short text keeps tokenization quick: the first ~40 KB of the documentation corpus.
    const text = join(dir.path, "calib.txt");
    await writeFile(text, (await readFile(join(SHARED_DIR, "text", "docs-valid.txt"), "utf8")).slice(0, 40_000));
    const calib = ["--samples", "4", "--seq-len", "128"];
    const run = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8" });
    const seq = run(["quantize", FIXTURE_MODEL, "--method", "gptq", "--hessians", "sequential", "--calibration-text", text, ...calib, "--device", "cpu", "--to", "lmpack", "--out", join(dir.path, "seq.lmpack"), "--json"]);
    assert.is(seq.status, 0, seq.stderr);
    assert.is((JSON.parse(seq.stdout) as { layers: unknown[] }).layers.length, 28);
    const store = run(["calibrate", FIXTURE_MODEL, "--text", text, ...calib, "--out", join(dir.path, "h"), "--json"]);
    assert.is(store.status, 0, store.stderr);
    const stored = run(["quantize", FIXTURE_MODEL, "--method", "gptq", "--hessians", join(dir.path, "h"), "--device", "cpu", "--to", "lmpack", "--out", join(dir.path, "stored.lmpack"), "--json"]);
    assert.is(stored.status, 0, stored.stderr);
    const perplexity = (model: string): number => {
      const result = run(["eval", model, "--text", text, "--tokenizer", FIXTURE_MODEL, "--max-tokens", "1024", "--json"]);
      assert.is(result.status, 0, result.stderr);
      return (JSON.parse(result.stdout) as { perplexity: number }).perplexity;
    };
    const [withSequential, withStored] = [perplexity(join(dir.path, "seq.lmpack")), perplexity(join(dir.path, "stored.lmpack"))];
    assert.ok(Number.isFinite(withSequential) && withSequential > 1, `perplexity ${withSequential}`);
    assert.ok(withSequential < 2 * withStored && withStored < 2 * withSequential, `sequential ${withSequential} vs stored ${withStored}`);

    const rtn = run(["quantize", FIXTURE_MODEL, "--method", "rtn", "--hessians", "sequential", "--calibration-text", text, "--to", "lmpack", "--out", join(dir.path, "rtn.lmpack"), "--json"]);
    assert.is(rtn.status, 1, "rtn does not read H: refused");
    assert.match(rtn.stdout + rtn.stderr, /BAD_ARGUMENT/);
  } finally {
    await dir.cleanup();
  }
});

sequential.run();

// The same flow with the forward and H += XᵀX on the GPU (float64 forward in another GEMM order,
// X rounded to float32 for the accumulation): every H within 1e-6 of its largest entry of the
// explicit CPU calibration on the weights the run itself exported.
const probe = await gpuAvailable();
const onGpu = suite("hessians: sequential calibration on the GPU");
if (!probe.ok) {
  onGpu("GPU tests skipped", () => console.log(`  skipped: no GPU (${probe.reason})`));
} else {
  /**
   * True-sequential on the GPU over `lengths` windows: every H matches calibration with the earlier
   * linears replaced by the exported weights. `batchBytes` bounds the resident states' batches;
   * `expectResident` says whether the states must have stayed on the device.
   */
  const checkOnGpu = async (lengths: readonly number[], expectResident: boolean, batchBytes?: number) => {
    const engine = await GpuEngine.open();
    const dir = await tempDir();
    let residentOpened = 0;
    try {
      await withFixture(async (checkpoint) => {
        const gpu: Pick<SequentialOptions, "forward" | "products" | "resident"> = {
          forward: (weights, maxTokens, file) => {
            const forward = new GpuLlamaForward(engine, weights, maxTokens, file);
            const open = forward.residentStates.bind(forward);
            forward.residentStates = (windows) => {
              const states = open(windows, batchBytes === undefined ? {} : { batchBytes });
              if (states !== undefined) residentOpened++;
              return states;
            };
            return forward;
          },
          products: () => new GpuHessians(engine),
          resident: expectResident,
        };
        const run = await quantizeSequentially(checkpoint, true, "storage", gpu, calibrationWindows(lengths));
        const out = join(dir.path, "seq-gpu.lmpack");
        try {
          await exportLmpack(run.view, out, { overwrite: false });
        } finally {
          await run.close();
        }
        assert.is(residentOpened, expectResident ? 1 : 0, "resident states opened");
        const exported = await openCheckpoint(out);
        const quantized = await loadLlamaWeights(exported).finally(() => exported.close());
        const full = await loadLlamaWeights(checkpoint);
        assert.is(run.handed.size, 28, "every linear asked for its H once");
        for (const [name, h] of run.handed) {
          const [, layerText, kind] = /layers\.(\d+)\.\w+\.(\w+)_proj$/.exec(name)!;
          const group = GROUPS.findIndex((g) => g.includes(kind as keyof DecoderLayerWeights));
          const explicit = hessianIn(calibrateHessians(new LlamaForward(mixed(full, quantized, Number(layerText), group), Math.max(...lengths)), calibrationWindows(lengths)), name);
          let largest = 0;
          let worst = 0;
          explicit.forEach((value, i) => {
            largest = Math.max(largest, Math.abs(value));
            worst = Math.max(worst, Math.abs(value - h.data[i]!));
          });
          assert.ok(worst <= 1e-6 * largest, `${name}: worst |ΔH| ${worst} against max |H| ${largest}`);
          assert.is(h.nSamples, lengths.reduce((a, b) => a + b, 0));
        }
      });
    } finally {
      await dir.cleanup();
      engine.close();
    }
  };

  onGpu("true-sequential on the GPU, states resident on the device (one batch): every H matches calibration with the earlier linears replaced by the exported weights", () => checkOnGpu(Array.from({ length: WINDOWS }, () => TOKENS), true));

  onGpu("the same with windows of unequal lengths and one window per batch (batches cut at a length change and at the memory bound)", async () => {
    // A batch budget of exactly one TOKENS-token window's layer buffers.
    const weights = await withFixture((checkpoint) => loadLlamaWeights(checkpoint));
    await checkOnGpu([TOKENS, TOKENS, 30, TOKENS], true, layerBufferBytesPerWindow(planForward(weights, TOKENS), TOKENS));
  });

  onGpu("the per-window host path (resident: false) gives the same Hs", () => checkOnGpu(Array.from({ length: WINDOWS }, () => TOKENS), false));

  onGpu("inputs handed to H += XᵀX in device memory give the same H, bit for bit, as inputs downloaded and narrowed on the host", async () => {
    const engine = await GpuEngine.open();
    try {
      await withFixture(async (checkpoint) => {
        const forward: SequentialOptions["forward"] = (weights, maxTokens, file) => new GpuLlamaForward(engine, weights, maxTokens, file);
        // Per window (resident: false), so that both runs take the same forward path.
        const onDevice = await quantizeSequentially(checkpoint, true, "storage", { forward, products: () => new GpuHessians(engine), resident: false });
        await onDevice.close();
        // The same products without addOnDevice: every input is downloaded, narrowed here and uploaded.
        const hostProducts = () => {
          const products = new GpuHessians(engine);
          return { add: products.add.bind(products), result: products.result.bind(products), release: products.release.bind(products) };
        };
        const downloaded = await quantizeSequentially(checkpoint, true, "storage", { forward, products: hostProducts });
        await downloaded.close();
        assert.is(onDevice.handed.size, 28);
        for (const [name, h] of onDevice.handed) {
          const other = downloaded.handed.get(name)!;
          assert.ok(h.data.every((x, i) => Object.is(x, other.data[i])), `${name}: H differs`);
          assert.is(h.nSamples, other.nSamples);
        }
      });
    } finally {
      engine.close();
    }
  });
}
onGpu.run();

