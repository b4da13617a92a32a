import type { TensorEntry } from "../checkpoint.js";
import type { ModelConfig } from "../hf/config.js";
import type { Findings } from "./findings.js";

/**
 * config ↔ tensors, both ways, for the Llama family (Llama, Mistral, Qwen2: the decoders
 * lmpack's forward runs, model/llama-weights.ts): every tensor the config calls for is there
 * with the shape the config implies, and every stored tensor is one the config accounts for.
 * Packed linears are checked as their `<module>.weight` entry, whose shape is the dense one.
 */

const LLAMA_FAMILY = /^(llama|mistral|qwen2)$/;

interface Expected {
  shape: number[];
  /** Absent is fine (biases the config does not require, tied heads, rotary buffers). */
  optional: boolean;
}

/** The tensor table of a Llama-family decoder with this config. */
export function llamaTensorTable(config: ModelConfig): Map<string, Expected> {
  const table = new Map<string, Expected>();
  const put = (name: string, shape: number[], optional = false) => table.set(name, { shape, optional });
  const H = config.hiddenSize;
  const I = config.intermediateSize ?? 0;
  const qOut = config.numHeads * config.headDim;
  const kvOut = config.numKvHeads * config.headDim;
  const linear = (name: string, out: number, inFeatures: number, bias: "required" | "optional" | "none") => {
    put(`${name}.weight`, [out, inFeatures]);
    if (bias !== "none") put(`${name}.bias`, [out], bias === "optional");
  };
  // Tied checkpoints may store the matrix under either name (tinystories-656K keeps only lm_head).
  put("model.embed_tokens.weight", [config.vocabSize, H], config.tiedEmbeddings);
  put("lm_head.weight", [config.vocabSize, H], config.tiedEmbeddings);
  put("model.norm.weight", [H]);
  const qkvBias = config.attentionBias ? "required" : "optional";
  for (let i = 0; i < config.numLayers; i++) {
    const p = `model.layers.${i}`;
    put(`${p}.input_layernorm.weight`, [H]);
    put(`${p}.post_attention_layernorm.weight`, [H]);
    linear(`${p}.self_attn.q_proj`, qOut, H, qkvBias);
    linear(`${p}.self_attn.k_proj`, kvOut, H, qkvBias);
    linear(`${p}.self_attn.v_proj`, kvOut, H, qkvBias);
    linear(`${p}.self_attn.o_proj`, H, qOut, "optional");
    linear(`${p}.mlp.gate_proj`, I, H, "none");
    linear(`${p}.mlp.up_proj`, I, H, "none");
    linear(`${p}.mlp.down_proj`, H, I, "none");
    // Old transformers saved the rotary buffer; it is recomputed from rope_theta on load.
    put(`${p}.self_attn.rotary_emb.inv_freq`, [config.headDim / 2], true);
  }
  return table;
}

export interface ConfigCheckOptions {
  /** Where the config came from (config.json, the container, the GGUF file), for findings. */
  configFile: string;
  /** Names (or `<module>.` prefixes) already reported by a structural check: not reported again. */
  excused?: (name: string) => boolean;
}

/** Adds a finding per missing, misshapen or unaccounted tensor; returns false when the family is not checked. */
export function checkConfigTensors(config: ModelConfig, entries: readonly TensorEntry[], findings: Findings, options: ConfigCheckOptions): boolean {
  const family = (config.modelType ?? "").toLowerCase();
  if (!LLAMA_FAMILY.test(family) && !/^(Llama|Mistral|Qwen2)ForCausalLM$/.test(config.architecture ?? "")) {
    findings.add("LAYOUT_UNKNOWN", `config ↔ tensors not checked: model type "${config.modelType ?? "?"}" is not a Llama-family decoder`, { file: options.configFile }, "warning");
    return false;
  }
  if (config.intermediateSize === undefined) {
    findings.add("CONFIG_INVALID", "intermediate_size is missing, so the MLP shapes cannot be checked", { file: options.configFile, expected: "a positive integer", actual: "absent" });
  }
  const excused = options.excused ?? (() => false);
  const table = llamaTensorTable(config);
  const stored = new Map(entries.map((e) => [e.name, e]));
  for (const [name, want] of table) {
    const entry = stored.get(name);
    if (entry === undefined) {
      if (!want.optional && !excused(name)) findings.add("TENSOR_MISSING", "config.json calls for this tensor, and no file stores it", { file: options.configFile, tensor: name, expected: `[${want.shape.join(", ")}]` });
      continue;
    }
    if (config.intermediateSize === undefined && /\.mlp\./.test(name)) continue;
    if (entry.shape.join() !== want.shape.join()) {
      findings.add("CONFIG_SHAPE_MISMATCH", "shape differs from the one config.json implies", { file: entry.file, tensor: name, byteOffset: entry.byteOffset, expected: `[${want.shape.join(", ")}]`, actual: `[${entry.shape.join(", ")}]` });
    }
  }
  if (config.tiedEmbeddings && !stored.has("model.embed_tokens.weight") && !stored.has("lm_head.weight") && !excused("model.embed_tokens.weight")) {
    findings.add("TENSOR_MISSING", "tied embeddings, but neither model.embed_tokens.weight nor lm_head.weight is stored", { file: options.configFile, tensor: "model.embed_tokens.weight" });
  }
  for (const entry of entries) {
    if (table.has(entry.name) || excused(entry.name)) continue;
    const layer = /^model\.layers\.(\d+)\./.exec(entry.name);
    const why = layer !== null && Number(layer[1]) >= config.numLayers ? `layer ${layer[1]} is past num_hidden_layers (${config.numLayers})` : "config.json does not account for this tensor";
    findings.add("TENSOR_UNEXPECTED", why, { file: entry.file, tensor: entry.name, byteOffset: entry.byteOffset });
  }
  return true;
}
