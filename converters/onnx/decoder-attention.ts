import type { ModelConfig } from "../hf/config.js";
import { inverseFrequencies, ropeTable } from "../../model/rope.js";
import { bytesOf } from "../../formats/packed-array.js";
import { onnx } from "../../schemas/gen/onnx.js";
import { floatAttribute, type GraphBuilder } from "./decoder-builder.js";
import { linear, rmsNorm, type LinearWeights, type RmsNormWeights } from "./decoder-ops.js";
import { intAttribute, MS_DOMAIN } from "./model.js";

/**
 * The attention half of a decoder layer, on onnxruntime's com.microsoft.GroupQueryAttention
 * wired as onnxruntime-genai's builder wires it for the CPU (gguf-onnx.md §3.4): q/k/v in HF row
 * order, rotary embedding fused into the op (`do_rotary = 1, rotary_interleaved = 0`: the
 * rotate_half convention, §3.5) with cos/sin caches as initialisers, the KV cache as past/present
 * [batch, kv_heads, length, head_dim] holding *rotated* keys, and the causal mask implied.
 *
 * Positions come from the attention mask: row b's new tokens sit at positions
 * seqlens_k[b] + 1 − sequence_length … seqlens_k[b], with seqlens_k = Σ mask[b] − 1, so a
 * second call with the first call's present.* as past continues where it stopped.
 *
 * Why the contrib op rather than MatMul + scale + mask + Softmax: it is what onnxruntime-genai
 * runs (so the genai_config.json beside the model is honest), it keeps the cache in the layout
 * genai shares between past and present, it needs no position_ids input and no mask tensor of
 * [sequence, total] per call, and on onnxruntime-node 1.30's CPU EP it is numerically right:
 * logits within 1.5e-5 of lmpack's float64 forward, and the same bits whether a window runs in
 * one call or through the cache (test/onnx/decoder.test.ts).
 */

export interface AttentionWeights {
  norm: RmsNormWeights;
  q: LinearWeights;
  k: LinearWeights;
  v: LinearWeights;
  o: LinearWeights;
}

/** Graph-wide inputs of every GroupQueryAttention node, derived once from attention_mask. */
export interface AttentionContext {
  /** int32 [batch]: index of each row's last token (Σ mask − 1). */
  seqlensK: string;
  /** int32 scalar: total sequence length (attention_mask's second dimension). */
  totalSequenceLength: string;
  cosCache: string;
  sinCache: string;
}

/**
 * seqlens_k and total_sequence_length from attention_mask (genai's
 * `make_attention_mask_reformatting_for_gqa`), and the cos/sin caches [contextLength, head_dim/2]
 * computed as lmpack's forward computes them (model/rope.ts: float32 angles, rope scaling).
 */
export async function attentionContext(g: GraphBuilder, attentionMask: string, config: ModelConfig, contextLength: number, file: string): Promise<AttentionContext> {
  const int32 = intAttribute("to", onnx.TensorProto.DataType.INT32);
  const lengths = g.op1("ReduceSum", [attentionMask, g.int64s("axis_1", [1])], { attributes: [intAttribute("keepdims", 0)] });
  const seqlensK = g.op1("Cast", [g.op1("Sub", [lengths, g.int64s("one", [1], [])])], { attributes: [int32] });
  const total = g.op1("Gather", [g.op1("Shape", [attentionMask]), g.int64s("index_1", [1], [])], { attributes: [intAttribute("axis", 0)] });
  const totalSequenceLength = g.op1("Cast", [total], { attributes: [int32] });
  const table = ropeTable(inverseFrequencies(config, file), config.headDim, contextLength);
  const dims = [contextLength, config.headDim / 2];
  const cosCache = await g.weight("cos_cache", "F32", dims, bytesOf(Float32Array.from(table.cos)));
  const sinCache = await g.weight("sin_cache", "F32", dims, bytesOf(Float32Array.from(table.sin)));
  return { seqlensK, totalSequenceLength, cosCache, sinCache };
}

export interface KvNames {
  pastKey: string;
  pastValue: string;
  presentKey: string;
  presentValue: string;
}

/** hidden + o_proj(GQA(RMSNorm(hidden))); writes the layer's present key/value outputs. */
export async function attentionBlock(g: GraphBuilder, hidden: string, w: AttentionWeights, ctx: AttentionContext, kv: KvNames, config: ModelConfig): Promise<string> {
  const x = await rmsNorm(g, hidden, w.norm);
  const q = await linear(g, x, w.q);
  const k = await linear(g, x, w.k);
  const v = await linear(g, x, w.v);
  const [attended] = g.op("GroupQueryAttention", [q, k, v, kv.pastKey, kv.pastValue, ctx.seqlensK, ctx.totalSequenceLength, ctx.cosCache, ctx.sinCache], {
    domain: MS_DOMAIN,
    outputNames: [`${g.scope}/attention`, kv.presentKey, kv.presentValue],
    attributes: [
      intAttribute("num_heads", config.numHeads),
      intAttribute("kv_num_heads", config.numKvHeads),
      floatAttribute("scale", 1 / Math.sqrt(config.headDim)),
      intAttribute("do_rotary", 1),
      intAttribute("rotary_interleaved", 0),
      intAttribute("local_window_size", -1),
    ],
  });
  return g.op1("Add", [hidden, await linear(g, attended!, w.o)]);
}
