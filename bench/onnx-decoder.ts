#!/usr/bin/env node
/**
 * The whole-decoder ONNX export judged by onnxruntime-node (CPU EP): for a dense float32 export
 * and a 4-bit RTN (sym, g32, MatMulNBits) export of a model, the perplexity onnxruntime gives on
 * docs-valid with the protocol of ../shared/models/README.md (windows of 512, every token after
 * the first scored; one call per window, empty KV cache), and the largest logit difference from
 * lmpack's own forward of the same weights on the first windows (the reference: its logits equal
 * transformers' fp32 within 1.3e-5). transformers' fp32 perplexity of docs-llama-16m is 21.2685.
 *
 *   npm run runtimes     # once: onnxruntime-node into .runtimes/ (test/runtimes/install.mjs)
 *   node dist/bench/onnx-decoder.js [--model DIR] [--text FILE] [--variants dense,rtn4]
 *                                   [--max-windows N] [--diff-windows 2] [--threads 2] [--scale-dtype F16] [--keep]
 *
 * rtn4 uses lmpack's default F16 scales (`--scale-dtype F32` for float32 ones; on docs-llama-16m
 * both give the same largest logit difference, 4.1e-5: it is float32 accumulation, not the
 * scale rounding).
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Checkpoint } from "../converters/checkpoint.js";
import { quantizeCheckpoint } from "../converters/int-group/quantize-checkpoint.js";
import { exportOnnxDecoder, MODEL_FILE } from "../converters/onnx/export-decoder.js";
import { openCheckpoint } from "../converters/open.js";
import { evalTokenStream, windows } from "../model/eval-stream.js";
import { LlamaForward } from "../model/llama-forward.js";
import { loadLlamaWeights } from "../model/llama-weights.js";
import { loadTokenizer } from "../model/tokenizer.js";
import { loadOnnxRuntime, type OrtSession, type OrtTensor } from "../test/runtimes/onnxruntime.js";
import { windowNll } from "../model/perplexity.js";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

const here = fileURLToPath(import.meta.url);
const shared = process.env["LMPACK_SHARED"] ?? join(here, "..", "..", "..", "..", "shared");
const model = arg("model", join(shared, "models", "docs-llama-16m"));
const text = arg("text", join(shared, "text", "docs-valid.txt"));
const variants = arg("variants", "dense,rtn4").split(",");
const maxWindows = Number(arg("max-windows", "Infinity"));
const diffWindows = Number(arg("diff-windows", "2"));
const threads = Number(arg("threads", "2"));
const keep = process.argv.includes("--keep");
const scaleDtype = arg("scale-dtype", "F16") as "F16" | "F32";
const WINDOW = 512;
/** transformers fp32 perplexity on all of docs-valid (shared/models/README.md). */
const REFERENCE: Record<string, number> = { "docs-llama-16m": 21.2685, "lmpack-fixture-2m": 16.6965 };

type TensorCtor = new (type: string, data: BigInt64Array | Float32Array, dims: readonly number[]) => OrtTensor;
const ort = loadOnnxRuntime();
const Tensor = ort.Tensor as unknown as TensorCtor;

const source = await openCheckpoint(model);
const config = source.config!;
const eos = Array.isArray(config.eosTokenId) ? config.eosTokenId[0]! : config.eosTokenId!;
const allWindows = windows(evalTokenStream(await readFile(text, "utf8"), await loadTokenizer(model), eos), WINDOW);
const chunks = allWindows.slice(0, Math.min(allWindows.length, maxWindows));
const name = model.replace(/\/+$/, "").split("/").pop()!;
const reference = REFERENCE[name];
const work = await mkdtemp(join(tmpdir(), "lmpack-onnx-bench-"));

/** One window through the session with an empty KV cache: logits [tokens][vocab]. */
async function logitsOf(session: OrtSession, ids: Int32Array): Promise<Float32Array> {
  const feeds: Record<string, OrtTensor> = {
    input_ids: new Tensor("int64", BigInt64Array.from(ids, (id) => BigInt(id)), [1, ids.length]),
    attention_mask: new Tensor("int64", new BigInt64Array(ids.length).fill(1n), [1, ids.length]),
  };
  const empty = new Tensor("float32", new Float32Array(0), [1, config.numKvHeads, 0, config.headDim]);
  for (let i = 0; i < config.numLayers; i++) feeds[`past_key_values.${i}.key`] = feeds[`past_key_values.${i}.value`] = empty;
  return (await session.run(feeds))["logits"]!.data as Float32Array;
}

function variantCheckpoint(variant: string): Checkpoint {
  if (variant === "dense") return source;
  if (variant === "rtn4") return quantizeCheckpoint(source, { method: "rtn", bits: 4, groupSize: 32, sym: true, scaleDtype });
  throw new Error(`unknown variant "${variant}" (dense, rtn4)`);
}

const rows: string[] = [];
console.log(`# ONNX decoder in onnxruntime-node (CPU EP, ${threads} intra-op threads): ${JSON.stringify({ model, windows: chunks.length, of: allWindows.length, tokensScored: chunks.length * (WINDOW - 1), diffWindows, rtn4: `4-bit sym g32, ${scaleDtype} scales` })}\n`);
try {
  for (const variant of variants) {
    const checkpoint = variantCheckpoint(variant);
    const out = join(work, variant);
    let started = performance.now();
    const result = await exportOnnxDecoder(checkpoint, out);
    const exportSeconds = (performance.now() - started) / 1000;
    started = performance.now();
    const session = await ort.InferenceSession.create(join(out, MODEL_FILE), { executionProviders: ["cpu"], logSeverityLevel: 3, intraOpNumThreads: threads });
    const loadSeconds = (performance.now() - started) / 1000;
    // lmpack's forward on the same weights (the quantized view dequantizes) for the first windows.
    const forward = new LlamaForward(await loadLlamaWeights(checkpoint), WINDOW);
    let maxDiff = 0;
    let nll = 0;
    let evalSeconds = 0;
    for (const [w, ids] of chunks.entries()) {
      started = performance.now();
      const logits = await logitsOf(session, ids);
      evalSeconds += (performance.now() - started) / 1000;
      nll += windowNll(logits, ids, config.vocabSize);
      if (w < diffWindows) {
        const expected = forward.run(ids);
        for (let i = 0; i < expected.length; i++) maxDiff = Math.max(maxDiff, Math.abs(logits[i]! - expected[i]!));
      }
      if ((w + 1) % 50 === 0) console.error(`${variant}: ${w + 1}/${chunks.length} windows, running perplexity ${Math.exp(nll / ((w + 1) * (WINDOW - 1))).toFixed(4)}`);
    }
    await session.release();
    const perplexity = Math.exp(nll / (chunks.length * (WINDOW - 1)));
    const vsReference = reference === undefined || chunks.length !== allWindows.length ? "n/a" : `${(((perplexity - reference) / reference) * 100).toFixed(3)} %`;
    const tokensPerSecond = (chunks.length * WINDOW) / evalSeconds;
    const nbits = result.linears.filter((l) => l.how === "matmul-nbits").length;
    rows.push(`| ${variant} | ${nbits}/${result.linears.length} | ${(result.weightBytes / 2 ** 20).toFixed(1)} | ${exportSeconds.toFixed(1)} | ${loadSeconds.toFixed(2)} | ${chunks.length} | ${perplexity.toFixed(4)} | ${vsReference} | ${maxDiff.toExponential(2)} | ${evalSeconds.toFixed(1)} | ${tokensPerSecond.toFixed(0)} |`);
    console.error(rows[rows.length - 1]);
  }
} finally {
  await source.close();
  if (!keep) await rm(work, { recursive: true, force: true });
  else console.error(`kept ${work}`);
}
console.log("| export | MatMulNBits linears | weights MiB | export s | session s | windows | perplexity (onnxruntime) | vs transformers fp32 (dense model) | max abs Δ logits vs lmpack (first windows) | eval s | tokens/s |");
console.log("|---|---|---|---|---|---|---|---|---|---|---|");
for (const row of rows) console.log(row);
