import { dtypeBytes, type DType, type TargetFloatDType } from "../../formats/dtype.js";
import { ConversionError, UsageError } from "../../formats/errors.js";
import { packHfSpqr } from "../../formats/spqr/hf-layout.js";
import type { Checkpoint, PackedSpqr, TensorEntry } from "../checkpoint.js";
import { SINGLE_WEIGHTS_FILE } from "../hf/import-local.js";
import { writeQuantizedConfigAndSideFiles } from "../hf/quantized-config.js";
import { AtomicDirectory } from "../io/atomic.js";
import { SafetensorsWriter, sharedTensorAliases, type TensorPlan } from "../safetensors/writer.js";
import { ChunkStream, outputDtype, totalSourceBytes, type ProgressSink } from "../tensor-stream.js";
import { buildHfSpqrConfig, SPQR_ARRAYS } from "./hf-config.js";

export interface HfSpqrExportOptions {
  /** Float dtype for the unquantized tensors (default: unchanged; SpQR models are fp16). */
  dtype?: TargetFloatDType;
  overwrite?: boolean;
  progress?: ProgressSink;
}

type ArrayName = (typeof SPQR_ARRAYS)[number];
const DTYPE_OF: Record<ArrayName, DType> = { dense_weights: "I64", row_offsets: "I32", col_vals: "I32", in_perm: "I32" };

/**
 * Writes a checkpoint with spqr layers as a SpQR Hugging Face directory: per layer the four
 * arrays of formats/spqr/hf-layout.ts, `quantization_config` with `shapes` and
 * `modules_to_not_convert` (parameter names, lm_head.weight always included, as
 * convert_to_hf.py does), other tensors passed through. Tensors are ordered as Python's
 * safetensors orders them (dtype width, then name), which keeps the I64 words 8-aligned, and
 * torch's shared-tensor aliases in `__metadata__` (tied embeddings) are kept: a round trip gives
 * the original file back.
 *
 * Memory: a safetensors header lists every size before any data, and a layer's col_vals length
 * (its outlier count) is known only once the layer is loaded (or quantized), so every layer is
 * packed first and held until written: about a quarter of the model's fp16 size. Spilling the
 * packed words to a temporary file would lift that; not needed for the models tested so far.
 */
export async function exportHfSpqr(checkpoint: Checkpoint, out: string, options: HfSpqrExportOptions = {}): Promise<void> {
  const layers = checkpoint.tensors.filter((t) => t.packed !== undefined);
  const other = layers.find((t) => t.packed!.representation !== "spqr");
  if (other !== undefined) throw new ConversionError("UNSUPPORTED_TARGET", `this layer is ${other.packed!.representation}, not SpQR; the SpQR layout holds SpQR layers only`, { tensor: other.name });
  if (layers.length === 0) throw new UsageError("BAD_SOURCE", "the source has no SpQR layers to write in this layout; quantize it first (lmpack quantize --method spqr)", { file: checkpoint.location });
  const plans: TensorPlan[] = [];
  const owner = new Map<string, { entry: TensorEntry; array?: ArrayName }>();
  for (const entry of checkpoint.tensors) {
    if (entry.packed === undefined) {
      plans.push({ name: entry.name, dtype: outputDtype(entry, options.dtype), shape: entry.shape });
      owner.set(entry.name, { entry });
    }
  }
  const packedLayers = new Map<string, Record<ArrayName, Uint8Array>>();
  const shapes: Record<string, number> = {};
  for (const entry of layers) {
    const module = entry.name.replace(/\.weight$/, "");
    const arrays = await packLayer(entry);
    packedLayers.set(module, arrays);
    for (const a of SPQR_ARRAYS) {
      const length = arrays[a].length / dtypeBytes(DTYPE_OF[a]);
      plans.push({ name: `${module}.${a}`, dtype: DTYPE_OF[a], shape: [length] });
      owner.set(`${module}.${a}`, { entry, array: a });
      shapes[`${module}.${a}.shape`] = length;
    }
  }
  plans.sort((a, b) => dtypeBytes(b.dtype) - dtypeBytes(a.dtype) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const aliases = sharedTensorAliases(checkpoint.metadata, new Set(plans.map((p) => p.name)));
  options.progress?.start(totalSourceBytes(checkpoint.tensors));
  const dir = await AtomicDirectory.create(out, { overwrite: options.overwrite ?? false });
  try {
    const writer = await SafetensorsWriter.create(dir.file(SINGLE_WEIGHTS_FILE), plans, { format: "pt", ...aliases });
    try {
      const stream = new ChunkStream(options.progress);
      for (const plan of plans) {
        const { entry, array } = owner.get(plan.name)!;
        if (array === undefined) {
          for await (const chunk of stream.chunks(entry, plan.dtype)) await writer.write(plan.name, chunk);
        } else {
          const module = entry.name.replace(/\.weight$/, "");
          await writer.write(plan.name, packedLayers.get(module)![array]);
        }
      }
    } catch (error) {
      await writer.abort();
      throw error;
    }
    await writer.finish();
    await writeQuantizedConfigAndSideFiles(dir, checkpoint, buildHfSpqrConfig(unconverted(checkpoint), shapes), options.dtype);
  } catch (error) {
    await dir.abort();
    throw error;
  } finally {
    options.progress?.finish();
  }
  await dir.commit();
}

async function packLayer(entry: TensorEntry): Promise<Record<ArrayName, Uint8Array>> {
  const packed = packHfSpqr(await (entry.packed as PackedSpqr).load(), entry.name);
  return { dense_weights: packed.denseWeights, row_offsets: packed.rowOffsets, col_vals: packed.colVals, in_perm: packed.inPerm };
}

/** Parameter names left unquantized, plus lm_head.weight (transformers would otherwise convert lm_head). */
function unconverted(checkpoint: Checkpoint): string[] {
  const names = checkpoint.tensors.filter((t) => t.packed === undefined).map((t) => t.name);
  if (checkpoint.config?.tiedEmbeddings && !names.includes("model.embed_tokens.weight")) names.unshift("model.embed_tokens.weight");
  return [...new Set([...names.filter((n) => n !== "lm_head.weight"), "lm_head.weight"])];
}
