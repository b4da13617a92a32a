import { convertFloatBytes } from "../../formats/dense/convert.js";
import type { FloatDType } from "../../formats/dtype.js";
import { UsageError } from "../../formats/errors.js";
import { quantizeVptq, type VptqQuantizeOptions } from "../../formats/vptq/quantize.js";
import { dequantizeVptq } from "../../formats/vptq/reference.js";
import { vptqBitsPerWeight, type VptqTensor } from "../../formats/vptq/types.js";
import type { HessianSource } from "../../formats/second-order/hessian.js";
import { journaled, type LayerJournal } from "../io/journal.js";
import type { Checkpoint, PackedVptq, TensorEntry } from "../checkpoint.js";
import { isDecoderLinear } from "../int-group/quantize-checkpoint.js";
import { layerErrors, type LayerEnergyBackend, type LayerErrors } from "../int-group/layer-errors.js";
import { vptqEntry } from "./entry.js";
import { vptqQuantizationSummary } from "./hf-config.js";

export interface VptqQuantizeCheckpointOptions {
  hessians: HessianSource;
  quantizer: Omit<VptqQuantizeOptions, "layerName">;
  /** Where the report's output error is computed (the GPU: kernels/linalg/energies-gpu.ts); the CPU by default. */
  energies?: LayerEnergyBackend;
  select?: (name: string) => boolean;
  onLayer?: (report: VptqLayerReport) => void;
  /** Finished layers of an interrupted run are loaded from here, and new ones recorded (converters/io/journal.ts). */
  journal?: LayerJournal;
}

export interface VptqLayerReport extends LayerErrors {
  name: string;
  outFeatures: number;
  inFeatures: number;
  indexBitsPerWeight: number;
  codebookBitsPerWeight: number;
  bitsPerWeight: number;
  seconds: number;
  /** Loaded from the journal of an interrupted run (the figures are that run's). */
  resumed?: boolean;
}

/**
 * A view of `source` whose selected linears are VPTQ entries, quantized when an exporter pulls
 * them (each exporter loads a layer once; nothing is cached). Parameters are the same for every
 * layer; the layer's outlier columns and group size follow from its width.
 */
export function quantizeVptqCheckpoint(source: Checkpoint, options: VptqQuantizeCheckpointOptions): Checkpoint {
  const select = options.select ?? isDecoderLinear;
  const tensors = source.tensors.map((t) => (t.shape.length === 2 && t.packed === undefined && select(t.name) ? quantizedEntry(t, options) : t));
  const first = tensors.find((t) => t.packed !== undefined);
  if (first === undefined) throw new UsageError("BAD_SOURCE", "no linear layers to quantize (expected 2-D *_proj.weight tensors under model.layers)", { file: source.location });
  return { ...source, tensors, quantization: vptqQuantizationSummary("lmpack", (first.packed as PackedVptq).params) };
}

function quantizedEntry(entry: TensorEntry, options: VptqQuantizeCheckpointOptions): TensorEntry {
  const [out, inFeatures] = entry.shape as [number, number];
  const q = options.quantizer;
  // The partition the quantizer will make (formats/vptq/quantize.ts): outlier columns first, the rest split evenly.
  const groupNum = q.groupNum ?? 1;
  let outlierSize = Math.ceil(((q.outlierPercent ?? 0) / 100) * inFeatures);
  while ((inFeatures - outlierSize) % groupNum !== 0) outlierSize++;
  const packed: PackedVptq = {
    representation: "vptq",
    params: {
      vectorLen: q.vectorLen ?? 8,
      numCentroids: q.numCentroids ?? 256,
      numResCentroids: q.numResCentroids ?? 0,
      groupNum,
      groupSize: (inFeatures - outlierSize) / groupNum,
      outlierSize,
      outlierVectorLen: outlierSize > 0 ? (q.outlierVectorLen ?? 4) : 0,
      outlierNumCentroids: outlierSize > 0 ? (q.outlierNumCentroids ?? 256) : 0,
      enableNorm: q.enableNorm ?? true,
      enablePerm: q.enablePerm ?? true,
    },
    outFeatures: out,
    inFeatures,
    dtype: q.dtype ?? "F16",
    storedBytes: 0,
    sourceLayout: "quantized",
    load: () => loadLayer(entry, out, inFeatures, options),
  };
  return vptqEntry(entry.name, entry.file, packed, { quantizer: "vptq" });
}

async function loadLayer(entry: TensorEntry, out: number, inFeatures: number, options: VptqQuantizeCheckpointOptions): Promise<VptqTensor> {
  const { value, resumed } = await journaled(options.journal, entry.name, () => quantizeLayer(entry, out, inFeatures, options));
  if (value.report !== undefined) options.onLayer?.(resumed ? { ...value.report, resumed } : value.report);
  return value.tensor;
}

/** The layer, and its report when someone listens (the report costs a dequantization). */
async function quantizeLayer(entry: TensorEntry, out: number, inFeatures: number, options: VptqQuantizeCheckpointOptions): Promise<{ tensor: VptqTensor; report: VptqLayerReport | undefined }> {
  const started = performance.now();
  const bytes = convertFloatBytes(await entry.read(), entry.dtype as FloatDType, "F32");
  const weight = bytes.byteOffset % 4 === 0 ? new Float32Array(bytes.buffer, bytes.byteOffset, out * inFeatures) : new Float32Array(bytes.slice().buffer);
  const module = entry.name.replace(/\.weight$/, "");
  const hessian = await options.hessians.get(module, inFeatures);
  if (hessian === undefined) throw new UsageError("BAD_ARGUMENT", "VPTQ needs a Hessian for every layer (--hessians <store> or --hessians embedding-proxy)", { tensor: entry.name });
  const { tensor } = quantizeVptq(weight, out, inFeatures, hessian, { ...options.quantizer, layerName: module });
  if (options.onLayer === undefined) return { tensor, report: undefined };
  const halves = dequantizeVptq(tensor);
  const deq = new Float32Array(convertFloatBytes(new Uint8Array(halves.buffer), tensor.dtype, "F32").buffer);
  const bits = vptqBitsPerWeight(tensor.params, out, inFeatures);
  return { tensor, report: { name: entry.name, outFeatures: out, inFeatures, indexBitsPerWeight: bits.indexBits, codebookBitsPerWeight: bits.codebookBits, bitsPerWeight: bits.total, seconds: (performance.now() - started) / 1000, ...layerErrors(weight, deq, out, inFeatures, hessian, options.energies) } };
}
