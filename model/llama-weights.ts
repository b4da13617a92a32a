import { convertFloatBytes } from "../formats/dense/convert.js";
import { totalmem } from "node:os";
import { FormatError, UsageError } from "../formats/errors.js";
import { viewAs } from "../formats/packed-array.js";
import type { Checkpoint, TensorEntry } from "../converters/checkpoint.js";
import type { ModelConfig } from "../converters/hf/config.js";

/**
 * The weights a Llama-family decoder forward needs, as Float64Arrays, taken from any lmpack
 * checkpoint: dense tensors are widened exactly; packed ones (int-group, FP6, SpQR, VPTQ) arrive
 * already dequantized by their entry's reference dequant, so the forward measures exactly what
 * the packed model computes. Names are the transformers ones (Llama, Mistral, Qwen2).
 */

/** A linear layer: weight [out][in] row-major, optional bias [out]. */
export interface Linear {
  name: string;
  outFeatures: number;
  inFeatures: number;
  weight: Float64Array;
  bias: Float64Array | undefined;
}

export interface DecoderLayerWeights {
  inputNorm: Float64Array;
  q: Linear;
  k: Linear;
  v: Linear;
  o: Linear;
  postAttentionNorm: Float64Array;
  gate: Linear;
  up: Linear;
  down: Linear;
}

export interface LlamaWeights {
  config: ModelConfig;
  /** [vocab][hidden] */
  embed: Float64Array;
  layers: DecoderLayerWeights[];
  finalNorm: Float64Array;
  /** [vocab][hidden]: the embedding itself when tied. */
  head: Float64Array;
}

/** Loads every decoder weight (memory: 8 bytes per parameter; the CPU forward is for models that fit). */
export async function loadLlamaWeights(checkpoint: Checkpoint): Promise<LlamaWeights> {
  const config = checkpoint.config;
  if (config === undefined) throw new FormatError("CONFIG_INVALID", "a forward pass needs config.json", { file: checkpoint.location });
  const byName = new Map(checkpoint.tensors.map((t) => [t.name, t]));
  // Refuse before allocating: a 7B model would need 56 GB here and die in the middle.
  const needed = checkpoint.tensors.reduce((sum, t) => sum + t.nElements, 0) * 8;
  const budget = 0.6 * totalmem();
  if (needed > budget) {
    throw new UsageError("BAD_ARGUMENT", `the CPU reference forward holds every weight as float64: this model needs ${(needed / 2 ** 30).toFixed(1)} GiB, more than 60 % of this machine's ${(totalmem() / 2 ** 30).toFixed(1)} GiB`, { file: checkpoint.location });
  }
  const H = config.hiddenSize;
  const read = async (name: string, shape: number[]): Promise<Float64Array> => {
    const entry = byName.get(name);
    if (entry === undefined) throw new FormatError("TENSOR_MISSING", "the forward pass needs this tensor", { file: checkpoint.location, tensor: name });
    if (entry.shape.length !== shape.length || entry.shape.some((d, i) => d !== shape[i])) {
      throw new FormatError("SHAPE_SIZE_MISMATCH", "tensor shape does not match config.json", { file: checkpoint.location, tensor: name, expected: `[${shape.join(", ")}]`, actual: `[${entry.shape.join(", ")}]` });
    }
    return widen(entry, checkpoint.location);
  };
  const optional = async (name: string, shape: number[]): Promise<Float64Array | undefined> => (byName.has(name) ? read(name, shape) : undefined);
  const linear = async (name: string, outFeatures: number, inFeatures: number, bias: boolean): Promise<Linear> => ({
    name,
    outFeatures,
    inFeatures,
    weight: await read(`${name}.weight`, [outFeatures, inFeatures]),
    bias: bias ? await read(`${name}.bias`, [outFeatures]) : await optional(`${name}.bias`, [outFeatures]),
  });
  const intermediate = config.intermediateSize;
  if (intermediate === undefined) throw new FormatError("CONFIG_INVALID", "config.json lacks intermediate_size", { file: checkpoint.location });
  const qOut = config.numHeads * config.headDim;
  const kvOut = config.numKvHeads * config.headDim;
  const layers: DecoderLayerWeights[] = [];
  for (let i = 0; i < config.numLayers; i++) {
    const p = `model.layers.${i}`;
    layers.push({
      inputNorm: await read(`${p}.input_layernorm.weight`, [H]),
      q: await linear(`${p}.self_attn.q_proj`, qOut, H, config.attentionBias),
      k: await linear(`${p}.self_attn.k_proj`, kvOut, H, config.attentionBias),
      v: await linear(`${p}.self_attn.v_proj`, kvOut, H, config.attentionBias),
      o: await linear(`${p}.self_attn.o_proj`, H, qOut, false),
      postAttentionNorm: await read(`${p}.post_attention_layernorm.weight`, [H]),
      gate: await linear(`${p}.mlp.gate_proj`, intermediate, H, false),
      up: await linear(`${p}.mlp.up_proj`, intermediate, H, false),
      down: await linear(`${p}.mlp.down_proj`, H, intermediate, false),
    });
  }
  const vocab = config.vocabSize;
  // Tied checkpoints may store the matrix under either name (tinystories-656K keeps only lm_head).
  const embed = (await optional("model.embed_tokens.weight", [vocab, H])) ?? (config.tiedEmbeddings ? await optional("lm_head.weight", [vocab, H]) : undefined);
  if (embed === undefined) throw new FormatError("TENSOR_MISSING", "the forward pass needs the token embedding", { file: checkpoint.location, tensor: "model.embed_tokens.weight" });
  const head = config.tiedEmbeddings ? embed : await read("lm_head.weight", [vocab, H]);
  return { config, embed, layers, finalNorm: await read("model.norm.weight", [H]), head };
}

async function widen(entry: TensorEntry, file: string): Promise<Float64Array> {
  const dtype = entry.dtype;
  if (dtype !== "F32" && dtype !== "F16" && dtype !== "BF16") {
    throw new FormatError("DTYPE_UNSUPPORTED", "the forward pass reads F32, F16 or BF16 tensors (packed ones arrive dequantized)", { file, tensor: entry.name, actual: dtype });
  }
  return Float64Array.from(viewAs(convertFloatBytes(await entry.read(), dtype, "F32"), Float32Array));
}
