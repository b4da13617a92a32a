import { convertFloatBytes } from "../../formats/dense/convert.js";
import { ConversionError, FormatError } from "../../formats/errors.js";
import { viewAs } from "../../formats/packed-array.js";
import type { Checkpoint, TensorEntry } from "../checkpoint.js";
import type { ModelConfig } from "../hf/config.js";
import { attentionBlock, attentionContext } from "./decoder-attention.js";
import type { GraphBuilder } from "./decoder-builder.js";
import { linear, mlpBlock, rmsNorm, type LinearWeights, type RmsNormWeights } from "./decoder-ops.js";
import type { PackedLinear } from "./dequant-layer.js";
import type { VptqSemantics } from "../../formats/vptq/reference.js";
import { matMulNBitsBitsFor } from "./matmul-nbits.js";
import { isTrivialGIdx } from "../../formats/int-group/types.js";
import { intsAttribute, tensorValueInfo, type GraphInit, type ValueInfoInit } from "./model.js";

/**
 * A Llama-family decoder (transformers' LlamaForCausalLM, also Mistral and Qwen2 with q/k/v
 * bias) as one ONNX graph that onnxruntime runs with a KV cache, named as onnxruntime-genai names
 * it (gguf-onnx.md §3.4):
 *
 *   inputs   input_ids                  int64 [batch_size, sequence_length]
 *            attention_mask             int64 [batch_size, total_sequence_length]
 *            past_key_values.<i>.key    float [batch_size, kv_heads, past_sequence_length, head_dim]
 *            past_key_values.<i>.value  (same)
 *   outputs  logits                     float [batch_size, sequence_length, vocab]
 *            present.<i>.key / .value   float [batch_size, kv_heads, total_sequence_length, head_dim]
 *
 * Gather(embedding) → per layer: attention block (decoder-attention.ts), MLP block
 * (decoder-ops.ts) → final RMSNorm → head. A tied head multiplies by the embedding initialiser
 * through a Transpose node, so the matrix is stored once. Float weights become float32
 * MatMuls; integer-group linears become com.microsoft.MatMulNBits with their codes carried
 * over (matmul-nbits.ts), never requantized; VPTQ, SpQR and FPx linears keep their stored
 * arrays behind an exact dequantization subgraph (PackedLinearExport).
 */

export const INPUT_IDS = "input_ids";
export const ATTENTION_MASK = "attention_mask";
export const LOGITS = "logits";
export const pastKeyName = (layer: number): string => `past_key_values.${layer}.key`;
export const pastValueName = (layer: number): string => `past_key_values.${layer}.value`;
export const presentKeyName = (layer: number): string => `present.${layer}.key`;
export const presentValueName = (layer: number): string => `present.${layer}.value`;
/** Symbolic dimensions, as onnxruntime-genai's builder spells them. */
export const DIM = { batch: "batch_size", sequence: "sequence_length", past: "past_sequence_length", total: "total_sequence_length" } as const;

/**
 * What VPTQ, SpQR and FPx linears become: "dequant-graph" (default) keeps their stored arrays and
 * dequantizes them in the graph, exactly (dequant-*.ts): the file is as small as the packed
 * model, and onnxruntime folds the subgraphs into float32 weights when the session is created;
 * "float" stores lmpack's dequantized weights as float32 (a bigger file, faster to load).
 */
export type PackedLinearExport = "dequant-graph" | "float";

export interface DecoderGraphOptions {
  /** Positions the rotary caches cover (export-decoder.ts chooses it: max_position_embeddings by default). */
  contextLength: number;
  packedLinears?: PackedLinearExport;
  /** Rounding of VPTQ dequantization subgraphs ("cuda" by default, as the reference). */
  vptqSemantics?: VptqSemantics;
  /** Called as each linear is added. */
  onLinear?: (report: DecoderLinearReport) => void;
}

export interface DecoderLinearReport {
  name: string;
  /**
   * "matmul-nbits": integer codes carried over; "dequant-graph": VPTQ / SpQR / FPx stored arrays
   * dequantized by standard ops into a float32 MatMul; "dense": float32 MatMul (dequantized by
   * lmpack if the source was packed and `packed` is "float").
   */
  how: "matmul-nbits" | "dequant-graph" | "dense";
  outFeatures: number;
  inFeatures: number;
  /** Bits of the codes (MatMulNBits: the source's; 3-bit codes travel in 4-bit fields, fieldBits). */
  bits: number | undefined;
  /** MatMulNBits field width when wider than `bits`. */
  fieldBits?: number;
  blockSize: number | undefined;
  /** Act-order layer: its columns reordered into group order, the input gathered to match. */
  actOrder?: boolean;
  /** dequant-graph: the representation. */
  format?: "vptq" | "spqr" | "fpx";
}

/** Adds the whole decoder to `g` (its store receives the weights, layer by layer); returns the graph. */
export async function buildDecoderGraph(g: GraphBuilder, checkpoint: Checkpoint, options: DecoderGraphOptions): Promise<GraphInit> {
  const config = requireDecoderConfig(checkpoint);
  const reader = new WeightReader(checkpoint, options.packedLinears ?? "dequant-graph", options.vptqSemantics ?? "cuda", options.onLinear);
  const { hiddenSize: H, vocabSize: V, numKvHeads, headDim, numLayers } = config;
  const eps = config.rmsNormEps;
  const inputs: ValueInfoInit[] = [tensorValueInfo(INPUT_IDS, "I64", [DIM.batch, DIM.sequence]), tensorValueInfo(ATTENTION_MASK, "I64", [DIM.batch, DIM.total])];
  const outputs: ValueInfoInit[] = [tensorValueInfo(LOGITS, "F32", [DIM.batch, DIM.sequence, V])];

  g.scope = "model";
  const ctx = await attentionContext(g, ATTENTION_MASK, config, options.contextLength, checkpoint.location);
  const embedEntry = reader.entry("model.embed_tokens.weight") ?? (config.tiedEmbeddings ? reader.entry("lm_head.weight") : undefined);
  if (embedEntry === undefined) throw new FormatError("TENSOR_MISSING", "the decoder needs the token embedding", { file: checkpoint.location, tensor: "model.embed_tokens.weight" });
  const embedding = await g.weight("model.embed_tokens.weight", "F32", [V, H], await reader.dense(embedEntry, [V, H]));
  let hidden = g.op1("Gather", [embedding, INPUT_IDS]);

  const qOut = config.numHeads * headDim;
  const kvOut = numKvHeads * headDim;
  const intermediate = config.intermediateSize!;
  const cacheDims = (length: string) => [DIM.batch, numKvHeads, length, headDim];
  for (let i = 0; i < numLayers; i++) {
    const p = `model.layers.${i}`;
    const kv = { pastKey: pastKeyName(i), pastValue: pastValueName(i), presentKey: presentKeyName(i), presentValue: presentValueName(i) };
    inputs.push(tensorValueInfo(kv.pastKey, "F32", cacheDims(DIM.past)), tensorValueInfo(kv.pastValue, "F32", cacheDims(DIM.past)));
    outputs.push(tensorValueInfo(kv.presentKey, "F32", cacheDims(DIM.total)), tensorValueInfo(kv.presentValue, "F32", cacheDims(DIM.total)));
    g.scope = `${p}/attn`;
    const attention = {
      norm: await reader.norm(`${p}.input_layernorm.weight`, H, eps),
      q: await reader.linear(`${p}.self_attn.q_proj`, qOut, H, config.attentionBias),
      k: await reader.linear(`${p}.self_attn.k_proj`, kvOut, H, config.attentionBias),
      v: await reader.linear(`${p}.self_attn.v_proj`, kvOut, H, config.attentionBias),
      o: await reader.linear(`${p}.self_attn.o_proj`, H, qOut, false),
    };
    hidden = await attentionBlock(g, hidden, attention, ctx, kv, config);
    g.scope = `${p}/mlp`;
    const mlp = {
      norm: await reader.norm(`${p}.post_attention_layernorm.weight`, H, eps),
      gate: await reader.linear(`${p}.mlp.gate_proj`, intermediate, H, false),
      up: await reader.linear(`${p}.mlp.up_proj`, intermediate, H, false),
      down: await reader.linear(`${p}.mlp.down_proj`, H, intermediate, false),
    };
    hidden = await mlpBlock(g, hidden, mlp);
  }

  g.scope = "model/head";
  const normed = await rmsNorm(g, hidden, await reader.norm("model.norm.weight", H, eps));
  if (config.tiedEmbeddings) {
    const embeddingT = g.op1("Transpose", [embedding], { attributes: [intsAttribute("perm", [1, 0])] });
    g.op("MatMul", [normed, embeddingT], { outputNames: [LOGITS] });
  } else {
    g.op("Identity", [await linear(g, normed, await reader.linear("lm_head", V, H, false))], { outputNames: [LOGITS] });
  }
  return { name: "lmpack-decoder", node: g.nodes, initializer: g.initializers, input: inputs, output: outputs };
}

/** The checkpoint's config if the decoder graph can express the model; typed errors otherwise. */
export function requireDecoderConfig(checkpoint: Checkpoint): ModelConfig & { intermediateSize: number } {
  const config = checkpoint.config;
  const file = checkpoint.location;
  if (config === undefined) throw new FormatError("CONFIG_INVALID", "an ONNX decoder export needs config.json", { file });
  if (config.intermediateSize === undefined) throw new FormatError("CONFIG_INVALID", "config.json lacks intermediate_size", { file });
  if (config.headDim % 2 !== 0) throw new FormatError("CONFIG_INVALID", "rotary embedding needs an even head dimension", { file, actual: config.headDim });
  // An empty "architectures" list (some quantizers' configs have one) falls back to model_type, as transformers' Auto classes do.
  const architecture = config.architecture ?? ARCHITECTURE_OF_MODEL_TYPE[config.modelType ?? ""] ?? "";
  if (!SUPPORTED_ARCHITECTURES.includes(architecture)) {
    throw new ConversionError("UNSUPPORTED_TARGET", `architecture "${architecture}" (model_type "${config.modelType ?? ""}"): the ONNX decoder graph is the Llama family's`, { file, expected: SUPPORTED_ARCHITECTURES.join(" | "), actual: architecture });
  }
  return { ...config, architecture } as ModelConfig & { intermediateSize: number };
}

const ARCHITECTURE_OF_MODEL_TYPE: Readonly<Record<string, string>> = { llama: "LlamaForCausalLM", mistral: "MistralForCausalLM", qwen2: "Qwen2ForCausalLM" };

/** Architectures whose forward is lmpack's LlamaForward (RMSNorm, rotate_half RoPE, GQA, SwiGLU). */
export const SUPPORTED_ARCHITECTURES: readonly string[] = ["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"];

/** Checkpoint entries by HF name, read as float32 or integer groups, with shape checks. */
class WeightReader {
  private readonly byName: Map<string, TensorEntry>;

  constructor(private readonly checkpoint: Checkpoint, private readonly packedLinears: PackedLinearExport, private readonly vptqSemantics: VptqSemantics, private readonly onLinear?: (report: DecoderLinearReport) => void) {
    this.byName = new Map(checkpoint.tensors.map((t) => [t.name, t]));
  }

  entry(name: string): TensorEntry | undefined {
    return this.byName.get(name);
  }

  /** float32 bytes of `entry` (packed entries arrive dequantized), after checking its shape. */
  async dense(entry: TensorEntry, shape: readonly number[]): Promise<Uint8Array> {
    this.checkShape(entry, shape);
    const dtype = entry.dtype;
    if (dtype !== "F32" && dtype !== "F16" && dtype !== "BF16") {
      throw new FormatError("DTYPE_UNSUPPORTED", "the ONNX decoder reads F32, F16 or BF16 tensors (packed ones arrive dequantized)", { file: entry.file, tensor: entry.name, actual: dtype });
    }
    return convertFloatBytes(await entry.read(), dtype, "F32");
  }

  async norm(name: string, size: number, eps: number): Promise<RmsNormWeights> {
    return { name, gamma: viewAs(await this.dense(this.require(name), [size]), Float32Array), eps };
  }

  async linear(module: string, outFeatures: number, inFeatures: number, bias: boolean): Promise<LinearWeights> {
    const entry = this.require(`${module}.weight`);
    const biasEntry = this.entry(`${module}.bias`) ?? (bias ? this.require(`${module}.bias`) : undefined);
    const biasValues = biasEntry === undefined ? undefined : viewAs(await this.dense(biasEntry, [outFeatures]), Float32Array);
    const report = { name: module, outFeatures, inFeatures };
    const packed = entry.packed;
    if (packed?.representation === "int-group") {
      this.checkShape(entry, [outFeatures, inFeatures]);
      const tensor = await packed.load();
      const { bits, groupSize } = tensor.params;
      const fieldBits = matMulNBitsBitsFor({ ...tensor, gIdx: undefined }, module);
      const actOrder = !isTrivialGIdx(tensor.gIdx, groupSize);
      this.onLinear?.({ ...report, how: "matmul-nbits", bits, blockSize: groupSize, ...(fieldBits === bits ? {} : { fieldBits }), ...(actOrder ? { actOrder } : {}) });
      return { kind: "int-group", name: module, tensor, bias: biasValues };
    }
    if (this.packedLinears === "dequant-graph" && (packed?.representation === "vptq" || packed?.representation === "spqr" || packed?.representation === "fpx")) {
      this.checkShape(entry, [outFeatures, inFeatures]);
      const layer: PackedLinear = packed.representation === "vptq" ? { format: "vptq", tensor: await packed.load(), semantics: this.vptqSemantics }
        : packed.representation === "spqr" ? { format: "spqr", tensor: await packed.load() }
        : { format: "fpx", tensor: await packed.load() };
      this.onLinear?.({ ...report, how: "dequant-graph", bits: undefined, blockSize: undefined, format: packed.representation });
      return { kind: "dequant", name: module, layer, bias: biasValues };
    }
    const weight = viewAs(await this.dense(entry, [outFeatures, inFeatures]), Float32Array);
    this.onLinear?.({ ...report, how: "dense", bits: undefined, blockSize: undefined });
    return { kind: "dense", name: module, outFeatures, inFeatures, weight, bias: biasValues };
  }

  private require(name: string): TensorEntry {
    const entry = this.byName.get(name);
    if (entry === undefined) throw new FormatError("TENSOR_MISSING", "the decoder needs this tensor", { file: this.checkpoint.location, tensor: name });
    return entry;
  }

  private checkShape(entry: TensorEntry, shape: readonly number[]): void {
    if (entry.shape.length !== shape.length || entry.shape.some((d, i) => d !== shape[i])) {
      throw new FormatError("SHAPE_SIZE_MISMATCH", "tensor shape does not match config.json", { file: entry.file, tensor: entry.name, expected: `[${shape.join(", ")}]`, actual: `[${entry.shape.join(", ")}]` });
    }
  }
}
