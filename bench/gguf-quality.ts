#!/usr/bin/env node
/**
 * GGUF exports judged by llama.cpp itself (node-llama-cpp's bundled build, CPU): for each ggml
 * type, `lmpack convert <model> --to gguf --type T`, then llama.cpp's next-token probabilities on
 * the docs-valid windows (the perplexity protocol of ../shared/models/README.md) give its
 * perplexity, and on the first windows its mean KL divergence from lmpack's own fp32 forward of
 * the source model (the reference: its logits equal transformers' within 1.3e-5). Every export
 * is also parsed by @huggingface/gguf, an independent GGUF reader.
 *
 *   npm run runtimes     # once: node-llama-cpp into .runtimes/ (test/runtimes/install.mjs)
 *   node dist/bench/gguf-quality.js [--model DIR] [--types F16,Q8_0,Q4_0,Q4_K,Q6_K,Q2_K] [--max-tokens 32768] [--kl-tokens 4096]
 */
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { gguf } from "@huggingface/gguf";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { openCheckpoint } from "../converters/open.js";
import { exportGguf, type GgufTensorReport } from "../converters/gguf/export.js";
import { evalTokenStream, windows } from "../model/eval-stream.js";
import { LlamaForward } from "../model/llama-forward.js";
import { loadLlamaWeights } from "../model/llama-weights.js";
import { loadTokenizer } from "../model/tokenizer.js";
import { logSumExp } from "../model/perplexity.js";
import { loadNodeLlamaCpp } from "../test/runtimes/node-llama-cpp.js";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

const here = fileURLToPath(import.meta.url);
const shared = process.env["LMPACK_SHARED"] ?? join(here, "..", "..", "..", "..", "shared");
const model = arg("model", join(shared, "models", "docs-llama-16m"));
const text = arg("text", join(shared, "text", "docs-valid.txt"));
const types = arg("types", "F16,Q8_0,Q4_0,Q4_K,Q6_K,Q2_K").split(",");
const maxTokens = Number(arg("max-tokens", "32768"));
const klTokens = Number(arg("kl-tokens", "4096"));
const WINDOW = 512;

const checkpoint = await openCheckpoint(model);
const config = checkpoint.config!;
const eos = Array.isArray(config.eosTokenId) ? config.eosTokenId[0]! : config.eosTokenId!;
const stream = evalTokenStream(await readFile(text, "utf8"), await loadTokenizer(model), eos, maxTokens);
const chunks = windows(stream, WINDOW);
const klWindows = Math.min(chunks.length, Math.floor(klTokens / WINDOW));

// Reference log-probabilities of the KL windows from lmpack's fp32 forward.
const vocab = config.vocabSize;
const forward = new LlamaForward(await loadLlamaWeights(checkpoint), WINDOW);
const referenceLogProbs = chunks.slice(0, klWindows).map((ids) => logSoftmaxRows(forward.run(ids), ids.length, vocab));

const llamaCpp = await loadNodeLlamaCpp();
const llama = await llamaCpp.getLlama({ gpu: false, build: "never", logLevel: llamaCpp.LlamaLogLevel.error });
const work = await mkdtemp(join(tmpdir(), "lmpack-gguf-"));
console.log(`# GGUF in llama.cpp (node-llama-cpp 3.22.1, CPU): ${JSON.stringify({ model, text, windows: chunks.length, tokensScored: chunks.length * (WINDOW - 1), klWindows })}\n`);
console.log("| type | file MB | bits/weight (2-D weights) | tensors exact / quantized / fallback | perplexity (llama.cpp) | mean KL vs lmpack fp32 (nats/token) | s |");
console.log("|---|---|---|---|---|---|---|");
try {
  for (const type of types) {
    const started = performance.now();
    const path = join(work, `${type}.gguf`);
    const reports: GgufTensorReport[] = [];
    await exportGguf(checkpoint, path, { mainType: type, onTensor: (r) => reports.push(r) });
    // An independent parser must read it too.
    const parsed = await gguf(path, { allowLocalFile: true });
    if (parsed.tensorInfos.length !== reports.length || parsed.metadata["general.architecture"] !== "llama") throw new Error(`@huggingface/gguf disagrees about ${path}`);
    const loaded = await llama.loadModel({ modelPath: path });
    const context = await loaded.createContext({ contextSize: WINDOW, batchSize: WINDOW, sequences: 1 });
    let nll = 0;
    let scored = 0;
    let kl = 0;
    let klCount = 0;
    const sequence = context.getSequence();
    for (const [w, ids] of chunks.entries()) {
      // Every window starts from an empty context, as in the protocol.
      await sequence.clearHistory();
      // KL windows need the whole distribution; perplexity needs only the target's logit, the
      // largest logit (includeTop 1: in 3.22.1 includeMax did not return it) and
      // Σ exp(logit − max), which is far cheaper than node-llama-cpp's sorted full maps.
      const full = w < klWindows;
      const items = Array.from(ids, (id, t) => [id, { generateNext: full ? { probabilities: true } : { logits: { filter: { tokens: [ids[t + 1] ?? id], includeTop: 1 } }, totalLogitWeight: true } }] as const);
      const results = (await sequence.controlledEvaluate(items as never)) as { next: { probabilities?: Map<number, number>; logits?: Map<number, number>; totalLogitWeight?: number } }[];
      for (let t = 0; t + 1 < ids.length; t++) {
        const next = results[t]!.next;
        scored++;
        if (!full) {
          const max = Math.max(...next.logits!.values());
          nll -= next.logits!.get(ids[t + 1]!)! - max - Math.log(next.totalLogitWeight!);
          continue;
        }
        const p = next.probabilities!;
        nll -= Math.log(p.get(ids[t + 1]!) ?? 0);
        // KL(lmpack fp32 ‖ llama.cpp) at this position.
        const ref = referenceLogProbs[w]!;
        for (let j = 0; j < vocab; j++) {
          const lp = ref[t * vocab + j]!;
          kl += Math.exp(lp) * (lp - Math.log(Math.max(p.get(j) ?? 0, 1e-30)));
        }
        klCount++;
      }
    }
    sequence.dispose();
    await context.dispose();
    await loaded.dispose();
    const matrices = reports.filter((r) => r.shape.length === 2);
    const weights = matrices.reduce((s, r) => s + r.shape[0]! * r.shape[1]!, 0);
    const bytes = (await stat(path)).size;
    const bpw = (matrixBytes(matrices) * 8) / weights;
    const fallback = matrices.filter((r) => r.note !== undefined && r.note.includes("not whole")).length;
    console.log(`| ${type} | ${(bytes / 1e6).toFixed(2)} | ${bpw.toFixed(3)} | ${matrices.filter((r) => r.how === "exact").length} / ${matrices.filter((r) => r.how === "quantized").length} / ${fallback} | ${Math.exp(nll / scored).toFixed(4)} | ${klCount === 0 ? "–" : (kl / klCount).toFixed(5)} | ${((performance.now() - started) / 1000).toFixed(0)} |`);
    await rm(path, { force: true });
  }
} finally {
  await rm(work, { recursive: true, force: true });
  await checkpoint.close();
}

function matrixBytes(reports: GgufTensorReport[]): number {
  const perWeight: Record<string, number> = { F32: 4, F16: 2, BF16: 2, Q8_0: 34 / 32, Q4_0: 18 / 32, Q4_1: 20 / 32, Q5_0: 22 / 32, Q5_1: 24 / 32, Q2_K: 84 / 256, Q3_K: 110 / 256, Q4_K: 144 / 256, Q5_K: 176 / 256, Q6_K: 210 / 256, TQ1_0: 54 / 256, TQ2_0: 66 / 256 };
  return reports.reduce((s, r) => s + r.shape[0]! * r.shape[1]! * (perWeight[r.type] ?? NaN), 0);
}

function logSoftmaxRows(logits: Float64Array, rows: number, width: number): Float32Array {
  const out = new Float32Array(rows * width);
  for (let r = 0; r < rows; r++) {
    const lse = logSumExp(logits, r * width, width);
    for (let j = 0; j < width; j++) out[r * width + j] = logits[r * width + j]! - lse;
  }
  return out;
}
