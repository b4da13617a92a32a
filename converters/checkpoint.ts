import type { DType } from "../formats/dtype.js";
import type { FpxFormat } from "../formats/fpx/format.js";
import type { CodesFrom, FpxTensor } from "../formats/fpx/types.js";
import type { SpqrParams, SpqrTensor } from "../formats/spqr/types.js";
import type { VptqFloat, VptqParams, VptqTensor } from "../formats/vptq/types.js";
import type { IntGroupParams, IntGroupTensor } from "../formats/int-group/types.js";
import type { ModelConfig } from "./hf/config.js";
import type { BufferRing } from "./io/buffer-ring.js";

/**
 * The checkpoint model: what every importer produces and every exporter consumes.
 *
 * A checkpoint lists its tensors up front (names, dtypes, shapes, sizes: all from headers),
 * while tensor data stays on disk until a consumer asks for it, chunk by chunk. A conversion
 * therefore holds at most one chunk in memory, whatever the model's size.
 */

/** How a tensor is stored. Packed formats add their own kinds as they land. */
export type TensorRepresentation = "dense" | "int-group" | "fpx" | "spqr" | "vptq";

/**
 * The quantized form of a packed tensor, loaded on demand. Exporters that understand the
 * representation carry it over (a repack moves integers); the others see the entry's dense,
 * dequantized data through `read()` / `readChunks()`.
 */
export interface PackedIntGroup {
  representation: "int-group";
  params: IntGroupParams;
  outFeatures: number;
  inFeatures: number;
  /** Whether g_idx is non-trivial (act-order / desc_act). */
  actOrder: boolean;
  /** Bytes the packed form occupies in its source (codes, scales, zeros, g_idx). */
  storedBytes: number;
  /** Layout it was read from: "gptq-v1", "gptq-v2", "awq", "lmpack". */
  sourceLayout: string;
  load(): Promise<IntGroupTensor>;
}

/**
 * An FPx (FP6 e3m2, FP5 e2m2, ...) linear weight in FP6-LLM's tensor-core layout with per-row
 * fp16 scales; the entry's data is the f32 dequantization (exact: see formats/fpx/reference.ts).
 */
export interface PackedFpx {
  representation: "fpx";
  format: FpxFormat;
  outFeatures: number;
  inFeatures: number;
  /** Bytes the packed form occupies (codes and scales). */
  storedBytes: number;
  /** Layout it was read from or how it was made: "hf-fp6", "lmpack", "quantized". */
  sourceLayout: string;
  /** How the codes were rounded, when known (quantized here, or recorded in a container). */
  codesFrom?: CodesFrom;
  load(): Promise<FpxTensor>;
}

/**
 * A SpQR linear: 3-bit codes with bi-level statistics and fp16 outliers (formats/spqr); the
 * entry's data is the F16 dequantization in original column order.
 */
export interface PackedSpqr {
  representation: "spqr";
  params: SpqrParams;
  outFeatures: number;
  inFeatures: number;
  /** Number of fp16 outliers (from headers: the col_vals count, padding excluded when known). */
  outlierCount: number;
  storedBytes: number;
  /** "hf-spqr", "lmpack", "quantized". */
  sourceLayout: string;
  load(): Promise<SpqrTensor>;
}

/** A VPTQ linear (formats/vptq): vector-quantized codes; dense data in the codebooks' dtype. */
export interface PackedVptq {
  representation: "vptq";
  params: VptqParams;
  outFeatures: number;
  inFeatures: number;
  dtype: VptqFloat;
  storedBytes: number;
  /** "hf-vptq", "lmpack", "quantized". */
  sourceLayout: string;
  load(): Promise<VptqTensor>;
}

export type PackedTensor = PackedIntGroup | PackedFpx | PackedSpqr | PackedVptq;

/** What a checkpoint-level quantization config says, normalised (for inspect and exporters). */
export interface QuantizationSummary {
  /** `quant_method` as written: "gptq", "auto-round", "awq", or "lmpack". */
  method: string;
  /** checkpoint_format / packing_format / AWQ version. */
  format: string;
  bits: number;
  groupSize: number;
  sym: boolean;
  descAct: boolean;
}

export interface TensorEntry {
  name: string;
  representation: TensorRepresentation;
  dtype: DType;
  shape: number[];
  nElements: number;
  byteLength: number;
  /** File that holds the data, for messages. */
  file: string;
  /** Absolute byte offset of the data in `file`, when the layout has one (for messages). */
  byteOffset?: number;
  /**
   * Packed tensors only: the quantized form. `dtype`, `byteLength` and the data then describe
   * the dequantized weight (in the dtype the format's loaders compute in, F16 for GPTQ).
   */
  packed?: PackedTensor;
  /** Free-form provenance and statistics (stored msgpack-encoded in .lmpack containers). */
  notes?: Record<string, unknown>;
  /** The whole tensor (memory: one tensor). */
  read(): Promise<Uint8Array>;
  /**
   * The data in chunks of whole elements, at most `maxChunkBytes` each. With `ring`, chunks are
   * read into the ring's buffers: each is then valid only until the ring hands its buffer out again.
   */
  readChunks(maxChunkBytes?: number, ring?: BufferRing): AsyncIterable<Uint8Array>;
}

/** Small files that travel with a model (tokenizer, generation config...), keyed by file name. */
export type SideFiles = Map<string, Uint8Array>;

export interface Checkpoint {
  /** Detected layout: "hf-safetensors", "safetensors", "lmpack". */
  layout: string;
  /** Path (or Hub id) it was opened from. */
  location: string;
  /** Data files behind it (one for single-file layouts, every shard for sharded ones). */
  files: string[];
  /** Normalised config, when the source has a config.json. */
  config: ModelConfig | undefined;
  /** config.json as parsed. */
  rawConfig: Record<string, unknown> | undefined;
  /** config.json's text exactly as read, so exports write it back byte for byte. */
  rawConfigText: string | undefined;
  sideFiles: SideFiles;
  /** safetensors `__metadata__` and similar free-form string metadata. */
  metadata: Record<string, string>;
  /** The quantization the source declares (`quantization_config`), when lmpack reads it. */
  quantization?: QuantizationSummary;
  /** Every tensor, in storage order (reading in this order keeps disk access sequential). */
  tensors: readonly TensorEntry[];
  close(): Promise<void>;
}

/** Async iteration over a checkpoint's tensors in storage order. */
export async function* iterateTensors(checkpoint: Checkpoint): AsyncGenerator<TensorEntry> {
  for (const entry of checkpoint.tensors) yield entry;
}

/** Names of side files lmpack carries along (read from HF directories, written back on export). */
export const SIDE_FILE_NAMES = [
  "generation_config.json",
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "added_tokens.json",
  "tokenizer.model",
  "vocab.json",
  "merges.txt",
  "chat_template.jinja",
  "chat_template.json",
] as const;

/** A side file larger than this is refused: the largest real tokenizer.json files are ~30 MB. */
export const MAX_SIDE_FILE_BYTES = 256 * 1024 * 1024;
/** config.json cap: real ones are a few KB; this bounds what a hostile one can make us parse. */
export const MAX_CONFIG_BYTES = 16 * 1024 * 1024;
