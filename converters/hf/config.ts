import { FormatError } from "../../formats/errors.js";

/**
 * The normalised model config: one spelling for what transformers 4 and 5 and the Llama,
 * Mistral and Qwen2 families spell differently (`rope_theta` at top level in v4,
 * under `rope_parameters` in v5; `torch_dtype` vs `dtype`; optional `head_dim`).
 */
export interface ModelConfig {
  architecture: string | undefined;
  modelType: string | undefined;
  hiddenSize: number;
  intermediateSize: number | undefined;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  maxPositionEmbeddings: number | undefined;
  ropeTheta: number;
  /** Where ropeTheta came from: "rope_parameters", "rope_theta", or "default". */
  ropeThetaSource: "rope_parameters" | "rope_theta" | "default";
  ropeScaling: Record<string, unknown> | undefined;
  rmsNormEps: number;
  tiedEmbeddings: boolean;
  attentionBias: boolean;
  bosTokenId: number | number[] | undefined;
  eosTokenId: number | number[] | undefined;
  /** Declared storage dtype (`dtype` or `torch_dtype`), as written. */
  dtype: string | undefined;
  /**
   * The attention window of sliding-window layers when the config turns them on (Mistral's
   * `sliding_window`; Qwen2's with `use_sliding_window`; any `layer_types` "sliding_attention"):
   * position i attends only to the last `slidingWindow` positions. Absent: full causal attention.
   */
  slidingWindow?: number;
}

/** transformers' default rope base for the Llama family. */
export const DEFAULT_ROPE_THETA = 10000;
export const DEFAULT_RMS_NORM_EPS = 1e-6;

/** Parses config.json text: it must be a JSON object (CONFIG_INVALID naming `file` otherwise). */
export function parseConfigJson(text: string, file: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (cause) {
    throw new FormatError("CONFIG_INVALID", `not valid JSON: ${(cause as Error).message}`, { file, cause });
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new FormatError("CONFIG_INVALID", "config.json is not a JSON object", { file });
  return parsed as Record<string, unknown>;
}

export function normaliseConfig(raw: Record<string, unknown>, file: string): ModelConfig {
  const read = new ConfigReader(raw, file);
  const hiddenSize = read.positiveInt("hidden_size", ["n_embd", "d_model", "dim"]);
  const numHeads = read.positiveInt("num_attention_heads", ["n_head", "n_heads"]);
  const numKvHeads = read.optionalPositiveInt("num_key_value_heads") ?? numHeads;
  if (numHeads % numKvHeads !== 0) {
    throw new FormatError("CONFIG_INVALID", "num_attention_heads must be a multiple of num_key_value_heads", { file, expected: `a divisor of ${numHeads}`, actual: numKvHeads });
  }
  const headDim = read.optionalPositiveInt("head_dim") ?? hiddenSize / numHeads;
  if (!Number.isInteger(headDim)) {
    throw new FormatError("CONFIG_INVALID", "hidden_size is not a multiple of num_attention_heads and head_dim is absent", { file, expected: `a multiple of ${numHeads}`, actual: hiddenSize });
  }
  const rope = ropeTheta(raw, file);
  const architectures = raw["architectures"];
  return {
    architecture: Array.isArray(architectures) && typeof architectures[0] === "string" ? architectures[0] : undefined,
    modelType: typeof raw["model_type"] === "string" ? raw["model_type"] : undefined,
    hiddenSize,
    intermediateSize: read.optionalPositiveInt("intermediate_size"),
    numLayers: read.positiveInt("num_hidden_layers", ["n_layer", "n_layers"]),
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: read.positiveInt("vocab_size"),
    maxPositionEmbeddings: read.optionalPositiveInt("max_position_embeddings"),
    ropeTheta: rope.theta,
    ropeThetaSource: rope.source,
    ropeScaling: rope.scaling,
    rmsNormEps: read.optionalPositiveNumber("rms_norm_eps") ?? DEFAULT_RMS_NORM_EPS,
    // The Llama/Mistral/Qwen2 configs default to untied heads when the key is absent.
    tiedEmbeddings: read.optionalBoolean("tie_word_embeddings") ?? false,
    attentionBias: read.optionalBoolean("attention_bias") ?? raw["model_type"] === "qwen2",
    bosTokenId: tokenIds(raw["bos_token_id"]),
    eosTokenId: tokenIds(raw["eos_token_id"]),
    dtype: typeof raw["dtype"] === "string" ? raw["dtype"] : typeof raw["torch_dtype"] === "string" ? raw["torch_dtype"] : undefined,
    ...slidingWindow(raw, read),
  };
}

/** ModelConfig.slidingWindow: set only where the family's own switch turns the window on. */
function slidingWindow(raw: Record<string, unknown>, read: ConfigReader): { slidingWindow?: number } {
  const layerTypes = raw["layer_types"];
  const typed = Array.isArray(layerTypes) && layerTypes.includes("sliding_attention");
  // Qwen2 carries a sliding_window it ignores unless use_sliding_window is true.
  const switchedOff = raw["use_sliding_window"] === false || (raw["model_type"] === "qwen2" && raw["use_sliding_window"] !== true);
  if (switchedOff && !typed) return {};
  const window = read.optionalPositiveInt("sliding_window");
  return window === undefined ? {} : { slidingWindow: window };
}

function ropeTheta(raw: Record<string, unknown>, file: string): { theta: number; source: ModelConfig["ropeThetaSource"]; scaling: Record<string, unknown> | undefined } {
  const params = raw["rope_parameters"];
  if (isRecord(params)) {
    // transformers 5: either one parameter set, or one per attention type (e.g. Gemma 3).
    const set = typeof params["rope_theta"] === "number" ? params : [params["full_attention"], ...Object.values(params)].find(isRecord);
    const theta = set?.["rope_theta"];
    if (typeof theta === "number") {
      if (!(theta > 0)) throw new FormatError("CONFIG_INVALID", "rope_parameters.rope_theta must be positive", { file, actual: theta });
      const ropeType = set?.["rope_type"];
      return { theta, source: "rope_parameters", scaling: ropeType !== undefined && ropeType !== "default" ? set : undefined };
    }
  }
  const theta = raw["rope_theta"];
  const scaling = isRecord(raw["rope_scaling"]) ? raw["rope_scaling"] : undefined;
  if (theta === undefined) return { theta: DEFAULT_ROPE_THETA, source: "default", scaling };
  if (typeof theta !== "number" || !(theta > 0)) throw new FormatError("CONFIG_INVALID", "rope_theta must be a positive number", { file, actual: theta });
  return { theta, source: "rope_theta", scaling };
}

function tokenIds(value: unknown): number | number[] | undefined {
  if (typeof value === "number" && Number.isInteger(value)) return value;
  if (Array.isArray(value) && value.every((v) => typeof v === "number" && Number.isInteger(v))) return value as number[];
  return undefined;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

class ConfigReader {
  constructor(private readonly raw: Record<string, unknown>, private readonly file: string) {}

  positiveInt(key: string, aliases: string[] = []): number {
    for (const k of [key, ...aliases]) {
      const value = this.optionalPositiveInt(k);
      if (value !== undefined) return value;
    }
    throw new FormatError("CONFIG_INVALID", `missing "${key}"`, { file: this.file, expected: "a positive integer", actual: "absent" });
  }

  optionalPositiveInt(key: string): number | undefined {
    const value = this.raw[key];
    if (value === undefined || value === null) return undefined;
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value <= 0) {
      throw new FormatError("CONFIG_INVALID", `"${key}" must be a positive integer`, { file: this.file, actual: value });
    }
    return value;
  }

  optionalPositiveNumber(key: string): number | undefined {
    const value = this.raw[key];
    if (value === undefined || value === null) return undefined;
    if (typeof value !== "number" || !(value > 0) || !Number.isFinite(value)) {
      throw new FormatError("CONFIG_INVALID", `"${key}" must be a positive number`, { file: this.file, actual: value });
    }
    return value;
  }

  optionalBoolean(key: string): boolean | undefined {
    const value = this.raw[key];
    if (value === undefined || value === null) return undefined;
    if (typeof value !== "boolean") throw new FormatError("CONFIG_INVALID", `"${key}" must be true or false`, { file: this.file, actual: value });
    return value;
  }
}
