import { FormatError } from "../../formats/errors.js";
import type { ModelConfig } from "../hf/config.js";
import { GgufType, type GgufValue } from "./layout.js";
import type { GgufTokenizer } from "./tokenizer-meta.js";

/**
 * The metadata of a llama-architecture GGUF, key by key in the order llama.cpp's
 * convert_hf_to_gguf.py writes them (general.*, llama.* hyper-parameters, file type,
 * tokenizer.*, quantization version), so a dense F16/Q8_0 export of a model converted by both
 * tools is byte-identical (../shared/checkpoints/gguf/README.md). Keys and types:
 * ../shared/ref/gguf-onnx.md §1.4 and §1.6.
 */

export interface GgufNaming {
  /** general.name; default: the model folder's name. */
  name: string;
  basename?: string;
  finetune?: string;
  sizeLabel?: string;
}

/** gguf-py's LlamaFileType (general.file_type) for a file whose 2-D weights are mostly `type`. */
const FILE_TYPES: Record<string, number> = {
  F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q8_0: 7, Q5_0: 8, Q5_1: 9, Q2_K: 10, Q3_K: 12, Q4_K: 15, Q5_K: 17, Q6_K: 18,
  IQ2_XXS: 19, IQ2_XS: 20, IQ3_XXS: 23, IQ1_S: 24, IQ4_NL: 25, IQ3_S: 26, IQ2_S: 28, IQ4_XS: 30, IQ1_M: 31, BF16: 32, TQ1_0: 36, TQ2_0: 37,
};

const str = (value: string): GgufValue => ({ type: GgufType.STRING, value });
const u32 = (value: number): GgufValue => ({ type: GgufType.UINT32, value });
const f32 = (value: number): GgufValue => ({ type: GgufType.FLOAT32, value: Math.fround(value) });
const bool = (value: boolean): GgufValue => ({ type: GgufType.BOOL, value });

export function llamaMetadata(config: ModelConfig, naming: GgufNaming, mainType: string, tokenizer: GgufTokenizer | undefined, file: string): [string, GgufValue][] {
  const kv: [string, GgufValue][] = [];
  kv.push(["general.architecture", str("llama")], ["general.type", str("model")], ["general.name", str(naming.name)]);
  if (naming.finetune !== undefined) kv.push(["general.finetune", str(naming.finetune)]);
  if (naming.basename !== undefined) kv.push(["general.basename", str(naming.basename)]);
  if (naming.sizeLabel !== undefined) kv.push(["general.size_label", str(naming.sizeLabel)]);
  const intermediate = config.intermediateSize;
  if (intermediate === undefined) throw new FormatError("CONFIG_INVALID", "GGUF export needs intermediate_size", { file });
  const context = config.maxPositionEmbeddings;
  if (context === undefined) throw new FormatError("CONFIG_INVALID", "GGUF export needs max_position_embeddings (llama.context_length)", { file });
  kv.push(
    ["llama.block_count", u32(config.numLayers)],
    ["llama.context_length", u32(context)],
    ["llama.embedding_length", u32(config.hiddenSize)],
    ["llama.feed_forward_length", u32(intermediate)],
    ["llama.attention.head_count", u32(config.numHeads)],
    ["llama.attention.head_count_kv", u32(config.numKvHeads)],
    ["llama.rope.freq_base", f32(config.ropeTheta)],
    ["llama.attention.layer_norm_rms_epsilon", f32(config.rmsNormEps)],
  );
  const fileType = FILE_TYPES[mainType];
  if (fileType !== undefined) kv.push(["general.file_type", u32(fileType)]);
  kv.push(["llama.vocab_size", u32(config.vocabSize)], ["llama.rope.dimension_count", u32(config.headDim)]);
  if (config.headDim * config.numHeads !== config.hiddenSize) {
    kv.push(["llama.attention.key_length", u32(config.headDim)], ["llama.attention.value_length", u32(config.headDim)]);
  }
  kv.push(...ropeScaling(config, file));
  if (tokenizer !== undefined) kv.push(...tokenizerKeys(tokenizer));
  kv.push(["general.quantization_version", u32(2)]);
  return kv;
}

/** linear scaling as llama.cpp reads it; llama3 scaling travels as the rope_freqs tensor instead. */
function ropeScaling(config: ModelConfig, file: string): [string, GgufValue][] {
  const scaling = config.ropeScaling;
  if (scaling === undefined) return [];
  const type = scaling["rope_type"] ?? scaling["type"];
  const factor = scaling["factor"];
  if (type === "linear" && typeof factor === "number") return [["llama.rope.scaling.type", str("linear")], ["llama.rope.scaling.factor", f32(factor)]];
  throw new FormatError("CONFIG_INVALID", `GGUF export does not write rope scaling "${String(type)}" yet`, { file, actual: type, expected: "none or linear" });
}

function tokenizerKeys(t: GgufTokenizer): [string, GgufValue][] {
  const kv: [string, GgufValue][] = [
    ["tokenizer.ggml.model", str(t.model)],
    ["tokenizer.ggml.pre", str(t.pre)],
    ["tokenizer.ggml.tokens", { type: GgufType.ARRAY, itemType: GgufType.STRING, items: t.tokens }],
  ];
  if (t.scores !== undefined) kv.push(["tokenizer.ggml.scores", { type: GgufType.ARRAY, itemType: GgufType.FLOAT32, items: t.scores }]);
  kv.push(["tokenizer.ggml.token_type", { type: GgufType.ARRAY, itemType: GgufType.INT32, items: t.tokenTypes }]);
  if (t.merges !== undefined && t.merges.length > 0) kv.push(["tokenizer.ggml.merges", { type: GgufType.ARRAY, itemType: GgufType.STRING, items: t.merges }]);
  for (const { kind, id } of t.specialIds) kv.push([`tokenizer.ggml.${kind}_token_id`, u32(id)]);
  if (t.addBos !== undefined) kv.push(["tokenizer.ggml.add_bos_token", bool(t.addBos)]);
  if (t.addEos !== undefined) kv.push(["tokenizer.ggml.add_eos_token", bool(t.addEos)]);
  if (t.chatTemplate !== undefined) kv.push(["tokenizer.chat_template", str(t.chatTemplate)]);
  return kv;
}
