import type { ModelConfig } from "../hf/config.js";
import { ATTENTION_MASK, INPUT_IDS, LOGITS } from "./decoder-graph.js";

/**
 * `genai_config.json` as onnxruntime-genai's model builder writes it (`make_genai_config`,
 * builders/base.py @ a0c04eb1; gguf-onnx.md §3.4), field for field, for the CPU provider (no
 * provider options). Checked against published genai folders (Qwen2.5 and Phi-3 exports): same
 * keys, same `%d` name patterns. `past_present_share_buffer` is true because the graph uses
 * GroupQueryAttention, which accepts past and present sharing one max_length buffer.
 */

export interface GenaiConfig {
  model: {
    bos_token_id?: number;
    context_length: number;
    decoder: {
      session_options: { log_id: string; provider_options: unknown[] };
      filename: string;
      head_size: number;
      hidden_size: number;
      inputs: Record<string, string>;
      outputs: Record<string, string>;
      num_attention_heads: number;
      num_hidden_layers: number;
      num_key_value_heads: number;
    };
    eos_token_id?: number | number[];
    pad_token_id?: number;
    type: string;
    vocab_size: number;
  };
  search: Record<string, number | boolean>;
}

/** Model types onnxruntime-genai knows by these names; any other Llama-family model runs as "llama". */
const GENAI_MODEL_TYPES: readonly string[] = ["llama", "mistral", "qwen2"];

export interface GenaiConfigSource {
  config: ModelConfig;
  /** config.json as parsed (pad_token_id is not in the normalised config). */
  rawConfig: Record<string, unknown> | undefined;
  /** generation_config.json as parsed, when the checkpoint has one: fills ids config.json lacks. */
  generationConfig: Record<string, unknown> | undefined;
  contextLength: number;
  filename: string;
}

export function genaiConfig({ config, rawConfig, generationConfig, contextLength, filename }: GenaiConfigSource): GenaiConfig {
  const id = (key: string): number | number[] | undefined => tokenIds(rawConfig?.[key]) ?? tokenIds(generationConfig?.[key]);
  const eos = config.eosTokenId ?? id("eos_token_id");
  const bos = first(config.bosTokenId ?? id("bos_token_id"));
  const pad = first(id("pad_token_id")) ?? first(eos);
  return {
    model: {
      ...(bos === undefined ? {} : { bos_token_id: bos }),
      context_length: contextLength,
      decoder: {
        session_options: { log_id: "onnxruntime-genai", provider_options: [] },
        filename,
        head_size: config.headDim,
        hidden_size: config.hiddenSize,
        inputs: { input_ids: INPUT_IDS, attention_mask: ATTENTION_MASK, past_key_names: "past_key_values.%d.key", past_value_names: "past_key_values.%d.value" },
        outputs: { logits: LOGITS, present_key_names: "present.%d.key", present_value_names: "present.%d.value" },
        num_attention_heads: config.numHeads,
        num_hidden_layers: config.numLayers,
        num_key_value_heads: config.numKvHeads,
      },
      ...(eos === undefined ? {} : { eos_token_id: eos }),
      ...(pad === undefined ? {} : { pad_token_id: pad }),
      type: GENAI_MODEL_TYPES.includes(config.modelType ?? "") ? config.modelType! : "llama",
      vocab_size: config.vocabSize,
    },
    search: {
      diversity_penalty: 0.0,
      do_sample: false,
      early_stopping: true,
      length_penalty: 1.0,
      max_length: contextLength,
      min_length: 0,
      no_repeat_ngram_size: 0,
      num_beams: 1,
      num_return_sequences: 1,
      past_present_share_buffer: true,
      repetition_penalty: 1.0,
      temperature: 1.0,
      top_k: 50,
      top_p: 1.0,
    },
  };
}

function tokenIds(value: unknown): number | number[] | undefined {
  if (typeof value === "number" && Number.isInteger(value) && value >= 0) return value;
  if (Array.isArray(value) && value.length > 0 && value.every((v) => typeof v === "number" && Number.isInteger(v) && v >= 0)) return value as number[];
  return undefined;
}

function first(ids: number | number[] | undefined): number | undefined {
  return Array.isArray(ids) ? ids[0] : ids;
}
