import { convertFloatBytes } from "../../formats/dense/convert.js";
import { FormatError } from "../../formats/errors.js";
import { gemmAdd } from "../../formats/second-order/matmul.js";
import type { Checkpoint } from "../checkpoint.js";
import type { HessianEntry } from "./store.js";

/**
 * Stand-in Hessians until calibration (`lmpack calibrate`) lands: each decoder layer's linear
 * inputs computed from the model's own token-embedding rows, one token at a time, through that
 * layer alone (no residual stream from earlier layers, no mixing between tokens):
 *
 *   q/k/v      x = RMSNorm(e) · input_layernorm
 *   o          the attention output when a token attends only to itself: its own v, each KV
 *              head repeated for the query heads that share it (GQA)
 *   gate/up    x = RMSNorm(e) · post_attention_layernorm
 *   down       silu(gate(x)) ⊙ up(x)
 *
 * H = XᵀX over `maxTokens` evenly spaced vocabulary rows. Real activations differ (they carry
 * the residual stream and attention mixing), but these have the right per-layer scale and
 * correlation structure, which is what second-order quantizers exploit.
 */
export async function embeddingProxyHessians(checkpoint: Checkpoint, maxTokens = 4096): Promise<HessianEntry[]> {
  const config = checkpoint.config;
  if (config === undefined) throw new FormatError("CONFIG_INVALID", "proxy Hessians need config.json (heads, norms)", { file: checkpoint.location });
  const tensor = async (name: string) => {
    const entry = checkpoint.tensors.find((t) => t.name === name);
    if (entry === undefined) return undefined;
    const f32 = convertFloatBytes(await entry.read(), entry.dtype as "F32" | "F16" | "BF16", "F32");
    return { shape: entry.shape, data: Float64Array.from(new Float32Array(f32.buffer, f32.byteOffset, f32.length / 4)) };
  };
  const embed = (await tensor("model.embed_tokens.weight")) ?? (config.tiedEmbeddings ? await tensor("lm_head.weight") : undefined);
  if (embed === undefined) throw new FormatError("TENSOR_MISSING", "proxy Hessians need the token embedding", { file: checkpoint.location, tensor: "model.embed_tokens.weight" });
  const D = config.hiddenSize;
  const tokens = sampleRows(embed.data, embed.shape[0]!, D, maxTokens);
  const T = tokens.length / D;
  const normed = rmsNormRows(tokens, T, D, config.rmsNormEps);
  const entries: HessianEntry[] = [];
  for (let i = 0; i < config.numLayers; i++) {
    const p = `model.layers.${i}`;
    const need = async (name: string) => {
      const t = await tensor(`${p}.${name}`);
      if (t === undefined) throw new FormatError("TENSOR_MISSING", "proxy Hessians need this dense tensor", { file: checkpoint.location, tensor: `${p}.${name}` });
      return t;
    };
    const x1 = scaleColumns(normed, T, D, (await need("input_layernorm.weight")).data);
    entries.push({ name: `${p}.self_attn.q_proj`, aliases: [`${p}.self_attn.k_proj`, `${p}.self_attn.v_proj`], hessian: gram(x1, T, D) });
    const wv = await need("self_attn.v_proj.weight");
    const v = linear(x1, T, D, wv.data, wv.shape[0]!);
    const oIn = repeatKvHeads(v, T, config.numKvHeads, config.numHeads, config.headDim);
    entries.push({ name: `${p}.self_attn.o_proj`, aliases: [], hessian: gram(oIn, T, config.numHeads * config.headDim) });
    const x2 = scaleColumns(normed, T, D, (await need("post_attention_layernorm.weight")).data);
    entries.push({ name: `${p}.mlp.gate_proj`, aliases: [`${p}.mlp.up_proj`], hessian: gram(x2, T, D) });
    const [wg, wu] = [await need("mlp.gate_proj.weight"), await need("mlp.up_proj.weight")];
    const I = wg.shape[0]!;
    const gate = linear(x2, T, D, wg.data, I);
    const up = linear(x2, T, D, wu.data, I);
    for (let j = 0; j < gate.length; j++) gate[j] = (gate[j]! / (1 + Math.exp(-gate[j]!))) * up[j]!;
    entries.push({ name: `${p}.mlp.down_proj`, aliases: [], hessian: gram(gate, T, I) });
  }
  return entries;
}

function sampleRows(data: Float64Array, rows: number, width: number, maxRows: number): Float64Array {
  const take = Math.min(rows, maxRows);
  const out = new Float64Array(take * width);
  for (let r = 0; r < take; r++) {
    const source = Math.floor((r * rows) / take) * width;
    out.set(data.subarray(source, source + width), r * width);
  }
  return out;
}

function rmsNormRows(x: Float64Array, rows: number, width: number, eps: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let r = 0; r < rows; r++) {
    let sum = 0;
    for (let c = 0; c < width; c++) sum += x[r * width + c]! ** 2;
    const inv = 1 / Math.sqrt(sum / width + eps);
    for (let c = 0; c < width; c++) out[r * width + c] = x[r * width + c]! * inv;
  }
  return out;
}

function scaleColumns(x: Float64Array, rows: number, width: number, weight: Float64Array): Float64Array {
  const out = new Float64Array(x.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < width; c++) out[r * width + c] = x[r * width + c]! * weight[c]!;
  return out;
}

/** x [rows × in] · Wᵀ, W [out × in] row-major (read through a transposed view, not copied). */
function linear(x: Float64Array, rows: number, inFeatures: number, w: Float64Array, outFeatures: number): Float64Array {
  const out = new Float64Array(rows * outFeatures);
  gemmAdd({ data: out, offset: 0, rowStride: outFeatures }, { data: x, offset: 0, rowStride: inFeatures }, { data: w, offset: 0, rowStride: inFeatures, transposed: true }, rows, inFeatures, outFeatures);
  return out;
}

function repeatKvHeads(v: Float64Array, rows: number, kvHeads: number, heads: number, headDim: number): Float64Array {
  const out = new Float64Array(rows * heads * headDim);
  const group = heads / kvHeads;
  for (let r = 0; r < rows; r++) {
    for (let h = 0; h < heads; h++) out.set(v.subarray(r * kvHeads * headDim + Math.floor(h / group) * headDim, r * kvHeads * headDim + (Math.floor(h / group) + 1) * headDim), (r * heads + h) * headDim);
  }
  return out;
}

/** XᵀX for X [rows × width]. */
function gram(x: Float64Array, rows: number, width: number): { size: number; data: Float64Array; nSamples: number } {
  const data = new Float64Array(width * width);
  gemmAdd({ data, offset: 0, rowStride: width }, { data: x, offset: 0, rowStride: width, transposed: true }, { data: x, offset: 0, rowStride: width }, width, rows, width);
  return { size: width, data, nSamples: rows };
}
