import type { ArgumentsCamelCase, Argv } from "yargs";
import { openCheckpoint } from "../../converters/open.js";
import { KernelError, UsageError } from "../../formats/errors.js";
import { LlamaForward } from "../../model/llama-forward.js";
import { loadLlamaWeights } from "../../model/llama-weights.js";
import { perplexity, type PerplexityResult } from "../../model/perplexity.js";
import { evalThreads, perplexityParallel } from "../../model/perplexity-parallel.js";
import { windows } from "../../model/eval-stream.js";
import type { GpuEngine } from "../../kernels/engine.js";
import { EXIT } from "../errors.js";
import { DEVICE_CHOICES, type DeviceChoice } from "./device.js";
import { PROTOCOLS, textTokens, tokenizerFor, type Protocol } from "./text-input.js";

export interface EvalArgs {
  model: string;
  text: string;
  ctx: number | undefined;
  maxTokens: number | undefined;
  protocol: Protocol;
  tokenizer: string | undefined;
  threads: number | undefined;
  device: DeviceChoice;
  precision: Precision;
  json: boolean;
}

export const PRECISIONS = ["f64", "bf16"] as const;
type Precision = (typeof PRECISIONS)[number];

/** What each --precision computes with, as the result line says it. */
const PRECISION_LABEL: Record<Precision, string> = {
  // Both paths: the weights are the checkpoint's float32 values (widened exactly), every operation float64.
  f64: "fp32 weights, fp64 arithmetic",
  bf16: "bf16 weights, fp32 arithmetic",
};

/**
 * The GPU for `--device`: undefined for cpu, and for auto when none is usable; cuda without one is
 * the NO_DEVICE the other commands give. The engine is imported only when a GPU is asked for.
 */
async function openEvalEngine(choice: DeviceChoice): Promise<GpuEngine | undefined> {
  if (choice === "cpu") return undefined;
  const { GpuEngine, gpuAvailable } = await import("../../kernels/engine.js");
  const probe = await gpuAvailable();
  if (!probe.ok) {
    if (choice === "cuda") throw new KernelError("NO_DEVICE", `--device cuda: ${probe.reason}`);
    return undefined;
  }
  return GpuEngine.open();
}

export const evalCommand = {
  command: "eval <model>",
  describe: "Perplexity of a model (dense, or any packed checkpoint through its reference dequant) on a text: the fp32 reference forward in float64, on the GPU or the CPU",
  builder: (yargs: Argv) =>
    yargs
      .positional("model", { type: "string", demandOption: true, describe: "model directory, .safetensors or .lmpack file, or Hub id" })
      .option("text", { type: "string", demandOption: true, describe: "UTF-8 text file" })
      .option("protocol", { choices: PROTOCOLS, default: "docs" as Protocol, describe: 'docs: documents split at "\\n\\n\\n", eos after each, windows of 512 (shared/models/README.md); wikitext2: the whole file as one text, windows of 2048' })
      .option("ctx", { type: "number", describe: "window length in tokens (default 512 for docs, 2048 for wikitext2)" })
      .option("max-tokens", { type: "number", describe: "use only the first N tokens of the stream" })
      .option("tokenizer", { type: "string", describe: "folder with tokenizer.json (default: the model's own folder)" })
      .option("threads", { type: "number", describe: "CPU: worker threads scoring windows in parallel (default: the cores available, within free memory); the result is the same bit for bit. Ignored on the GPU" })
      .option("device", { choices: DEVICE_CHOICES, default: "auto" as const, describe: "cuda: the forward on the GPU, window after window (in float64: the CPU's perplexity to float64 rounding; fails without a GPU); cpu: the reference forward on worker threads; auto: the GPU when one is usable" })
      .option("precision", { choices: PRECISIONS, default: "f64" as const, describe: "f64: the reference arithmetic (float64 on the CPU and the GPU); bf16: on the GPU, bf16 weights (a quarter of f64's memory) with float32 activations and cuBLAS float32 products" }),
  handler: async (args: ArgumentsCamelCase<EvalArgs>): Promise<number> => {
    const ctx = args.ctx ?? (args.protocol === "wikitext2" ? 2048 : 512);
    if (!Number.isSafeInteger(ctx) || ctx < 2) throw new UsageError("BAD_ARGUMENT", "--ctx must be an integer ≥ 2", { actual: args.ctx });
    if (args.maxTokens !== undefined && (!Number.isSafeInteger(args.maxTokens) || args.maxTokens < ctx)) throw new UsageError("BAD_ARGUMENT", "--max-tokens must be an integer ≥ the window length", { actual: args.maxTokens, expected: `≥ ${ctx}` });
    if (args.threads !== undefined && (!Number.isSafeInteger(args.threads) || args.threads < 1)) throw new UsageError("BAD_ARGUMENT", "--threads must be a positive integer", { actual: args.threads });
    if (args.precision === "bf16" && args.device === "cpu") throw new UsageError("BAD_ARGUMENT", "--precision bf16 is the GPU forward's; the CPU forward is float64 (--precision f64)");
    const started = performance.now();
    // The device first: --device cuda without a GPU fails before anything is opened.
    const engine = await openEvalEngine(args.device);
    if (args.precision === "bf16" && engine === undefined) throw new KernelError("NO_DEVICE", "--precision bf16 needs a GPU, and none is usable (--precision f64 runs on the CPU)");
    try {
      const checkpoint = await openCheckpoint(args.model);
      try {
        const tokenizer = await tokenizerFor(checkpoint, args.tokenizer);
        const stream = await textTokens(args.text, tokenizer, checkpoint, args.protocol, args.maxTokens);
        const chunks = windows(stream, ctx);
        if (chunks.length === 0) throw new UsageError("BAD_ARGUMENT", `the text gives ${stream.length} tokens: not one full window of ${ctx}`, { file: args.text });
        const weights = await loadLlamaWeights(checkpoint);
        const progress = (i: number, running: number): void => {
          if (!args.json && process.stderr.isTTY) process.stderr.write(`\r[${i + 1}/${chunks.length}] perplexity ${running.toFixed(4)}   `);
        };
        let result: PerplexityResult;
        let threads = 1;
        if (engine !== undefined) {
          // One window after another on the GPU: --threads does not apply.
          const { gpuPerplexity } = await import("../../kernels/forward/gpu-perplexity.js");
          const forward = args.precision === "bf16"
            ? new (await import("../../kernels/forward-bf16/gpu-forward-bf16.js")).GpuLlamaForwardBf16(engine, weights, ctx, checkpoint.location)
            : new (await import("../../kernels/forward/gpu-forward.js")).GpuLlamaForward(engine, weights, ctx, checkpoint.location);
          try {
            result = gpuPerplexity(forward, chunks, progress);
          } finally {
            forward.release();
          }
        } else {
          threads = evalThreads(weights, ctx, chunks.length, args.threads);
          result = threads === 1
            ? perplexity(new LlamaForward(weights, ctx, checkpoint.location), chunks, progress)
            : await perplexityParallel(weights, ctx, chunks, { threads, file: checkpoint.location, onWindow: progress });
        }
        if (!args.json && process.stderr.isTTY) process.stderr.write("\n");
        const seconds = (performance.now() - started) / 1000;
        const device = engine?.describe() ?? "cpu";
        const summary = { ok: true, model: args.model, text: args.text, protocol: args.protocol, ctx, device, threads, precision: PRECISION_LABEL[args.precision], tokens: stream.length, ...result, seconds };
        if (args.json) console.log(JSON.stringify(summary, null, 2));
        else console.log(`perplexity ${result.perplexity.toFixed(4)} (${result.windows} windows of ${ctx}, ${result.scored} tokens scored, ${engine !== undefined ? device : `cpu, ${threads} thread${threads === 1 ? "" : "s"}`}, ${PRECISION_LABEL[args.precision]}, ${seconds.toFixed(1)} s)`);
        return EXIT.ok;
      } finally {
        await checkpoint.close();
      }
    } finally {
      engine?.close();
    }
  },
};
