import { convertFloatBytes } from "../../formats/dense/convert.js";
import type { FloatDType } from "../../formats/dtype.js";
import { UsageError } from "../../formats/errors.js";
import { quantizeSpqr, type SpqrQuantizeOptions } from "../../formats/spqr/quantize.js";
import { dequantizeSpqr } from "../../formats/spqr/reference.js";
import { paperBitsPerWeight, SPQR_DEFAULTS, type SpqrTensor } from "../../formats/spqr/types.js";
import type { HessianSource } from "../../formats/second-order/hessian.js";
import { journaled, type LayerJournal } from "../io/journal.js";
import type { Checkpoint, PackedSpqr, TensorEntry } from "../checkpoint.js";
import { isDecoderLinear } from "../int-group/quantize-checkpoint.js";
import { layerErrors, type LayerEnergyBackend, type LayerErrors } from "../int-group/layer-errors.js";
import { spqrEntry } from "./entry.js";
import { spqrQuantizationSummary } from "./hf-config.js";

export interface SpqrQuantizeCheckpointOptions {
  hessians: HessianSource;
  /** Quantizer options (formats/spqr/quantize.ts); bits/beta1/beta2 stay at the layout's 3/16/16. */
  quantizer?: Omit<SpqrQuantizeOptions, "bits" | "beta1" | "beta2" | "layerName">;
  /** Where the report's output error is computed (the GPU: kernels/linalg/energies-gpu.ts); the CPU by default. */
  energies?: LayerEnergyBackend;
  select?: (name: string) => boolean;
  onLayer?: (report: SpqrLayerReport) => void;
  /** Finished layers of an interrupted run are loaded from here, and new ones recorded (converters/io/journal.ts). */
  journal?: LayerJournal;
}

export interface SpqrLayerReport extends LayerErrors {
  name: string;
  outFeatures: number;
  inFeatures: number;
  outlierCount: number;
  outlierShare: number;
  /** The paper's bits per weight (statistics and 32 bits per outlier included). */
  bitsPerWeight: number;
  seconds: number;
  /** Loaded from the journal of an interrupted run (the figures are that run's). */
  resumed?: boolean;
}

/**
 * A view of `source` whose selected linears are SpQR entries, quantized when an exporter pulls
 * them; every exporter loads a layer once, so nothing is cached here.
 */
export function quantizeSpqrCheckpoint(source: Checkpoint, options: SpqrQuantizeCheckpointOptions): Checkpoint {
  const select = options.select ?? isDecoderLinear;
  const tensors = source.tensors.map((t) => (t.shape.length === 2 && t.packed === undefined && select(t.name) ? quantizedEntry(t, options) : t));
  if (!tensors.some((t) => t.packed !== undefined)) throw new UsageError("BAD_SOURCE", "no linear layers to quantize (expected 2-D *_proj.weight tensors under model.layers)", { file: source.location });
  return { ...source, tensors, quantization: spqrQuantizationSummary("lmpack") };
}

function quantizedEntry(entry: TensorEntry, options: SpqrQuantizeCheckpointOptions): TensorEntry {
  const [m, n] = entry.shape as [number, number];
  const packed: PackedSpqr = {
    representation: "spqr",
    params: SPQR_DEFAULTS,
    outFeatures: m,
    inFeatures: n,
    // Known once quantized; inspect of an unwritten view is not a use case.
    outlierCount: 0,
    storedBytes: 0,
    sourceLayout: "quantized",
    load: () => loadLayer(entry, m, n, options),
  };
  return spqrEntry(entry.name, entry.file, packed, { quantizer: "spqr" });
}

async function loadLayer(entry: TensorEntry, m: number, n: number, options: SpqrQuantizeCheckpointOptions): Promise<SpqrTensor> {
  const { value, resumed } = await journaled(options.journal, entry.name, () => quantizeLayer(entry, m, n, options));
  if (value.report !== undefined) options.onLayer?.(resumed ? { ...value.report, resumed } : value.report);
  return value.tensor;
}

/** The layer, and its report when someone listens (the report costs a dequantization). */
async function quantizeLayer(entry: TensorEntry, m: number, n: number, options: SpqrQuantizeCheckpointOptions): Promise<{ tensor: SpqrTensor; report: SpqrLayerReport | undefined }> {
  const started = performance.now();
  const bytes = convertFloatBytes(await entry.read(), entry.dtype as FloatDType, "F32");
  const weight = bytes.byteOffset % 4 === 0 ? new Float32Array(bytes.buffer, bytes.byteOffset, m * n) : new Float32Array(bytes.slice().buffer);
  const module = entry.name.replace(/\.weight$/, "");
  const hessian = await options.hessians.get(module, n);
  if (hessian === undefined) throw new UsageError("BAD_ARGUMENT", "SpQR needs a Hessian for every layer (--hessians <store> or --hessians embedding-proxy)", { tensor: entry.name });
  const result = quantizeSpqr(weight, m, n, hessian, { ...options.quantizer, layerName: module });
  if (options.onLayer === undefined) return { tensor: result.tensor, report: undefined };
  const halves = dequantizeSpqr(result.tensor);
  const deq = new Float32Array(convertFloatBytes(new Uint8Array(halves.buffer), "F16", "F32").buffer);
  const errors = layerErrors(weight, deq, m, n, hessian, options.energies);
  const outlierShare = result.outlierCount / (m * n);
  const bitsPerWeight = paperBitsPerWeight({ params: result.tensor.params, outFeatures: m, inFeatures: n, outlierCount: result.outlierCount });
  return { tensor: result.tensor, report: { name: entry.name, outFeatures: m, inFeatures: n, outlierCount: result.outlierCount, outlierShare, bitsPerWeight, seconds: (performance.now() - started) / 1000, ...errors } };
}
