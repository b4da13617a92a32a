import { dtypeBytes, type DType, type TargetFloatDType } from "../../formats/dtype.js";
import { ConversionError, UsageError } from "../../formats/errors.js";
import { packAwq } from "../../formats/int-group/awq-layout.js";
import { gptqBytes, packGptq, type ZeroConvention } from "../../formats/int-group/gptq-layout.js";
import { requantize } from "../../formats/int-group/requant.js";
import { groupCount, isTrivialGIdx, type IntGroupParams, type IntGroupTensor } from "../../formats/int-group/types.js";
import { streamWords } from "../../formats/int-group/bitstream.js";
import type { Checkpoint, PackedIntGroup, TensorEntry } from "../checkpoint.js";
import { AtomicDirectory, writeFileAtomic } from "../io/atomic.js";
import { SINGLE_WEIGHTS_FILE } from "../hf/import-local.js";
import { writeQuantizedConfigAndSideFiles } from "../hf/quantized-config.js";
import { SafetensorsWriter, sharedTensorAliases, type TensorPlan } from "../safetensors/writer.js";
import { ChunkStream, outputDtype, totalSourceBytes, type ProgressSink } from "../tensor-stream.js";
import type { HfIntMethod } from "./hf-quant-config.js";
import { buildQuantConfig, type WrittenLayer } from "./hf-quant-config-write.js";

/** `--to` targets of the HF integer layouts and the `quant_method` each writes. */
export const HF_INT_TARGETS = { "hf-gptq": "gptq", "hf-autoround": "auto-round", "hf-awq": "awq" } as const satisfies Record<string, HfIntMethod>;

export interface HfIntExportOptions {
  method: HfIntMethod;
  /** GPTQ only: v1 (`checkpoint_format: gptq`, what AutoGPTQ and transformers expect; default) or v2. */
  gptqFormat?: ZeroConvention;
  /** Requantize (round-to-nearest on the target grid) layers the target cannot hold exactly, and report the error. */
  allowRequant?: boolean;
  /** Float dtype for the unquantized tensors (default: unchanged). */
  dtype?: TargetFloatDType;
  overwrite?: boolean;
  progress?: ProgressSink;
}

export interface LayerExportReport {
  name: string;
  action: "repacked" | "requantized";
  reason?: string;
  relativeRmsError?: number;
  maxAbsError?: number;
}

interface LayerPlan {
  entry: TensorEntry;
  packed: PackedIntGroup;
  module: string;
  target: IntGroupParams;
  tensors: TensorPlan[];
}

/**
 * Writes a checkpoint with int-group layers as a Hugging Face GPTQ, AutoRound or AWQ directory.
 * Codes, zero points and scales are moved, never recomputed; a layer the target cannot hold
 * exactly is refused (ConversionError naming the layer and why) unless `allowRequant`.
 * Tensors are ordered as Python's safetensors orders them (dtype width, then name), so a round
 * trip through other layouts gives back the same file.
 */
export async function exportHfInt(checkpoint: Checkpoint, out: string, options: HfIntExportOptions): Promise<LayerExportReport[]> {
  const zeros = zeroConvention(checkpoint, options);
  const layers = checkpoint.tensors.filter((t) => t.packed !== undefined).map((t) => planLayer(t, options));
  if (layers.length === 0) throw new UsageError("BAD_SOURCE", "the source has no integer-quantized layers to write in this layout; quantize it first (lmpack quantize)", { file: checkpoint.location });
  const dense = checkpoint.tensors.filter((t) => t.packed === undefined);
  const plans = [...layers.flatMap((l) => l.tensors), ...dense.map((t) => ({ name: t.name, dtype: outputDtype(t, options.dtype), shape: t.shape }))];
  plans.sort((a, b) => dtypeBytes(b.dtype) - dtypeBytes(a.dtype) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  options.progress?.start(totalSourceBytes(checkpoint.tensors));
  const dir = await AtomicDirectory.create(out, { overwrite: options.overwrite ?? false });
  const reports: LayerExportReport[] = [];
  try {
    const written = await writeTensors(dir.file(SINGLE_WEIGHTS_FILE), plans, checkpoint.metadata, layers, dense, options, zeros, reports);
    const skipped = dense.filter(isUnquantizedLinear).map((t) => t.name.slice(0, -".weight".length));
    const quantConfig = buildQuantConfig(options.method, zeros, written, skipped);
    await writeQuantizedConfigAndSideFiles(dir, checkpoint, quantConfig, options.dtype);
    if (options.method === "gptq") await writeFileAtomic(dir.file("quantize_config.json"), JSON.stringify(quantConfig, null, 2) + "\n");
  } catch (error) {
    await dir.abort();
    throw error;
  } finally {
    options.progress?.finish();
  }
  await dir.commit();
  return reports;
}

function zeroConvention(checkpoint: Checkpoint, options: HfIntExportOptions): ZeroConvention {
  if (options.method === "gptq") return options.gptqFormat ?? "v1";
  if (options.method === "awq") return "v2";
  // auto-round writes symmetric models in the v1 convention (auto_round:auto_gptq), others without the −1.
  return checkpoint.tensors.every((t) => t.packed?.representation !== "int-group" || t.packed.params.sym) ? "v1" : "v2";
}

/** Output tensors of one layer; refuses up front what no repack can fix (shapes, code width). */
function planLayer(entry: TensorEntry, options: HfIntExportOptions): LayerPlan {
  const packed = entry.packed!;
  if (packed.representation !== "int-group") {
    throw new ConversionError("UNSUPPORTED_TARGET", `this layer is ${packed.representation}, not integer group codes; write it in its own HF layout, lmpack or safetensors`, { tensor: entry.name });
  }
  const module = entry.name.endsWith(".weight") ? entry.name.slice(0, -".weight".length) : entry.name;
  const N = packed.outFeatures;
  const K = packed.inFeatures;
  let target: IntGroupParams = { ...packed.params, scaleDtype: "F16" };
  if (options.method === "awq") {
    if (packed.params.bits !== 4) {
      if (!options.allowRequant) throw new ConversionError("UNSUPPORTED_TARGET", `AWQ holds 4-bit codes only; this layer is ${packed.params.bits}-bit (use --allow-requant to requantize it to 4 bits)`, { tensor: entry.name, expected: 4, actual: packed.params.bits });
      target = { ...target, bits: 4 };
    }
    if (N % 8 !== 0 || K % target.groupSize !== 0) throw new ConversionError("NOT_REPRESENTABLE", "AWQ needs out_features % 8 = 0 and in_features % group_size = 0", { tensor: entry.name, actual: `N=${N}, K=${K}, group ${target.groupSize}` });
    const words = N / 8;
    const G = K / target.groupSize;
    return { entry, packed, module, target, tensors: [{ name: `${module}.qweight`, dtype: "I32", shape: [K, words] }, { name: `${module}.qzeros`, dtype: "I32", shape: [G, words] }, { name: `${module}.scales`, dtype: "F16", shape: [G, N] }] };
  }
  if (K % 32 !== 0 || N % 32 !== 0) throw new ConversionError("NOT_REPRESENTABLE", "GPTQ loaders need in_features and out_features that are multiples of 32", { tensor: entry.name, actual: `N=${N}, K=${K}` });
  const G = groupCount(K, target.groupSize);
  const bits = target.bits;
  return {
    entry,
    packed,
    module,
    target,
    tensors: [
      { name: `${module}.qweight`, dtype: "I32", shape: [(K * bits) / 32, N] },
      { name: `${module}.qzeros`, dtype: "I32", shape: [G, streamWords(N, bits)] },
      { name: `${module}.scales`, dtype: "F16", shape: [G, N] },
      { name: `${module}.g_idx`, dtype: "I32", shape: [K] },
    ],
  };
}

/** Linear weights a quantized model left in floating point (listed as excluded in the config). */
function isUnquantizedLinear(t: TensorEntry): boolean {
  return t.shape.length === 2 && /\.layers\.\d+\..+\.weight$/.test(t.name);
}

async function writeTensors(path: string, plans: TensorPlan[], metadata: Record<string, string>, layers: LayerPlan[], dense: TensorEntry[], options: HfIntExportOptions, zeros: ZeroConvention, reports: LayerExportReport[]): Promise<WrittenLayer[]> {
  const layerOf = new Map(layers.flatMap((l) => l.tensors.map((t) => [t.name, l] as const)));
  const denseByName = new Map(dense.map((t) => [t.name, t]));
  const pending = new Map<LayerPlan, { bytes: Map<string, Uint8Array>; remaining: number }>();
  const written: WrittenLayer[] = [];
  const stream = new ChunkStream(options.progress);
  const writer = await SafetensorsWriter.create(path, plans, { format: "pt", ...sharedTensorAliases(metadata, new Set(plans.map((p) => p.name))) });
  try {
    for (const plan of plans) {
      const layer = layerOf.get(plan.name);
      if (layer === undefined) {
        const entry = denseByName.get(plan.name)!;
        for await (const chunk of stream.chunks(entry, plan.dtype as DType)) await writer.write(plan.name, chunk);
        continue;
      }
      let state = pending.get(layer);
      if (state === undefined) {
        const { bytes, tensor } = await packLayer(layer, options, zeros, reports);
        written.push({ module: layer.module, params: tensor.params, inFeatures: tensor.inFeatures, actOrder: !isTrivialGIdx(tensor.gIdx, tensor.params.groupSize) });
        options.progress?.advance(layer.entry.byteLength, layer.entry.name);
        state = { bytes, remaining: layer.tensors.length };
        pending.set(layer, state);
      }
      await writer.write(plan.name, state.bytes.get(plan.name)!);
      if (--state.remaining === 0) pending.delete(layer);
    }
  } catch (error) {
    await writer.abort();
    throw error;
  }
  await writer.finish();
  return written;
}

async function packLayer(layer: LayerPlan, options: HfIntExportOptions, zeros: ZeroConvention, reports: LayerExportReport[]): Promise<{ bytes: Map<string, Uint8Array>; tensor: IntGroupTensor }> {
  const source = await layer.packed.load();
  const name = layer.entry.name;
  const pack = (t: IntGroupTensor): Uint8Array[] => {
    if (options.method === "awq") {
      const p = packAwq(t, name);
      return [p.qweight, p.qzeros, p.scales];
    }
    const p = gptqBytes(packGptq(t, zeros, name));
    return [p.qweight, p.qzeros, p.scales, p.gIdx];
  };
  let tensor = source;
  let arrays: Uint8Array[] | undefined;
  let refusal: unknown = layoutRefusal(source, layer, options.method);
  if (refusal === undefined) {
    try {
      arrays = pack(source);
      reports.push({ name, action: "repacked" });
    } catch (error) {
      refusal = error;
    }
  }
  if (arrays === undefined) {
    if (!(refusal instanceof ConversionError) || !options.allowRequant) throw refusal;
    const result = requantize(source, { params: layer.target, minZero: zeros === "v1" ? 1 : 0 });
    tensor = result.tensor;
    arrays = pack(tensor);
    reports.push({ name, action: "requantized", reason: refusal.detail, relativeRmsError: result.relativeRmsError, maxAbsError: result.maxAbsError });
  }
  return { bytes: new Map(layer.tensors.map((t, i) => [t.name, arrays[i]!])), tensor };
}

/** What the target's packer cannot see for itself: a code width chosen by the plan, act-order into auto-round. */
function layoutRefusal(source: IntGroupTensor, layer: LayerPlan, method: HfIntMethod): ConversionError | undefined {
  const name = layer.entry.name;
  if (source.params.bits !== layer.target.bits) return new ConversionError("UNSUPPORTED_TARGET", `the target holds ${layer.target.bits}-bit codes; this layer is ${source.params.bits}-bit`, { tensor: name, expected: layer.target.bits, actual: source.params.bits });
  if (method === "auto-round" && !isTrivialGIdx(source.gIdx, source.params.groupSize)) {
    return new ConversionError("NOT_REPRESENTABLE", "auto-round's layout readers assume g_idx = k / group_size, so act-order (desc_act) groups cannot be stored", { tensor: name });
  }
  return undefined;
}
