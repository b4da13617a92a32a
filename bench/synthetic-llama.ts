import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { INDEX_FILE } from "../converters/hf/import-local.js";
import { planShards, shardFileName } from "../converters/safetensors/export.js";
import { planByteLength, SafetensorsWriter, type TensorPlan } from "../converters/safetensors/writer.js";

/**
 * A synthetic Hugging Face checkpoint with Llama-2-7B's tensor names and shapes, so the
 * streaming benchmark can convert several GB without downloading anything. Only the number
 * of layers changes (32 in the real model: ~13.5 GB of bf16).
 */

/** Llama-2-7B (meta-llama/Llama-2-7b-hf config.json). */
export const LLAMA_2_7B = {
  hiddenSize: 4096,
  intermediateSize: 11008,
  numHeads: 32,
  vocabSize: 32000,
} as const;

/** Shard cap of the generated source; real checkpoints ship 2 to 10 GB shards, and more shards exercise more boundaries. */
export const SOURCE_SHARD_BYTES = 2e9;

/**
 * Pattern repeated through every tensor: big enough that the data does not compress or
 * checksum trivially, small enough that generating N GB never holds more than this.
 */
export const PATTERN_BYTES = 16 * 1024 * 1024;

/** Tensors in module order, as transformers' LlamaForCausalLM names them. */
export function llamaTensorPlans(numLayers: number): TensorPlan[] {
  const { hiddenSize: h, intermediateSize: ff, vocabSize: v } = LLAMA_2_7B;
  const bf16 = (name: string, shape: number[]): TensorPlan => ({ name, dtype: "BF16", shape });
  const plans = [bf16("model.embed_tokens.weight", [v, h])];
  for (let i = 0; i < numLayers; i++) {
    const p = `model.layers.${i}`;
    plans.push(
      bf16(`${p}.self_attn.q_proj.weight`, [h, h]),
      bf16(`${p}.self_attn.k_proj.weight`, [h, h]),
      bf16(`${p}.self_attn.v_proj.weight`, [h, h]),
      bf16(`${p}.self_attn.o_proj.weight`, [h, h]),
      bf16(`${p}.mlp.gate_proj.weight`, [ff, h]),
      bf16(`${p}.mlp.up_proj.weight`, [ff, h]),
      bf16(`${p}.mlp.down_proj.weight`, [h, ff]),
      bf16(`${p}.input_layernorm.weight`, [h]),
      bf16(`${p}.post_attention_layernorm.weight`, [h]),
    );
  }
  plans.push(bf16("model.norm.weight", [h]), bf16("lm_head.weight", [v, h]));
  return plans;
}

/** config.json of Llama-2-7b-hf with `num_hidden_layers` replaced. */
export function llamaConfig(numLayers: number): Record<string, unknown> {
  return {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: LLAMA_2_7B.hiddenSize,
    intermediate_size: LLAMA_2_7B.intermediateSize,
    num_attention_heads: LLAMA_2_7B.numHeads,
    num_key_value_heads: LLAMA_2_7B.numHeads,
    num_hidden_layers: numLayers,
    vocab_size: LLAMA_2_7B.vocabSize,
    max_position_embeddings: 4096,
    hidden_act: "silu",
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    rope_scaling: null,
    tie_word_embeddings: false,
    attention_bias: false,
    initializer_range: 0.02,
    pretraining_tp: 1,
    bos_token_id: 1,
    eos_token_id: 2,
    use_cache: true,
    torch_dtype: "bfloat16",
    transformers_version: "4.31.0.dev0",
  };
}

/**
 * bf16 bit patterns of uniform values in [-0.05, 0.05) (a trained layer's typical range),
 * from a seeded xorshift32: the same bytes on every run.
 */
export function bf16Pattern(nBytes: number, seed = 0x9e3779b9): Uint8Array {
  const f32 = new Float32Array(1);
  const f32Bits = new Uint32Array(f32.buffer);
  const out = new Uint16Array(nBytes / 2);
  let x = seed >>> 0;
  for (let i = 0; i < out.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    f32[0] = (x / 2 ** 32 - 0.5) * 0.1;
    out[i] = f32Bits[0]! >>> 16;
  }
  return new Uint8Array(out.buffer);
}

export interface GeneratedCheckpoint {
  dir: string;
  shardPaths: string[];
  tensorBytes: number;
}

/** Writes the checkpoint to `dir` (created if missing): shards, index, config.json, generation_config.json. */
export async function writeSyntheticLlama(dir: string, numLayers: number): Promise<GeneratedCheckpoint> {
  await mkdir(dir, { recursive: true });
  const plans = llamaTensorPlans(numLayers);
  const shards = planShards(plans, SOURCE_SHARD_BYTES);
  const pattern = bf16Pattern(PATTERN_BYTES);
  let patternOffset = 0;
  const weightMap: Record<string, string> = {};
  const shardPaths: string[] = [];
  for (const [i, shard] of shards.entries()) {
    const fileName = shardFileName(i, shards.length);
    const writer = await SafetensorsWriter.create(join(dir, fileName), shard, { format: "pt" });
    for (const plan of shard) {
      for (let left = planByteLength(plan); left > 0; ) {
        const n = Math.min(left, pattern.length - patternOffset);
        await writer.write(plan.name, pattern.subarray(patternOffset, patternOffset + n));
        patternOffset = (patternOffset + n) % pattern.length;
        left -= n;
      }
      weightMap[plan.name] = fileName;
    }
    await writer.finish();
    shardPaths.push(join(dir, fileName));
  }
  const tensorBytes = plans.reduce((sum, p) => sum + planByteLength(p), 0);
  const index = { metadata: { total_size: tensorBytes }, weight_map: weightMap };
  await writeFile(join(dir, INDEX_FILE), JSON.stringify(index, null, 2) + "\n");
  await writeFile(join(dir, "config.json"), JSON.stringify(llamaConfig(numLayers), null, 2) + "\n");
  await writeFile(join(dir, "generation_config.json"), JSON.stringify({ bos_token_id: 1, eos_token_id: 2, max_length: 4096 }, null, 2) + "\n");
  return { dir, shardPaths, tensorBytes };
}
