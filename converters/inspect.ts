import { DTYPES, type DType } from "../formats/dtype.js";
import type { Checkpoint } from "./checkpoint.js";
import type { ModelConfig } from "./hf/config.js";

export interface TensorSummary {
  name: string;
  representation: string;
  dtype: DType;
  shape: number[];
  parameters: number;
  bytes: number;
  bitsPerWeight: number;
  notes?: Record<string, unknown>;
}

export interface InspectReport {
  source: string;
  layout: string;
  files: string[];
  config: ModelConfig | undefined;
  parameters: number;
  bytes: number;
  bitsPerWeight: number;
  /** Parameters per dtype. */
  dtypes: Partial<Record<DType, number>>;
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
  const tensors = checkpoint.tensors.map((t): TensorSummary => ({
    name: t.name,
    representation: t.representation,
    dtype: t.dtype,
    shape: t.shape,
    parameters: t.nElements,
    bytes: t.byteLength,
    bitsPerWeight: t.nElements === 0 ? DTYPES[t.dtype].bits : (t.byteLength * 8) / t.nElements,
    ...(t.notes === undefined ? {} : { notes: t.notes }),
  }));
  const parameters = tensors.reduce((sum, t) => sum + t.parameters, 0);
  const bytes = tensors.reduce((sum, t) => sum + t.bytes, 0);
  const dtypes: Partial<Record<DType, number>> = {};
  for (const t of tensors) dtypes[t.dtype] = (dtypes[t.dtype] ?? 0) + t.parameters;
  const names = new Set(tensors.map((t) => t.name));
  return {
    source: checkpoint.location,
    layout: checkpoint.layout,
    files: checkpoint.files,
    config: checkpoint.config,
    parameters,
    bytes,
    bitsPerWeight: parameters === 0 ? 0 : (bytes * 8) / parameters,
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
