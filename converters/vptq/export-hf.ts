import { dtypeBytes, type TargetFloatDType } from "../../formats/dtype.js";
import { ConversionError, UsageError } from "../../formats/errors.js";
import { packVptq, vptqArraySpecs, type VptqSuffix } from "../../formats/vptq/hf-layout.js";
import type { Checkpoint, PackedVptq, TensorEntry } from "../checkpoint.js";
import { SINGLE_WEIGHTS_FILE } from "../hf/import-local.js";
import { writeQuantizedConfigAndSideFiles } from "../hf/quantized-config.js";
import { AtomicDirectory } from "../io/atomic.js";
import { SafetensorsWriter, sharedTensorAliases, type TensorPlan } from "../safetensors/writer.js";
import { ChunkStream, outputDtype, totalSourceBytes, type ProgressSink } from "../tensor-stream.js";
import { buildVptqLayerConfig, VPTQ_METHOD } from "./hf-config.js";

export interface HfVptqExportOptions {
  /** Float dtype for the unquantized tensors (default: unchanged). */
  dtype?: TargetFloatDType;
  overwrite?: boolean;
  progress?: ProgressSink;
}

/**
 * Writes a checkpoint with vptq layers in the VPTQ-community layout (formats/vptq/hf-layout.ts)
 * with a `config_for_layers` entry per layer holding every key the vptq and transformers
 * loaders read (in/out features included). Tensors are ordered as Python's safetensors orders
 * them (dtype width, then name) and torch's tied-tensor aliases are kept, so a round trip gives
 * the original file back. Every layer is packed before writing (a quarter or less of the fp16
 * model in memory), as each layer's arrays sit in different dtype groups of that order.
 */
export async function exportHfVptq(checkpoint: Checkpoint, out: string, options: HfVptqExportOptions = {}): Promise<void> {
  const layers = checkpoint.tensors.filter((t) => t.packed !== undefined);
  const other = layers.find((t) => t.packed!.representation !== "vptq");
  if (other !== undefined) throw new ConversionError("UNSUPPORTED_TARGET", `this layer is ${other.packed!.representation}, not VPTQ; the VPTQ layout holds VPTQ layers only`, { tensor: other.name });
  if (layers.length === 0) throw new UsageError("BAD_SOURCE", "the source has no VPTQ layers to write in this layout; quantize it first (lmpack quantize --method vptq)", { file: checkpoint.location });
  const plans: TensorPlan[] = [];
  const dense = new Map<string, TensorEntry>();
  const packedArrays = new Map<string, Uint8Array>();
  const configForLayers: Record<string, unknown> = {};
  for (const entry of checkpoint.tensors) {
    if (entry.packed === undefined) {
      plans.push({ name: entry.name, dtype: outputDtype(entry, options.dtype), shape: entry.shape });
      dense.set(entry.name, entry);
      continue;
    }
    const module = entry.name.replace(/\.weight$/, "");
    // The loaded tensor's parameters, not the entry's: a quantizer fixes them as it runs.
    const p = await (entry.packed as PackedVptq).load();
    const arrays = packVptq(p);
    for (const [suffix, spec] of vptqArraySpecs(p.params, p.outFeatures, p.inFeatures, p.dtype)) {
      plans.push({ name: `${module}.${suffix}`, dtype: spec.dtype, shape: spec.shape });
      packedArrays.set(`${module}.${suffix}`, arrays.get(suffix as VptqSuffix)!);
    }
    configForLayers[module] = buildVptqLayerConfig(p.params, p.inFeatures, p.outFeatures, checkpoint.tensors.some((t) => t.name === `${module}.bias`));
  }
  plans.sort((a, b) => dtypeBytes(b.dtype) - dtypeBytes(a.dtype) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  options.progress?.start(totalSourceBytes(checkpoint.tensors));
  const dir = await AtomicDirectory.create(out, { overwrite: options.overwrite ?? false });
  try {
    const writer = await SafetensorsWriter.create(dir.file(SINGLE_WEIGHTS_FILE), plans, { format: "pt", ...sharedTensorAliases(checkpoint.metadata, new Set(plans.map((p) => p.name))) });
    try {
      const stream = new ChunkStream(options.progress);
      for (const plan of plans) {
        const entry = dense.get(plan.name);
        if (entry === undefined) await writer.write(plan.name, packedArrays.get(plan.name)!);
        else for await (const chunk of stream.chunks(entry, plan.dtype)) await writer.write(plan.name, chunk);
      }
    } catch (error) {
      await writer.abort();
      throw error;
    }
    await writer.finish();
    await writeQuantizedConfigAndSideFiles(dir, checkpoint, { quant_method: VPTQ_METHOD, config_for_layers: configForLayers }, options.dtype);
  } catch (error) {
    await dir.abort();
    throw error;
  } finally {
    options.progress?.finish();
  }
  await dir.commit();
}
