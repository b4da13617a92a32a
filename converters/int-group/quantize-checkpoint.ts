import { convertFloatBytes } from "../../formats/dense/convert.js";
import { UsageError } from "../../formats/errors.js";
import { quantizeGptq } from "../../formats/int-group/quantizers/gptq.js";
import { quantizeRtn } from "../../formats/int-group/quantizers/rtn.js";
import { quantizeSignRound, type SignRoundOptions } from "../../formats/int-group/quantizers/signround.js";
import { dequantize } from "../../formats/int-group/reference.js";
import type { IntBits, IntGroupTensor, ScaleDType } from "../../formats/int-group/types.js";
import type { Hessian, HessianSource } from "../../formats/second-order/hessian.js";
import type { DeferredUpdates } from "../../formats/second-order/gptq-loop.js";
import type { GptqResidentLoop } from "../../formats/int-group/quantizers/gptq-resident.js";
import type { PrepareOptions } from "../../formats/second-order/prepare.js";
import type { Checkpoint, PackedIntGroup, TensorEntry } from "../checkpoint.js";
import { journaled, type LayerJournal } from "../io/journal.js";
import { intGroupEntry } from "./entry.js";
import { layerErrors, type LayerEnergyBackend, type LayerErrors } from "./layer-errors.js";

export type IntMethod = "rtn" | "gptq" | "signround";

export interface QuantizeCheckpointOptions {
  method: IntMethod;
  bits: IntBits;
  /** Input columns per group; -1 = per-channel. */
  groupSize: number;
  sym: boolean;
  scaleDtype?: ScaleDType;
  hessians?: HessianSource;
  /** GPTQ */
  actOrder?: boolean;
  percDamp?: number;
  /** GPTQ: where the loop's deferred updates run (the GPU); host memory by default. */
  deferred?: DeferredUpdates;
  /** GPTQ: the whole column loop on the GPU (kernels/second-order/int-columns-gpu.ts), in place of the host loop with `deferred`. */
  residentLoop?: GptqResidentLoop;
  /** GPTQ: U = chol(H⁻¹)ᵀ on the GPU (kernels/linalg/cholesky-gpu.ts); the CPU's by default. */
  factorize?: PrepareOptions["factorize"];
  /** SignRound */
  iters?: number;
  /** SignRound: where the tuning iterations run (kernels/signround on the GPU); the CPU by default. */
  signroundBackend?: SignRoundOptions["backend"];
  /**
   * Per-linear results computed elsewhere, by module name ("model.layers.0.self_attn.q_proj"):
   * block-wise SignRound tunes a decoder block's seven linears together, before export. A
   * selected linear found here is packed from its tensor (checked against the entry's shape and
   * params) instead of being quantized alone; the others are quantized as usual.
   */
  precomputed?: ReadonlyMap<string, { tensor: IntGroupTensor }>;
  /** Where the report's output error is computed (the GPU: kernels/linalg/energies-gpu.ts); the CPU by default. */
  energies?: LayerEnergyBackend;
  /** Which linears to quantize (default: every 2-D `*_proj.weight` of the decoder layers). */
  select?: (name: string) => boolean;
  /** Called as each layer finishes (quantization happens as exporters pull layers, one at a time). */
  onLayer?: (report: LayerQuantReport) => void;
  /** Finished layers of an interrupted run are loaded from here, and new ones recorded (converters/io/journal.ts). */
  journal?: LayerJournal;
}

export interface LayerQuantReport extends LayerErrors {
  name: string;
  method: IntMethod;
  outFeatures: number;
  inFeatures: number;
  seconds: number;
  hessian: boolean;
  /** Loaded from the journal of an interrupted run (the figures are that run's). */
  resumed?: boolean;
}

/** Linears lmpack quantizes by default: the decoder layers' projections (not embeddings, norms or lm_head). */
export function isDecoderLinear(name: string): boolean {
  return /\.layers\.\d+\..*_proj\.weight$/.test(name);
}

/**
 * A view of `source` whose selected linears are int-group entries, quantized lazily: each layer
 * is read, quantized and handed to the exporter when the exporter asks for it, so memory holds
 * one layer at a time whatever the model's size.
 */
export function quantizeCheckpoint(source: Checkpoint, options: QuantizeCheckpointOptions): Checkpoint {
  const select = options.select ?? isDecoderLinear;
  const tensors = source.tensors.map((t) => (t.shape.length === 2 && t.packed === undefined && select(t.name) ? quantizedEntry(t, options) : t));
  if (!tensors.some((t) => t.packed !== undefined)) throw new UsageError("BAD_SOURCE", "no linear layers to quantize (expected 2-D *_proj.weight tensors under model.layers)", { file: source.location });
  return { ...source, tensors, quantization: { method: "lmpack", format: options.method, bits: options.bits, groupSize: options.groupSize, sym: options.sym, descAct: options.actOrder ?? false } };
}

function quantizedEntry(entry: TensorEntry, options: QuantizeCheckpointOptions): TensorEntry {
  const [N, K] = entry.shape as [number, number];
  const groupSize = options.groupSize === -1 || options.groupSize > K ? K : options.groupSize;
  const params = { bits: options.bits, groupSize, sym: options.sym, scaleDtype: options.scaleDtype ?? ("F16" as const) };
  let result: Promise<IntGroupTensor> | undefined;
  const packed: PackedIntGroup = {
    representation: "int-group",
    params,
    outFeatures: N,
    inFeatures: K,
    actOrder: options.method === "gptq" && (options.actOrder ?? false),
    storedBytes: 0,
    sourceLayout: options.method,
    load: () => (result ??= loadLayer(entry, N, K, params, options)),
  };
  const withoutSuffix = entry.name.replace(/\.weight$/, "");
  return intGroupEntry(entry.name, entry.file, packed, { quantizer: options.method, layer: withoutSuffix });
}

async function loadLayer(entry: TensorEntry, N: number, K: number, params: IntGroupTensor["params"], options: QuantizeCheckpointOptions): Promise<IntGroupTensor> {
  const { value, resumed } = await journaled(options.journal, entry.name, () => quantizeLayer(entry, N, K, params, options));
  options.onLayer?.(resumed ? { ...value.report, resumed } : value.report);
  return value.tensor;
}

async function quantizeLayer(entry: TensorEntry, N: number, K: number, params: IntGroupTensor["params"], options: QuantizeCheckpointOptions): Promise<{ tensor: IntGroupTensor; report: LayerQuantReport }> {
  const started = performance.now();
  const bytes = convertFloatBytes(await entry.read(), entry.dtype as "F32" | "F16" | "BF16" | "F64", "F32");
  const weight = new Float32Array(bytes.buffer, bytes.byteOffset, N * K);
  const module = entry.name.replace(/\.weight$/, "");
  const hessian: Hessian | undefined = await options.hessians?.get(module, K);
  let tensor: IntGroupTensor;
  const given = options.precomputed?.get(module);
  if (given !== undefined) {
    tensor = checkedPrecomputed(given.tensor, entry.name, N, K, params);
  } else if (options.method === "rtn") {
    tensor = quantizeRtn(weight, N, K, params);
  } else if (options.method === "gptq") {
    if (hessian === undefined) throw new UsageError("BAD_ARGUMENT", "GPTQ needs a Hessian for every layer (--hessians <store> or --hessians embedding-proxy)", { tensor: entry.name });
    tensor = quantizeGptq(weight, N, K, hessian, { params, actOrder: options.actOrder ?? false, percDamp: options.percDamp ?? 0.01, layerName: module, ...(options.deferred === undefined ? {} : { deferred: options.deferred }), ...(options.residentLoop === undefined ? {} : { residentLoop: options.residentLoop }), ...(options.factorize === undefined ? {} : { factorize: options.factorize }) }).tensor;
  } else {
    tensor = quantizeSignRound(weight, N, K, params, { ...(hessian === undefined ? {} : { hessian }), ...(options.iters === undefined ? {} : { iters: options.iters }), ...(options.signroundBackend === undefined ? {} : { backend: options.signroundBackend }) }).tensor;
  }
  const errors = layerErrors(weight, dequantize(tensor, { precision: "f32" }), N, K, hessian, options.energies);
  return { tensor, report: { name: entry.name, method: options.method, outFeatures: N, inFeatures: K, seconds: (performance.now() - started) / 1000, hessian: hessian !== undefined, ...errors } };
}

/** A precomputed tensor must be what this entry would have produced: same shape, same params, no g_idx. */
function checkedPrecomputed(tensor: IntGroupTensor, name: string, N: number, K: number, params: IntGroupTensor["params"]): IntGroupTensor {
  const expected = `${N}x${K} ${params.bits}-bit g${params.groupSize} ${params.sym ? "sym" : "asym"} ${params.scaleDtype}`;
  const p = tensor.params;
  const actual = `${tensor.outFeatures}x${tensor.inFeatures} ${p.bits}-bit g${p.groupSize} ${p.sym ? "sym" : "asym"} ${p.scaleDtype}${tensor.gIdx === undefined ? "" : " with g_idx"}`;
  if (actual !== expected) throw new UsageError("BAD_ARGUMENT", "a precomputed layer does not match the checkpoint's tensor or the quantization options", { tensor: name, expected, actual });
  return tensor;
}
