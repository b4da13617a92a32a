import type { ArgumentsCamelCase, Argv } from "yargs";
import { join } from "node:path";
import { mkdir } from "node:fs/promises";
import { openCheckpoint } from "../../converters/open.js";
import { calibrateHessians } from "../../converters/hessians/calibrate.js";
import { calibrationSequences } from "../../converters/hessians/windows.js";
import { HESSIAN_FILE, writeHessianStore, type HessianEntry } from "../../converters/hessians/store.js";
import { refuseExisting } from "../../converters/io/atomic.js";
import { UsageError } from "../../formats/errors.js";
import type { GpuEngine } from "../../kernels/engine.js";
import type { GpuLlamaForward } from "../../kernels/forward/gpu-forward.js";
import { LlamaForward, type LinearInputObserver } from "../../model/llama-forward.js";
import { loadLlamaWeights, type LlamaWeights } from "../../model/llama-weights.js";
import { EXIT } from "../errors.js";
import { DEVICE_CHOICES, openCalibrationDevice, type DeviceChoice } from "./device.js";
import { PROTOCOLS, textTokens, tokenizerFor, type Protocol } from "./text-input.js";

export interface CalibrateArgs {
  src: string;
  text: string;
  samples: number;
  seqLen: number;
  sampleSeed: number | undefined;
  protocol: Protocol;
  tokenizer: string | undefined;
  out: string;
  force: boolean;
  device: DeviceChoice;
  json: boolean;
}

export const calibrateCommand = {
  command: "calibrate <src>",
  describe: "Run text through the model and store every linear input's Hessian H = XᵀX (for quantize --hessians)",
  builder: (yargs: Argv) =>
    yargs
      .positional("src", { type: "string", demandOption: true, describe: "model directory, .safetensors or .lmpack file, or Hub id" })
      .option("text", { type: "string", demandOption: true, describe: "UTF-8 calibration text" })
      .option("samples", { type: "number", default: 128, describe: "calibration sequences, spread evenly over the text's token stream (or drawn: --sample-seed)" })
      .option("seq-len", { type: "number", default: 2048, describe: "tokens per sequence" })
      .option("sample-seed", SAMPLE_SEED_OPTION)
      .option("protocol", { choices: PROTOCOLS, default: "docs" as Protocol, describe: "how the text becomes tokens (see lmpack eval)" })
      .option("tokenizer", { type: "string", describe: "folder with tokenizer.json (default: the model's own folder)" })
      .option("out", { type: "string", demandOption: true, describe: `Hessian store: a .safetensors file, or a directory that gets ${HESSIAN_FILE}` })
      .option("force", { type: "boolean", default: false, describe: "replace an existing store (only after the new one is complete)" })
      // cpu by default: the GPU rounds each input to float32, so its H differs from the float64 one by up to ~1e-7 of Σ|x_i·x_j|.
      .option("device", { choices: DEVICE_CHOICES, default: "cpu" as const, describe: "where H += XᵀX runs: cuda keeps every H on the GPU (inputs rounded to float32); auto: a GPU when one is usable" }),
  handler: async (args: ArgumentsCamelCase<CalibrateArgs>): Promise<number> => {
    for (const [name, value] of [["--samples", args.samples], ["--seq-len", args.seqLen]] as const) {
      if (!Number.isSafeInteger(value) || value < 1) throw new UsageError("BAD_ARGUMENT", `${name} must be a positive integer`, { actual: value });
    }
    checkSampleSeed(args.sampleSeed);
    const file = args.out.endsWith(".safetensors") ? args.out : join(args.out, HESSIAN_FILE);
    await refuseExisting(file, args.force);
    const started = performance.now();
    // The device first: --device cuda without a GPU fails before anything is opened.
    const device = await openCalibrationDevice(args.device);
    const checkpoint = await openCheckpoint(args.src);
    try {
      const tokenizer = await tokenizerFor(checkpoint, args.tokenizer);
      const stream = await textTokens(args.text, tokenizer, checkpoint, args.protocol);
      const sequences = calibrationSequences(stream, args.samples, args.seqLen, args.sampleSeed);
      if (sequences.length === 0) throw new UsageError("BAD_ARGUMENT", `the text gives ${stream.length} tokens: not one sequence of ${args.seqLen}`, { file: args.text });
      const maxPositions = checkpoint.config?.maxPositionEmbeddings;
      if (maxPositions !== undefined && args.seqLen > maxPositions && !args.json) console.error(`lmpack: warning: --seq-len ${args.seqLen} exceeds the model's max_position_embeddings (${maxPositions})`);
      if (sequences.length < args.samples && !args.json) console.error(`lmpack: warning: the text holds ${sequences.length} sequences of ${args.seqLen} tokens, not ${args.samples}`);
      const weights = await loadLlamaWeights(checkpoint);
      // On a GPU the forward runs there too (float64, as the CPU's; the inputs come back to the host
      // only to be handed to the accumulator, which is also on the GPU).
      const gpuForward = device.engine === undefined ? undefined : await openGpuForward(device.engine, weights, args.seqLen, checkpoint.location);
      if (!args.json) console.error(`lmpack: forward and H += XᵀX on ${device.description}`);
      let entries: HessianEntry[];
      try {
        const run = gpuForward === undefined ? new LlamaForward(weights, args.seqLen, checkpoint.location) : (ids: Int32Array, observe: LinearInputObserver) => gpuForward.observeLinearInputs(ids, observe);
        entries = calibrateHessians(run, sequences, (i) => {
          if (!args.json && process.stderr.isTTY) process.stderr.write(`\r[${i + 1}/${sequences.length}] sequences`);
        }, device.products);
      } finally {
        gpuForward?.release();
      }
      if (!args.json && process.stderr.isTTY) process.stderr.write("\n");
      if (!args.out.endsWith(".safetensors")) await mkdir(args.out, { recursive: true });
      const tokens = sequences.length * args.seqLen;
      await writeHessianStore(file, entries, `lmpack calibrate: ${sequences.length} x ${args.seqLen} tokens of ${args.text} (${args.protocol} protocol, ${args.sampleSeed === undefined ? "spread evenly" : `drawn from seed ${args.sampleSeed}`}), fp32 weights, fp64 forward on ${device.engine === undefined ? "the CPU" : device.description}, ${device.products === undefined ? "fp64 XᵀX" : `fp64 XᵀX of fp32-rounded inputs on ${device.description}`}`);
      const seconds = (performance.now() - started) / 1000;
      const summary = { ok: true, out: file, inputs: entries.length, sequences: sequences.length, seqLen: args.seqLen, tokens, device: device.description, seconds };
      if (args.json) console.log(JSON.stringify(summary, null, 2));
      else console.error(`lmpack: wrote ${file} (${entries.length} layer inputs, ${tokens} tokens, accumulated on ${device.description}, ${seconds.toFixed(1)} s)`);
      return EXIT.ok;
    } finally {
      device.close();
      await checkpoint.close();
    }
  },
};

/** `--sample-seed` of calibrate and of quantize's calibration options. */
export const SAMPLE_SEED_OPTION = {
  type: "number",
  describe: "draw the sequences at uniform random starts from this seed (0 … 2³²−1), as GPTQ's and SpQR's samplers do (they may overlap); default: spread evenly",
} as const;

/** A seed must be a whole number that mulberry32 takes without wrapping (two seeds, two streams). */
export function checkSampleSeed(seed: number | undefined): void {
  if (seed === undefined) return;
  if (!Number.isSafeInteger(seed) || seed < 0 || seed > 0xffffffff) throw new UsageError("BAD_ARGUMENT", "--sample-seed must be a whole number from 0 to 4294967295", { actual: seed });
}

/** A seed's part of a resume journal's identity: nothing for evenly spread windows, so journals made before the option still match. */
export function seedIdentity(seed: number | undefined): { sampleSeed?: number } {
  return seed === undefined ? {} : { sampleSeed: seed };
}

/** The GPU forward, imported only when a GPU is in use (users without one never load the kernels). */
async function openGpuForward(engine: GpuEngine, weights: LlamaWeights, maxTokens: number, file: string): Promise<GpuLlamaForward> {
  const { GpuLlamaForward } = await import("../../kernels/forward/gpu-forward.js");
  return new GpuLlamaForward(engine, weights, maxTokens, file);
}
