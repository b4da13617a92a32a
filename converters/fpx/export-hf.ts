import type { DType, TargetFloatDType } from "../../formats/dtype.js";
import { ConversionError, UsageError } from "../../formats/errors.js";
import type { FpxFormat } from "../../formats/fpx/format.js";
import { bytesOf } from "../../formats/packed-array.js";
import type { Checkpoint, PackedFpx, TensorEntry } from "../checkpoint.js";
import { SINGLE_WEIGHTS_FILE } from "../hf/import-local.js";
import { writeQuantizedConfigAndSideFiles } from "../hf/quantized-config.js";
import { AtomicDirectory } from "../io/atomic.js";
import { SafetensorsWriter, sharedTensorAliases, type TensorPlan } from "../safetensors/writer.js";
import { ChunkStream, outputDtype, totalSourceBytes, type ProgressSink } from "../tensor-stream.js";
import { buildHfFpxConfig } from "./hf-config.js";

export interface HfFpxExportOptions {
  /** Float dtype for the unquantized tensors (default: unchanged). */
  dtype?: TargetFloatDType;
  overwrite?: boolean;
  progress?: ProgressSink;
}

/**
 * Writes a checkpoint with fpx layers as an FP6-LLM tensor-core HF directory (hf-config.ts):
 * per layer `<m>.weight_packed` U8 [out, in·nbits/8] and `<m>.weight_scale` F16 [out], moved
 * as they are; other tensors pass through. Tensors keep the source's order, a layer's pair
 * together, so each packed layer is loaded (or quantized) exactly once and memory holds one
 * layer at a time.
 */
export async function exportHfFpx(checkpoint: Checkpoint, out: string, options: HfFpxExportOptions = {}): Promise<void> {
  const format = commonFormat(checkpoint);
  const plans: TensorPlan[] = [];
  const sourceOf = new Map<string, TensorEntry>();
  for (const entry of checkpoint.tensors) {
    const packed = entry.packed;
    if (packed === undefined) {
      plans.push({ name: entry.name, dtype: outputDtype(entry, options.dtype), shape: entry.shape });
      sourceOf.set(entry.name, entry);
      continue;
    }
    const module = moduleOf(entry.name);
    plans.push({ name: `${module}.weight_packed`, dtype: "U8", shape: [packed.outFeatures, (packed.inFeatures * format.nbits) / 8] });
    plans.push({ name: `${module}.weight_scale`, dtype: "F16", shape: [packed.outFeatures] });
    sourceOf.set(`${module}.weight_packed`, entry);
  }
  options.progress?.start(totalSourceBytes(checkpoint.tensors));
  const dir = await AtomicDirectory.create(out, { overwrite: options.overwrite ?? false });
  try {
    await writeTensors(dir.file(SINGLE_WEIGHTS_FILE), plans, sourceOf, checkpoint.metadata, options);
    const skipped = ["lm_head", ...checkpoint.tensors.filter(isUnquantizedLinear).map((t) => moduleOf(t.name))];
    await writeQuantizedConfigAndSideFiles(dir, checkpoint, buildHfFpxConfig(format, [...new Set(skipped)]), options.dtype);
  } catch (error) {
    await dir.abort();
    throw error;
  } finally {
    options.progress?.finish();
  }
  await dir.commit();
}

/** The one FPx format of the checkpoint's packed layers (the config names one ebits/mbits). */
function commonFormat(checkpoint: Checkpoint): FpxFormat {
  const packed = checkpoint.tensors.filter((t) => t.packed !== undefined);
  const other = packed.find((t) => t.packed!.representation !== "fpx");
  if (other !== undefined) throw new ConversionError("UNSUPPORTED_TARGET", `this layer is ${other.packed!.representation}, not FPx; the fp6_tc layout holds FPx codes only (write it with --to safetensors, lmpack or its own HF layout)`, { tensor: other.name });
  if (packed.length === 0) throw new UsageError("BAD_SOURCE", "the source has no FPx layers to write in this layout; quantize it first (lmpack quantize --method fp6)", { file: checkpoint.location });
  const format = (packed[0]!.packed as PackedFpx).format;
  const mixed = packed.find((t) => (t.packed as PackedFpx).format !== format);
  if (mixed !== undefined) throw new ConversionError("NOT_REPRESENTABLE", `fp6_tc configs name one format for every layer; this layer is ${(mixed.packed as PackedFpx).format.name}, the first ${format.name}`, { tensor: mixed.name });
  return format;
}

function moduleOf(name: string): string {
  return name.endsWith(".weight") ? name.slice(0, -".weight".length) : name;
}

/** Linear weights left in floating point (listed in modules_to_not_convert). */
function isUnquantizedLinear(t: TensorEntry): boolean {
  return t.packed === undefined && t.shape.length === 2 && /\.layers\.\d+\..+\.weight$/.test(t.name);
}

async function writeTensors(path: string, plans: TensorPlan[], sourceOf: Map<string, TensorEntry>, metadata: Record<string, string>, options: HfFpxExportOptions): Promise<void> {
  const stream = new ChunkStream(options.progress);
  const writer = await SafetensorsWriter.create(path, plans, { format: "pt", ...sharedTensorAliases(metadata, new Set(plans.map((p) => p.name))) });
  try {
    // A layer's scales are planned right after its packed codes; one load serves both.
    let pendingScales: { name: string; bytes: Uint8Array } | undefined;
    for (const plan of plans) {
      if (plan.name === pendingScales?.name) {
        await writer.write(plan.name, pendingScales.bytes);
        pendingScales = undefined;
        continue;
      }
      const entry = sourceOf.get(plan.name)!;
      if (entry.packed === undefined) {
        for await (const chunk of stream.chunks(entry, plan.dtype as DType)) await writer.write(plan.name, chunk);
        continue;
      }
      const tensor = await (entry.packed as PackedFpx).load();
      await writer.write(plan.name, tensor.packed);
      pendingScales = { name: `${moduleOf(entry.name)}.weight_scale`, bytes: bytesOf(tensor.scales) };
      options.progress?.advance(entry.byteLength, entry.name);
    }
  } catch (error) {
    await writer.abort();
    throw error;
  }
  await writer.finish();
}
