import type { Checkpoint } from "../../converters/checkpoint.js";
import { quantizeModelSignRoundBlockwise } from "../../converters/int-group/signround-blockwise.js";
import { UsageError } from "../../formats/errors.js";
import type { SignRoundResult } from "../../formats/int-group/quantizers/signround.js";
import type { IntBits } from "../../formats/int-group/types.js";
import { BLOCK_LINEARS } from "../../model/block-grad/forward.js";
import { loadLlamaWeights } from "../../model/llama-weights.js";
import type { GpuEngine } from "../../kernels/engine.js";
import type { DeviceChoice } from "./device.js";
import { checkSampleSeed, seedIdentity } from "./calibrate.js";
import { calibrationWindows, type SequentialCalibrationArgs } from "./sequential-hessians.js";

/**
 * `lmpack quantize --method signround --objective block`: SignRound's block-wise objective
 * (converters/int-group/signround-blockwise.ts), tuned over the calibration windows that
 * `--hessians sequential` would read, before export. Its per-linear results then go through the
 * layer-wise path's packing unchanged (quantizeCheckpoint's `precomputed`).
 *
 * The block forward/backward runs on the GPU when `--device auto|cuda` opened one
 * (kernels/block-grad/backend.ts: float64 like the CPU reference, whose outputs and gradients it
 * equals to ~1e-15; on the fixture model both gave the same codes), otherwise on the CPU
 * (model/block-grad), which says so on stderr.
 */
export const OBJECTIVES = ["layer", "block"] as const;
export type Objective = (typeof OBJECTIVES)[number];

export interface BlockObjectiveArgs extends SequentialCalibrationArgs {
  method: string;
  objective: Objective;
  hessians: string | undefined;
  groupSize: number;
  iters: number;
  device: DeviceChoice;
  json: boolean;
}

/** Refuses combinations the block objective cannot honour, before anything is opened. */
export function checkBlockObjectiveArgs(args: BlockObjectiveArgs): void {
  if (args.method !== "signround") throw new UsageError("BAD_ARGUMENT", `--objective block is SignRound's block-wise objective; --method ${args.method} has none`, { actual: args.method });
  if (args.hessians !== undefined) throw new UsageError("BAD_ARGUMENT", "--objective block reads no --hessians: it tunes against the blocks' own outputs on --calibration-text", { actual: args.hessians });
  if (args.calibrationText === undefined) throw new UsageError("BAD_ARGUMENT", "--objective block needs --calibration-text <file>");
  for (const [name, value] of [["--samples", args.samples], ["--seq-len", args.seqLen]] as const) {
    if (!Number.isSafeInteger(value) || value < 1) throw new UsageError("BAD_ARGUMENT", `${name} must be a positive integer`, { actual: value });
  }
  checkSampleSeed(args.sampleSeed);
  // One IntGroupParams serves a block's seven linears, whose input widths differ (down_proj's is
  // the intermediate size): per-channel groups (-1) would need one group width per linear.
  if (!Number.isSafeInteger(args.groupSize) || args.groupSize < 1) throw new UsageError("BAD_ARGUMENT", "--objective block needs a positive --group-size (per-channel -1 is not supported)", { actual: args.groupSize });
}

/** What the resume journal must key on besides the common options: a journal made from other calibration is discarded. */
export function blockJournalIdentity(args: BlockObjectiveArgs): { options: Record<string, unknown>; sources: string[] } {
  if (args.objective !== "block" || args.calibrationText === undefined) return { options: {}, sources: [] };
  return {
    options: { objective: "block", samples: args.samples, seqLen: args.seqLen, ...seedIdentity(args.sampleSeed), protocol: args.protocol },
    sources: [args.calibrationText, ...(args.tokenizer === undefined ? [] : [args.tokenizer])],
  };
}

/** Whether `--device` may hand the block objective a GPU: `auto` (when one is usable) and `cuda`. */
export function blockObjectiveWantsGpu(device: DeviceChoice): boolean {
  return device !== "cpu";
}

/**
 * Tunes every decoder block of `checkpoint` and returns the per-linear results by module name.
 * `log` gets the windows' warnings and one line per block (index, best loss, seconds). `engine`:
 * the GPU that `--device auto|cuda` opened (the whole tuning then runs there).
 */
export async function signRoundBlockResults(checkpoint: Checkpoint, args: BlockObjectiveArgs & { bits: IntBits; sym: boolean }, log?: (line: string) => void, engine?: GpuEngine): Promise<Map<string, SignRoundResult>> {
  if (args.calibrationText === undefined) throw new UsageError("BAD_ARGUMENT", "--objective block needs --calibration-text <file>");
  if (engine === undefined && args.device !== "cpu") log?.(`lmpack: --objective block runs on the CPU with --device ${args.device}: no usable GPU`);
  if (engine !== undefined) log?.(`lmpack: --objective block runs its block forward/backward on ${engine.describe()} (--device cpu for the CPU reference)`);
  const windows = await calibrationWindows(checkpoint, { ...args, calibrationText: args.calibrationText }, log);
  const weights = await loadLlamaWeights(checkpoint);
  for (const layer of weights.layers) {
    for (const key of BLOCK_LINEARS) {
      const linear = layer[key];
      if (args.groupSize > linear.inFeatures) throw new UsageError("BAD_ARGUMENT", `--objective block: --group-size ${args.groupSize} is wider than ${linear.name}'s ${linear.inFeatures} input columns`, { tensor: `${linear.name}.weight`, expected: `≤ ${linear.inFeatures}`, actual: args.groupSize });
    }
  }
  const blocks = weights.layers.length;
  log?.(`lmpack: block-wise SignRound on ${windows.length} x ${args.seqLen} tokens, ${blocks} blocks, ${args.iters} iterations each, on ${engine === undefined ? "the CPU" : "the GPU"}`);
  const params = { bits: args.bits, groupSize: args.groupSize, sym: args.sym, scaleDtype: "F16" as const };
  // Imported only when a GPU was opened, as cli/commands/device.ts does with the other GPU paths.
  const backendFactory = engine === undefined ? undefined : (await import("../../kernels/block-grad/backend.js")).gpuBlockGradBackend(engine);
  return quantizeModelSignRoundBlockwise(weights, windows, { params, iters: args.iters, file: checkpoint.location, ...(backendFactory === undefined ? {} : { backendFactory }) }, (index, result, seconds) => {
    log?.(`lmpack: block ${index} (${index + 1}/${blocks}): best loss ${result.bestLoss.toExponential(4)} at iteration ${result.bestIter} (initial ${result.initialLoss.toExponential(4)}), ${seconds.toFixed(1)} s`);
  });
}
