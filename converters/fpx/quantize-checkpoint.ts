import { convertFloatBytes } from "../../formats/dense/convert.js";
import type { FloatDType } from "../../formats/dtype.js";
import { ConversionError, UsageError } from "../../formats/errors.js";
import type { FpxFormat } from "../../formats/fpx/format.js";
import { quantizeFpx } from "../../formats/fpx/quantize.js";
import { dequantizeFpx } from "../../formats/fpx/reference.js";
import { fitsTcLayout, TC_COL_MULTIPLE, TC_ROW_MULTIPLE } from "../../formats/fpx/tc-layout.js";
import { fpxStoredBytes, type CodesFrom, type FpxTensor } from "../../formats/fpx/types.js";
import type { Checkpoint, PackedFpx, TensorEntry } from "../checkpoint.js";
import { isDecoderLinear } from "../int-group/quantize-checkpoint.js";
import { fpxEntry } from "./entry.js";
import { fpxQuantizationSummary } from "./hf-config.js";

export interface FpxQuantizeCheckpointOptions {
  format: FpxFormat;
  codesFrom: CodesFrom;
  /** Which linears to quantize (default: the decoder layers' projections). */
  select?: (name: string) => boolean;
  /** Called as each layer is quantized (when the exporter pulls it). */
  onLayer?: (report: FpxLayerReport) => void;
}

export interface FpxLayerReport {
  name: string;
  outFeatures: number;
  inFeatures: number;
  seconds: number;
  /** mean((Ŵ − W)²) */
  weightMse: number;
  /** ‖Ŵ − W‖ / ‖W‖ */
  relativeRmsError: number;
  maxAbsError: number;
}

/** A selected linear the layout cannot hold, kept in f16 instead. */
export interface FpxKeptLayer {
  name: string;
  shape: number[];
  reason: string;
  keptDtype: "F16";
}

/**
 * A view of `source` whose selected linears are fpx entries, quantized when an exporter pulls
 * them (each load quantizes anew and nothing is cached, so memory holds one layer at a time).
 * Selected linears whose shape is not a multiple of 64x64 are kept in f16 (the dtype FP6-LLM
 * computes in) and listed in `kept`: padding them into the layout would give wrong results.
 */
export function quantizeFpxCheckpoint(source: Checkpoint, options: FpxQuantizeCheckpointOptions): { checkpoint: Checkpoint; kept: FpxKeptLayer[] } {
  const select = options.select ?? isDecoderLinear;
  const kept: FpxKeptLayer[] = [];
  const tensors = source.tensors.map((t) => {
    if (t.shape.length !== 2 || t.packed !== undefined || !select(t.name)) return t;
    const [M, N] = t.shape as [number, number];
    if (fitsTcLayout(M, N)) return quantizedEntry(t, M, N, options);
    kept.push({ name: t.name, shape: t.shape, reason: `${M}x${N} is not a multiple of ${TC_ROW_MULTIPLE}x${TC_COL_MULTIPLE}`, keptDtype: "F16" });
    return asF16(t);
  });
  if (!tensors.some((t) => t.packed !== undefined)) {
    throw new UsageError("BAD_SOURCE", `no linear layer the FPx layout can hold (2-D *_proj.weight under model.layers, multiples of ${TC_ROW_MULTIPLE}x${TC_COL_MULTIPLE})`, { file: source.location });
  }
  return { checkpoint: { ...source, tensors, quantization: fpxQuantizationSummary("lmpack", options.format) }, kept };
}

function quantizedEntry(entry: TensorEntry, M: number, N: number, options: FpxQuantizeCheckpointOptions): TensorEntry {
  const packed: PackedFpx = {
    representation: "fpx",
    format: options.format,
    outFeatures: M,
    inFeatures: N,
    storedBytes: fpxStoredBytes(options.format, M, N),
    sourceLayout: "quantized",
    codesFrom: options.codesFrom,
    load: () => quantizeLayer(entry, M, N, options),
  };
  return fpxEntry(entry.name, entry.file, packed, { quantizer: "fpx", format: options.format.name, codesFrom: options.codesFrom });
}

async function quantizeLayer(entry: TensorEntry, M: number, N: number, options: FpxQuantizeCheckpointOptions): Promise<FpxTensor> {
  const started = performance.now();
  const weight = await f32Weight(entry);
  const tensor = quantizeFpx(weight, M, N, { format: options.format, codesFrom: options.codesFrom, tensor: entry.name });
  if (options.onLayer !== undefined) {
    const deq = dequantizeFpx(tensor);
    let squaredError = 0;
    let energy = 0;
    let maxAbsError = 0;
    for (let i = 0; i < weight.length; i++) {
      const e = Math.abs(deq[i]! - weight[i]!);
      squaredError += e * e;
      energy += weight[i]! * weight[i]!;
      if (e > maxAbsError) maxAbsError = e;
    }
    const seconds = (performance.now() - started) / 1000;
    options.onLayer({ name: entry.name, outFeatures: M, inFeatures: N, seconds, weightMse: squaredError / weight.length, relativeRmsError: energy === 0 ? 0 : Math.sqrt(squaredError / energy), maxAbsError });
  }
  return tensor;
}

async function f32Weight(entry: TensorEntry): Promise<Float32Array> {
  const bytes = convertFloatBytes(await entry.read(), entry.dtype as FloatDType, "F32");
  return bytes.byteOffset % 4 === 0 ? new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4) : new Float32Array(bytes.slice().buffer);
}

/** The entry converted to F16 on read; a value beyond f16's range is refused, not turned into inf. */
function asF16(entry: TensorEntry): TensorEntry {
  if (entry.dtype === "F16") return entry;
  const from = entry.dtype as FloatDType;
  const convert = (chunk: Uint8Array): Uint8Array => {
    const out = convertFloatBytes(chunk, from, "F16");
    const halves = new Uint16Array(out.buffer, out.byteOffset, out.length / 2);
    const at = halves.findIndex((h) => (h & 0x7c00) === 0x7c00);
    if (at >= 0) {
      const source = convertFloatBytes(chunk, from, "F32");
      const value = new Float32Array(source.buffer, source.byteOffset, source.length / 4)[at]!;
      if (Number.isFinite(value)) throw new ConversionError("NOT_REPRESENTABLE", `value ${value} is beyond f16's range; this layer cannot be kept in f16`, { tensor: entry.name });
    }
    return out;
  };
  return {
    ...entry,
    dtype: "F16",
    byteLength: entry.nElements * 2,
    notes: { ...entry.notes, sourceDtype: entry.dtype, keptUnquantized: "shape not a multiple of the FPx tile" },
    read: async () => convert(await entry.read()),
    readChunks: async function* (maxChunkBytes?: number) {
      for await (const chunk of entry.readChunks(maxChunkBytes)) yield convert(chunk);
    },
  };
}
