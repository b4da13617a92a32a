import type { DType } from "../formats/dtype.js";
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
export type TensorRepresentation = "dense";

export interface TensorEntry {
  name: string;
  representation: TensorRepresentation;
  dtype: DType;
  shape: number[];
  nElements: number;
  byteLength: number;
  /** File that holds the data, for messages. */
  file: string;
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
