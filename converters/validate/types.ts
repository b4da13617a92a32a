import { dtypeBytes, type DType } from "../../formats/dtype.js";
import type { TensorEntry } from "../checkpoint.js";
import type { ModelConfig } from "../hf/config.js";
import type { RandomAccessSource } from "../io/random-access.js";
import { DEFAULT_CHUNK_BYTES, readRange } from "../io/read-range.js";

/**
 * What a layout's structural pass hands to the numeric (--deep) pass: the stored arrays worth
 * scanning (by role), the tensors as checkpoint entries (packed ones dequantize on read), and
 * what the file declares about itself, so that claims can be checked against contents.
 */

/**
 * How the deep pass judges a stored float array:
 * - "scale": finite and nonzero (a zero scale flattens its group);
 * - "positive-scale": finite and > 0 (formats whose scale is max|w| / max code);
 * - "codebook", "norm", "weight": finite;
 * - "outlier-colvals": SpQR col_vals words, whose high halves are fp16 outlier values.
 */
export type ArrayRole = "scale" | "positive-scale" | "codebook" | "norm" | "weight" | "outlier-colvals";

export interface ScanArray {
  name: string;
  file: string;
  dtype: DType;
  /** Absolute offset of the first byte in `file`. */
  byteOffset: number;
  byteLength: number;
  role: ArrayRole;
  source: RandomAccessSource;
}

/** What the layout's own metadata says the weights are (for name and bits claims). */
export interface Declared {
  /** "gptq", "awq", "auto-round", "fp6_tc", "spqr", "vptq", "gguf", "lmpack", "onnx", "dense". */
  method: string;
  /** Bits per weight the metadata declares for the packed linears (undefined when dense or mixed). */
  bits?: number;
  /** VPTQ: vector length and codebook sizes of the first layer. */
  vptq?: { vectorLen: number; centroids: number; resCentroids: number };
  /** GGUF: the main ggml type name (general.file_type), e.g. "Q8_0". */
  ggmlType?: string;
}

export interface Validated {
  layout: string;
  /** Tensors that passed the structural checks, packed ones grouped (their data dequantizes). */
  entries: TensorEntry[];
  /** Tensors checked, when not `entries.length` (ONNX initializers). */
  checked?: number;
  arrays: ScanArray[];
  config?: ModelConfig | undefined;
  declared?: Declared;
  close(): Promise<void>;
}

/** Reads an array in chunks of whole elements (flat memory whatever its size). */
export function arrayChunks(array: ScanArray, maxChunkBytes = DEFAULT_CHUNK_BYTES): AsyncGenerator<Uint8Array> {
  return readRange(array.source, array.byteOffset, array.byteLength, dtypeBytes(array.dtype), maxChunkBytes);
}

/** Closes every source once, ignoring the ones already closed. */
export async function closeAll(sources: Iterable<RandomAccessSource>): Promise<void> {
  await Promise.all([...new Set(sources)].map((s) => s.close().catch(() => undefined)));
}
