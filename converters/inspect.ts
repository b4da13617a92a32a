import { DTYPES, type DType } from "../formats/dtype.js";
import { fpxBitsPerWeight } from "../formats/fpx/types.js";
import { paperBitsPerWeight } from "../formats/spqr/types.js";
import { indexBits, vptqBitsPerWeight } from "../formats/vptq/types.js";
import { bitsPerWeight as nominalBitsPerWeight } from "../formats/int-group/types.js";
import type { Checkpoint, PackedTensor, QuantizationSummary, TensorEntry } from "./checkpoint.js";
import type { ModelConfig } from "./hf/config.js";

export interface TensorSummary {
  name: string;
  representation: string;
  dtype: DType;
  shape: number[];
  parameters: number;
  bytes: number;
  /** Stored bits over parameters (packed tensors: every stored array counted). */
  bitsPerWeight: number;
  /** Packed tensors: the quantization of this tensor. */
  quant?: TensorQuantSummary;
  notes?: Record<string, unknown>;
}

export interface TensorQuantSummary {
  representation: string;
  bits: number;
  /** Input columns per group (= in_features for per-channel). */
  groupSize: number;
  sym: boolean;
  actOrder: boolean;
  scaleDtype: string;
  sourceLayout: string;
  /** FPx tensors: the float format ("e3m2"). */
  format?: string;
  /** SpQR tensors: the fraction of weights stored as fp16 outliers. */
  outlierShare?: number;
  /** VPTQ tensors: vector length, codebook sizes, and the bits per weight of indices and of codebooks + norm. */
  vectorLen?: number;
  centroids?: number;
  resCentroids?: number;
  indexBitsPerWeight?: number;
  codebookBitsPerWeight?: number;
  /**
   * Bits per weight by each method's paper: auto-round/GPTQ count code bits + a 16-bit scale per
   * group (+ a bits-wide zero when asymmetric); SpQR counts codes, 3-bit statistics, fp16
   * second-order statistics and 32 bits per outlier; VPTQ counts index bits plus codebooks and
   * norm spread over the layer (its tech report, §C.2). `bitsPerWeight` counts what the layout stores.
   */
  effectiveBitsPerWeight: number;
}

export interface InspectReport {
  source: string;
  layout: string;
  files: string[];
  config: ModelConfig | undefined;
  parameters: number;
  bytes: number;
  bitsPerWeight: number;
  quantization: (QuantizationSummary & { packedTensors: number; packedParameters: number; effectiveBitsPerWeight: number }) | undefined;
  /** Parameters per storage kind: the dtype of dense tensors, "int4", "e3m2"... of packed ones. */
  dtypes: Record<string, number>;
  embeddings: { tiedInConfig: boolean | undefined; embedTokensStored: boolean; lmHeadStored: boolean };
  sideFiles: string[];
  metadata: Record<string, string>;
  tensors: TensorSummary[];
}

/**
 * Everything `lmpack inspect` shows, computed from headers alone (no tensor data is read).
 * Bits per weight are storage bits over parameters; for dense tensors that is the dtype width,
 * packed formats will report their true cost including scales and codebooks.
 */
export function inspectCheckpoint(checkpoint: Checkpoint): InspectReport {
  const tensors = checkpoint.tensors.map(summariseTensor);
  const parameters = tensors.reduce((sum, t) => sum + t.parameters, 0);
  const bytes = tensors.reduce((sum, t) => sum + t.bytes, 0);
  const dtypes: Record<string, number> = {};
  for (const t of tensors) {
    const ggml = t.notes?.["ggmlType"];
    const kind = t.quant === undefined ? (typeof ggml === "string" ? ggml : t.dtype) : (t.quant.format ?? (t.quant.vectorLen !== undefined ? "vptq" : `${t.quant.outlierShare !== undefined ? "spqr" : "int"}${t.quant.bits}`));
    dtypes[kind] = (dtypes[kind] ?? 0) + t.parameters;
  }
  const names = new Set(tensors.map((t) => t.name));
  return {
    source: checkpoint.location,
    layout: checkpoint.layout,
    files: checkpoint.files,
    config: checkpoint.config,
    parameters,
    bytes,
    bitsPerWeight: parameters === 0 ? 0 : (bytes * 8) / parameters,
    quantization: quantizationOf(checkpoint.quantization, tensors),
    dtypes,
    embeddings: {
      tiedInConfig: checkpoint.config?.tiedEmbeddings,
      embedTokensStored: [...names].some((n) => n.endsWith("embed_tokens.weight")),
      lmHeadStored: names.has("lm_head.weight"),
    },
    sideFiles: [...checkpoint.sideFiles.keys()],
    metadata: checkpoint.metadata,
    tensors,
  };
}

function summariseTensor(t: TensorEntry): TensorSummary {
  // A GGUF tensor read as dense data is stored as ggml blocks (notes from converters/gguf/import.ts).
  const stored = t.notes?.["storedBytes"];
  const bytes = t.packed?.storedBytes ?? (typeof stored === "number" ? stored : t.byteLength);
  const summary: TensorSummary = {
    name: t.name,
    representation: t.representation,
    dtype: t.dtype,
    shape: t.shape,
    parameters: t.nElements,
    bytes,
    bitsPerWeight: t.nElements === 0 ? DTYPES[t.dtype].bits : (bytes * 8) / t.nElements,
    ...(t.notes === undefined ? {} : { notes: t.notes }),
  };
  if (t.packed !== undefined) summary.quant = quantSummary(t.packed);
  return summary;
}

function quantSummary(p: PackedTensor): TensorQuantSummary {
  if (p.representation === "vptq") {
    const bits = vptqBitsPerWeight(p.params, p.outFeatures, p.inFeatures);
    return { representation: p.representation, bits: (indexBits(p.params.numCentroids) + indexBits(p.params.numResCentroids)) / p.params.vectorLen, groupSize: p.params.groupSize, sym: false, actOrder: p.params.enablePerm, scaleDtype: p.dtype, sourceLayout: p.sourceLayout, vectorLen: p.params.vectorLen, centroids: p.params.numCentroids, resCentroids: p.params.numResCentroids, indexBitsPerWeight: bits.indexBits, codebookBitsPerWeight: bits.codebookBits, effectiveBitsPerWeight: bits.total };
  }
  if (p.representation === "spqr") {
    const outlierShare = p.outlierCount / (p.outFeatures * p.inFeatures);
    return { representation: p.representation, bits: p.params.bits, groupSize: p.params.beta2, sym: false, actOrder: false, scaleDtype: "F16", sourceLayout: p.sourceLayout, outlierShare, effectiveBitsPerWeight: paperBitsPerWeight({ ...p, outlierCount: p.outlierCount }) };
  }
  if (p.representation === "fpx") {
    // One fp16 scale per output row: a "group" is the whole input row.
    return { representation: p.representation, bits: p.format.nbits, groupSize: p.inFeatures, sym: true, actOrder: false, scaleDtype: "F16", sourceLayout: p.sourceLayout, format: p.format.name, effectiveBitsPerWeight: fpxBitsPerWeight(p) };
  }
  return {
    representation: p.representation,
    bits: p.params.bits,
    groupSize: p.params.groupSize,
    sym: p.params.sym,
    actOrder: p.actOrder,
    scaleDtype: p.params.scaleDtype,
    sourceLayout: p.sourceLayout,
    effectiveBitsPerWeight: nominalBitsPerWeight({ params: p.params, outFeatures: p.outFeatures, inFeatures: p.inFeatures, gIdx: undefined }),
  };
}

function quantizationOf(declared: QuantizationSummary | undefined, tensors: TensorSummary[]): InspectReport["quantization"] {
  const packed = tensors.filter((t) => t.quant !== undefined);
  if (packed.length === 0 && declared === undefined) return undefined;
  const first = packed[0]?.quant;
  // FPx tensors have one scale per row: "per-channel" (−1), like the HF summary says.
  const base = declared ?? { method: "lmpack", format: first?.format ?? first?.sourceLayout ?? "", bits: first?.bits ?? 0, groupSize: first?.format !== undefined ? -1 : (first?.groupSize ?? 0), sym: first?.sym ?? false, descAct: packed.some((t) => t.quant!.actOrder) };
  const packedParameters = packed.reduce((sum, t) => sum + t.parameters, 0);
  const effectiveBits = packed.reduce((sum, t) => sum + t.quant!.effectiveBitsPerWeight * t.parameters, 0);
  return { ...base, packedTensors: packed.length, packedParameters, effectiveBitsPerWeight: packedParameters === 0 ? 0 : effectiveBits / packedParameters };
}
