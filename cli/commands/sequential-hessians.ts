import type { Checkpoint } from "../../converters/checkpoint.js";
import { SequentialHessians, type SequentialOptions } from "../../converters/hessians/sequential.js";
import { UsageError } from "../../formats/errors.js";
import type { HessianSource } from "../../formats/second-order/hessian.js";
import type { GpuEngine } from "../../kernels/engine.js";
import { loadLlamaWeights } from "../../model/llama-weights.js";
import { calibrationSequences } from "../../converters/hessians/windows.js";
import { SAMPLE_SEED_OPTION, checkSampleSeed, seedIdentity } from "./calibrate.js";
import { PROTOCOLS, textTokens, tokenizerFor, type Protocol } from "./text-input.js";

/**
 * `lmpack quantize … --hessians sequential --calibration-text <file>`: Hessians computed while
 * quantizing, layer l's from the model whose layers before it are already quantized
 * (converters/hessians/sequential.ts). The windows are made as `lmpack calibrate` makes them.
 */
export const SEQUENTIAL = "sequential";

export interface SequentialCalibrationArgs {
  calibrationText: string | undefined;
  samples: number;
  seqLen: number;
  sampleSeed: number | undefined;
  protocol: Protocol;
  tokenizer: string | undefined;
  trueSequential: boolean;
}

/** The quantize options that only `--hessians sequential` reads (yargs `.options`). */
export const SEQUENTIAL_OPTIONS = {
  "calibration-text": { type: "string", describe: `--hessians ${SEQUENTIAL} or --objective block: UTF-8 calibration text` },
  samples: { type: "number", default: 128, describe: `--hessians ${SEQUENTIAL} or --objective block: calibration sequences, spread evenly over the text's token stream (or drawn: --sample-seed)` },
  "sample-seed": { ...SAMPLE_SEED_OPTION, describe: `--hessians ${SEQUENTIAL} or --objective block: ${SAMPLE_SEED_OPTION.describe}` },
  "seq-len": { type: "number", default: 2048, describe: `--hessians ${SEQUENTIAL} or --objective block: tokens per sequence` },
  protocol: { choices: PROTOCOLS, default: "docs" as Protocol, describe: `--hessians ${SEQUENTIAL} or --objective block: how the text becomes tokens (see lmpack eval)` },
  tokenizer: { type: "string", describe: `--hessians ${SEQUENTIAL} or --objective block: folder with tokenizer.json (default: the model's own folder)` },
  "true-sequential": { type: "boolean", default: true, describe: `--hessians ${SEQUENTIAL}: within a layer, [q,k,v] → [o] → [gate,up] → [down], each group's H taken after the groups before it are quantized (GPTQ's --true-sequential); --no-true-sequential: all of a layer's H from its full-precision weights` },
} as const;

/** Methods whose rounding reads H (rtn only reports with it; fp6 never reads it). */
const SEQUENTIAL_METHODS = ["gptq", "signround", "spqr", "vptq"];

/** Refuses combinations that would silently ignore the calibration options. */
export function checkSequentialArgs(args: SequentialCalibrationArgs & { method: string; hessians: string | undefined }): void {
  const sequential = args.hessians === SEQUENTIAL;
  if (!sequential && args.calibrationText !== undefined) throw new UsageError("BAD_ARGUMENT", `--calibration-text is read only with --hessians ${SEQUENTIAL} (a stored H comes from lmpack calibrate)`);
  if (!sequential && args.sampleSeed !== undefined) throw new UsageError("BAD_ARGUMENT", `--sample-seed is read only with --hessians ${SEQUENTIAL} or --objective block (lmpack calibrate takes its own)`);
  if (!sequential) return;
  if (!SEQUENTIAL_METHODS.includes(args.method)) throw new UsageError("BAD_ARGUMENT", `--hessians ${SEQUENTIAL} feeds quantizers that read H (${SEQUENTIAL_METHODS.join(", ")}); --method ${args.method} does not`, { actual: args.method });
  if (args.calibrationText === undefined) throw new UsageError("BAD_ARGUMENT", `--hessians ${SEQUENTIAL} needs --calibration-text <file>`);
  for (const [name, value] of [["--samples", args.samples], ["--seq-len", args.seqLen]] as const) {
    if (!Number.isSafeInteger(value) || value < 1) throw new UsageError("BAD_ARGUMENT", `${name} must be a positive integer`, { actual: value });
  }
  checkSampleSeed(args.sampleSeed);
}

/**
 * The sequential source over `checkpoint`'s own forward; `log` gets warnings and progress lines.
 * With `engine`, the forward (kernels/forward) and H += XᵀX (kernels/linalg) run on that GPU.
 */
export async function openSequentialHessians(checkpoint: Checkpoint, args: SequentialCalibrationArgs, log?: (line: string) => void, engine?: GpuEngine): Promise<SequentialHessians> {
  const text = args.calibrationText;
  if (text === undefined) throw new UsageError("BAD_ARGUMENT", `--hessians ${SEQUENTIAL} needs --calibration-text <file>`);
  const windows = await calibrationWindows(checkpoint, { ...args, calibrationText: text }, log);
  log?.(`lmpack: sequential calibration on ${windows.length} x ${args.seqLen} tokens (${args.trueSequential ? "true-sequential" : "layer by layer"}, forward on ${engine === undefined ? "the CPU" : engine.describe()})`);
  const gpu = engine === undefined ? undefined : await gpuParts(engine);
  return new SequentialHessians(await loadLlamaWeights(checkpoint), windows, {
    ...gpu,
    trueSequential: args.trueSequential,
    file: checkpoint.location,
    onLayerDone: (layer, seconds) => log?.(`lmpack: sequential calibration: layer ${layer} advanced with its quantized weights (${seconds.toFixed(1)} s)`),
  });
}

/**
 * The calibration windows that `--calibration-text`, `--samples`, `--seq-len`, `--protocol` and
 * `--tokenizer` describe, made as `lmpack calibrate` makes them (shared with `--objective block`,
 * so both read the same tokens); `log` gets the warnings.
 */
export async function calibrationWindows(checkpoint: Checkpoint, args: Omit<SequentialCalibrationArgs, "calibrationText" | "trueSequential"> & { calibrationText: string }, log?: (line: string) => void): Promise<Int32Array[]> {
  const text = args.calibrationText;
  const tokenizer = await tokenizerFor(checkpoint, args.tokenizer);
  const stream = await textTokens(text, tokenizer, checkpoint, args.protocol);
  const windows = calibrationSequences(stream, args.samples, args.seqLen, args.sampleSeed);
  if (windows.length === 0) throw new UsageError("BAD_ARGUMENT", `the text gives ${stream.length} tokens: not one sequence of ${args.seqLen}`, { file: text });
  const maxPositions = checkpoint.config?.maxPositionEmbeddings;
  if (maxPositions !== undefined && args.seqLen > maxPositions) log?.(`lmpack: warning: --seq-len ${args.seqLen} exceeds the model's max_position_embeddings (${maxPositions})`);
  if (windows.length < args.samples) log?.(`lmpack: warning: the text holds ${windows.length} sequences of ${args.seqLen} tokens, not ${args.samples}`);
  return windows;
}

/** The view to export: with a sequential source, the one it follows (each layer quantized once). */
export function followQuantized(store: HessianSource | undefined, quantized: Checkpoint): Checkpoint {
  return store instanceof SequentialHessians ? store.follow(quantized) : quantized;
}

/** What a resume journal must key on besides the common options: a journal made from other calibration is discarded. */
export function sequentialJournalIdentity(args: SequentialCalibrationArgs & { hessians: string | undefined }): { options: Record<string, unknown>; sources: string[] } {
  if (args.hessians !== SEQUENTIAL || args.calibrationText === undefined) return { options: {}, sources: [] };
  const options = { samples: args.samples, seqLen: args.seqLen, ...seedIdentity(args.sampleSeed), protocol: args.protocol, trueSequential: args.trueSequential };
  return { options, sources: [args.calibrationText, ...(args.tokenizer === undefined ? [] : [args.tokenizer])] };
}

/** The GPU forward and accumulator for SequentialHessians, imported only when a GPU is in use. */
async function gpuParts(engine: GpuEngine): Promise<Pick<SequentialOptions, "forward" | "products">> {
  const { GpuLlamaForward } = await import("../../kernels/forward/gpu-forward.js");
  const { GpuHessians } = await import("../../kernels/linalg/hessian-accumulate.js");
  return {
    forward: (weights, maxTokens, file) => new GpuLlamaForward(engine, weights, maxTokens, file),
    products: () => new GpuHessians(engine),
  };
}
