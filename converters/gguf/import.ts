import type { DType } from "../../formats/dtype.js";
import { FormatError } from "../../formats/errors.js";
import type { Checkpoint, PackedIntGroup, TensorEntry } from "../checkpoint.js";
import { isDecoderLinear } from "../int-group/quantize-checkpoint.js";
import { ggmlToIntGroup, INT_GROUP_SIZE_KEY } from "./ggml-to-int.js";
import { isKeptPart, keptEntries } from "./keep-packed.js";
import { normaliseConfig, type ModelConfig } from "../hf/config.js";
import type { BufferRing } from "../io/buffer-ring.js";
import { DEFAULT_CHUNK_BYTES } from "../io/read-range.js";
import { formatFloat32, GgufType, type GgufMetadata } from "./layout.js";
import { canPermuteQk, ggufToHfName, permutedRow, qkPermutation, unpermuteQk } from "./names.js";
import { GgufFile, type GgufTensorInfo } from "./reader.js";

/**
 * A GGUF file as an lmpack Checkpoint, in Hugging Face terms: llama-family tensors carry their
 * HF names and HF row order (Q/K un-permuted), F32/F16/BF16 data passes through in its dtype and
 * every quantized type is dequantized to F32 through the formats/ggml codecs; shapes are the
 * reversed `ne`. A transformers-style config.json is synthesised from the `llama.*` keys.
 */

export interface GgufCheckpoint extends Checkpoint {
  layout: "gguf";
  /** The open file: `gguf.metadata` is the typed KV accessor, `gguf.header` the raw header. */
  gguf: GgufFile;
  /** A tensor by its GGUF name, decoded to F32 in GGUF row order (no un-permutation). */
  readGgufTensor(name: string): Promise<Float32Array>;
}

/** ggml types whose bytes are already a dense dtype lmpack carries. */
const PASS_THROUGH: ReadonlyMap<number, DType> = new Map([[0, "F32"], [1, "F16"], [30, "BF16"]]);

export async function openGgufCheckpoint(path: string): Promise<GgufCheckpoint> {
  return ggufCheckpoint(await GgufFile.open(path));
}

/** An open GGUF file (from a path or, in tests and fuzz targets, a buffer) as a checkpoint; closes it on failure. */
export async function ggufCheckpoint(file: GgufFile): Promise<GgufCheckpoint> {
  const path = file.path;
  try {
    const llama = file.metadata.string("general.architecture") === "llama";
    const rawConfig = llama ? llamaConfig(file) : undefined;
    const config = rawConfig === undefined ? undefined : normaliseConfig(rawConfig, path);
    return {
      layout: "gguf",
      location: path,
      files: [path],
      config,
      rawConfig,
      rawConfigText: rawConfig === undefined ? undefined : `${JSON.stringify(rawConfig, null, 2)}\n`,
      sideFiles: new Map(),
      metadata: file.metadata.toStrings(),
      // Arrays of --keep-packed tensors are not tensors of the model: they come back as packed entries.
      tensors: [...file.tensors.filter((info) => !isKeptPart(info.name)).map((info) => entry(file, info, config)), ...keptEntries(file)],
      gguf: file,
      readGgufTensor: async (name) => decode(file.tensor(name), await file.read(name)),
      close: () => file.close(),
    };
  } catch (error) {
    await file.close();
    throw error;
  }
}

function decode(t: GgufTensorInfo, bytes: Uint8Array): Float32Array {
  const out = new Float32Array(bytes.length / t.codec.typeSize * t.codec.blockSize);
  t.codec.dequantize(bytes, bytes.length / t.codec.typeSize, out);
  return out;
}

function entry(file: GgufFile, t: GgufTensorInfo, config: ModelConfig | undefined): TensorEntry {
  const hfName = config === undefined ? undefined : ggufToHfName(t.name);
  const which = hfName === undefined ? undefined : qkPermutation(t.name);
  const nHead = which === "q" ? config!.numHeads : which === "k" ? config!.numKvHeads : 0;
  const rows = t.shape[0] ?? 1;
  if (which !== undefined && (t.shape.length > 2 || !canPermuteQk(rows, nHead))) {
    throw new FormatError("SHAPE_INVALID", `rows do not split into ${nHead} heads of an even size, so Q/K cannot be un-permuted`, { file: file.path, tensor: t.name, byteOffset: t.infoByteOffset, expected: `rows a multiple of ${2 * nHead}`, actual: t.shape });
  }
  const dtype = PASS_THROUGH.get(t.type) ?? "F32";
  const elementBytes = dtype === "F32" ? 4 : 2;
  /** The whole tensor in HF terms: the entry's dtype, HF row order. */
  const read = async (): Promise<Uint8Array> => {
    const stored = await file.read(t.name);
    const dense = PASS_THROUGH.has(t.type) ? stored : bytesOf(decode(t, stored));
    return which === undefined ? dense : unpermuteQk(dense, rows, nHead);
  };
  const packed = intGroupView(file, t, hfName, which === undefined ? undefined : { rows, nHead });
  return {
    name: hfName ?? t.name,
    representation: packed === undefined ? "dense" : "int-group",
    ...(packed === undefined ? {} : { packed }),
    dtype,
    shape: t.shape,
    nElements: t.nElements,
    byteLength: t.nElements * elementBytes,
    file: file.path,
    byteOffset: t.byteOffset,
    // ggmlType and storedBytes let inspect show what the file holds, not the dequantized view.
    notes: { ggufName: t.name, ggmlType: t.codec.name, storedBytes: t.byteLength },
    read,
    readChunks: (maxChunkBytes = DEFAULT_CHUNK_BYTES, ring?: BufferRing) => {
      if (which !== undefined) return sliced(read, maxChunkBytes, elementBytes);
      if (PASS_THROUGH.has(t.type)) return file.readChunks(t.name, maxChunkBytes, ring);
      return dequantizedChunks(file, t, maxChunkBytes);
    },
  };
}

/**
 * Decoder linears stored as Q4_0 or Q8_0 are integer codes with a scale per 32 columns: they are
 * also offered as int-group tensors, so `convert --to hf-gptq` (or any integer layout) moves the
 * codes instead of requantizing (ggml-to-int.ts). Q4_1 stays dense: whether its mins are integer
 * zero points is known only from the data.
 */
function intGroupView(file: GgufFile, t: GgufTensorInfo, hfName: string | undefined, permuted: { rows: number; nHead: number } | undefined): PackedIntGroup | undefined {
  const type = t.codec.name;
  if (hfName === undefined || !isDecoderLinear(hfName) || t.shape.length !== 2 || (type !== "Q4_0" && type !== "Q8_0")) return undefined;
  const [rows, cols] = t.shape as [number, number];
  const bits = type === "Q8_0" ? 8 : 4;
  // Written by lmpack's exporter when the codes came from integer groups; otherwise a block is a group.
  const recorded = file.metadata.integer(INT_GROUP_SIZE_KEY);
  const groupSize = recorded !== undefined && recorded % 32 === 0 && cols % recorded === 0 ? recorded : 32;
  return {
    representation: "int-group",
    params: { bits, groupSize, sym: true, scaleDtype: "F16" },
    outFeatures: rows,
    inFeatures: cols,
    actOrder: false,
    storedBytes: t.byteLength,
    sourceLayout: "gguf",
    load: async () => {
      let rowOrder: ((row: number) => number) | undefined;
      if (permuted !== undefined) {
        const hfRowOf = new Int32Array(rows);
        for (let h = 0; h < rows; h++) hfRowOf[permutedRow(h, rows, permuted.nHead)] = h;
        rowOrder = (row) => hfRowOf[row]!;
      }
      const tensor = ggmlToIntGroup(type, await file.read(t.name), rows, cols, rowOrder, groupSize);
      if (tensor === undefined) throw new FormatError("PACKED_VALUE_INVALID", `${INT_GROUP_SIZE_KEY} says groups of ${groupSize} columns, but the blocks of a group carry different scales`, { file: file.path, tensor: t.name, byteOffset: t.byteOffset });
      return tensor;
    },
  };
}

function bytesOf(x: Float32Array): Uint8Array {
  return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
}

/** A permuted tensor must be whole in memory to reorder its rows; it is then handed out in slices. */
async function* sliced(read: () => Promise<Uint8Array>, maxChunkBytes: number, elementBytes: number): AsyncGenerator<Uint8Array> {
  const bytes = await read();
  const step = Math.max(elementBytes, maxChunkBytes - (maxChunkBytes % elementBytes));
  for (let at = 0; at < bytes.length; at += step) yield bytes.subarray(at, Math.min(bytes.length, at + step));
}

/** Quantized data, dequantized a run of whole blocks at a time (F32 output at most `maxChunkBytes`). */
async function* dequantizedChunks(file: GgufFile, t: GgufTensorInfo, maxChunkBytes: number): AsyncGenerator<Uint8Array> {
  const blocksPerChunk = Math.max(1, Math.floor(maxChunkBytes / (t.codec.blockSize * 4)));
  for await (const stored of file.readChunks(t.name, blocksPerChunk * t.codec.typeSize)) yield bytesOf(decode(t, stored));
}

/**
 * transformers' LlamaConfig from the `llama.*` keys (llama.cpp's llama_model::load_hparams reads
 * the same keys the other way). Absent optional keys are left out, so normaliseConfig applies
 * transformers' defaults.
 */
function llamaConfig(file: GgufFile): Record<string, unknown> {
  const meta = file.metadata;
  const key = (name: string): string => `llama.${name}`;
  const hidden = meta.integer(key("embedding_length"));
  const heads = uniform(meta, key("attention.head_count"));
  const kvHeads = uniform(meta, key("attention.head_count_kv")) ?? heads;
  const headDim = meta.integer(key("attention.key_length")) ?? meta.integer(key("rope.dimension_count"));
  const vocab = meta.integer(key("vocab_size")) ?? meta.array("tokenizer.ggml.tokens")?.items.length ?? (file.has("token_embd.weight") ? file.tensor("token_embd.weight").shape[0] : undefined);
  const scalingType = meta.string(key("rope.scaling.type"));
  const scalingFactor = float(meta, key("rope.scaling.factor"));
  const raw = {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: hidden,
    intermediate_size: uniform(meta, key("feed_forward_length")),
    num_hidden_layers: meta.integer(key("block_count")),
    num_attention_heads: heads,
    num_key_value_heads: kvHeads,
    // Only when it differs from hidden/heads, as transformers writes it.
    head_dim: headDim !== undefined && hidden !== undefined && heads !== undefined && headDim * heads !== hidden ? headDim : undefined,
    rms_norm_eps: float(meta, key("attention.layer_norm_rms_epsilon")),
    rope_theta: float(meta, key("rope.freq_base")),
    rope_scaling: scalingType !== undefined && scalingType !== "none" && scalingFactor !== undefined && scalingFactor > 0
      ? { rope_type: scalingType, factor: scalingFactor, original_max_position_embeddings: meta.integer(key("rope.scaling.original_context_length")) }
      : undefined,
    max_position_embeddings: meta.integer(key("context_length")),
    vocab_size: vocab,
    // llama.cpp re-uses token_embd as the output matrix when output.weight is absent.
    tie_word_embeddings: !file.has("output.weight"),
    attention_bias: file.has("blk.0.attn_q.bias"),
    bos_token_id: meta.integer("tokenizer.ggml.bos_token_id"),
    eos_token_id: meta.integer("tokenizer.ggml.eos_token_id"),
    pad_token_id: meta.integer("tokenizer.ggml.padding_token_id"),
  };
  // Drop the absent keys, so rawConfig is exactly what config.json says.
  return JSON.parse(JSON.stringify(raw)) as Record<string, unknown>;
}

/** A float KV as the short decimal it was written from (f32 1e-5, not 9.999999747378752e-06). */
function float(meta: GgufMetadata, key: string): number | undefined {
  const v = meta.get(key);
  return v?.type === GgufType.FLOAT32 ? formatFloat32(v.value) : meta.number(key);
}

/** An integer KV that may also be a per-layer array; a config.json needs one value for all layers. */
function uniform(meta: GgufMetadata, key: string): number | undefined {
  const v = meta.get(key);
  if (v?.type !== GgufType.ARRAY) return meta.integer(key);
  const values = new Set(Array.from(v.items as ArrayLike<number | bigint>, Number));
  if (values.size !== 1 || !(v.items instanceof Uint32Array || v.items instanceof Int32Array)) {
    throw new FormatError("CONFIG_INVALID", "per-layer values differ (or are not 32-bit integers): a config.json cannot express them", { file: meta.file, tensor: key, expected: "one value for every layer", actual: [...values].slice(0, 8) });
  }
  return [...values][0];
}
