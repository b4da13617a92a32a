import { GgufType, type GgufValue } from "../../converters/gguf/layout.js";
import { ggufBytes } from "../../converters/gguf/writer.js";
import { ggmlCodecByName, ggmlCodecs } from "../../formats/ggml/registry.js";

/**
 * GGUF seeds for the fuzzer, built with lmpack's own writer: a tiny llama (the metadata the
 * importer turns into a config, Q/K tensors it un-permutes, Q4_0/Q8_0 linears it offers as
 * integer groups, a K-quant, pass-through F16/F32/BF16) and a file with one row of every ggml
 * type lmpack decodes plus one KV of every value type, nested arrays included.
 */

/** Deterministic filler bytes (the codecs decode any bit pattern; the fuzzer mutates them anyway). */
function filler(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

function tensor(name: string, typeName: string, shape: number[], seed: number) {
  const codec = ggmlCodecByName(typeName)!;
  const elements = shape.reduce((a, b) => a * b, 1);
  return { name, type: codec.id, shape, bytes: filler((elements / codec.blockSize) * codec.typeSize, seed) };
}

const u32 = (value: number): GgufValue => ({ type: GgufType.UINT32, value });
const f32 = (value: number): GgufValue => ({ type: GgufType.FLOAT32, value });
const str = (value: string): GgufValue => ({ type: GgufType.STRING, value });

function llamaSeed(): Uint8Array {
  const tokens = ["<unk>", "<s>", "</s>", "▁a", "▁b", "a", "b", "<0x0A>"];
  const metadata = new Map<string, GgufValue>([
    ["general.architecture", str("llama")],
    ["general.name", str("fuzz seed")],
    ["llama.embedding_length", u32(64)],
    ["llama.block_count", u32(1)],
    ["llama.feed_forward_length", u32(256)],
    ["llama.attention.head_count", u32(4)],
    ["llama.attention.head_count_kv", u32(2)],
    ["llama.context_length", u32(128)],
    ["llama.rope.freq_base", f32(10000)],
    ["llama.attention.layer_norm_rms_epsilon", f32(1e-5)],
    ["llama.vocab_size", u32(tokens.length)],
    ["tokenizer.ggml.model", str("llama")],
    ["tokenizer.ggml.tokens", { type: GgufType.ARRAY, itemType: GgufType.STRING, items: tokens }],
    ["tokenizer.ggml.scores", { type: GgufType.ARRAY, itemType: GgufType.FLOAT32, items: new Float32Array(tokens.length).fill(-1000) }],
    ["tokenizer.ggml.bos_token_id", u32(1)],
    ["lmpack.int_group.group_size", u32(32)],
  ]);
  return ggufBytes(metadata, [
    tensor("token_embd.weight", "F16", [tokens.length, 64], 1),
    tensor("blk.0.attn_norm.weight", "BF16", [64], 2),
    tensor("blk.0.attn_q.weight", "Q4_0", [64, 64], 3),
    tensor("blk.0.attn_k.weight", "Q8_0", [32, 64], 4),
    tensor("blk.0.ffn_down.weight", "Q4_K", [2, 256], 5),
    tensor("output_norm.weight", "F32", [64], 6),
  ]);
}

function allTypesSeed(): Uint8Array {
  const nested: GgufValue = {
    type: GgufType.ARRAY,
    itemType: GgufType.ARRAY,
    items: [
      { type: GgufType.ARRAY, itemType: GgufType.INT64, items: BigInt64Array.of(-1n, 2n ** 40n) },
      { type: GgufType.ARRAY, itemType: GgufType.BOOL, items: [true, false] },
    ],
  };
  const metadata = new Map<string, GgufValue>([
    ["general.architecture", str("fuzz")],
    ["general.alignment", u32(64)],
    ["v.u8", { type: GgufType.UINT8, value: 255 }],
    ["v.i8", { type: GgufType.INT8, value: -128 }],
    ["v.u16", { type: GgufType.UINT16, value: 65535 }],
    ["v.i16", { type: GgufType.INT16, value: -32768 }],
    ["v.i32", { type: GgufType.INT32, value: -1 }],
    ["v.f32", f32(0.1)],
    ["v.bool", { type: GgufType.BOOL, value: true }],
    ["v.u64", { type: GgufType.UINT64, value: 2n ** 63n }],
    ["v.i64", { type: GgufType.INT64, value: -(2n ** 63n) }],
    ["v.f64", { type: GgufType.FLOAT64, value: Math.PI }],
    ["v.nested", nested],
    ["v.u8s", { type: GgufType.ARRAY, itemType: GgufType.UINT8, items: Uint8Array.of(1, 2, 3) }],
  ]);
  const tensors = ggmlCodecs().map((codec, i) => tensor(`t.${codec.name.toLowerCase()}`, codec.name, [1, codec.blockSize], 100 + i));
  return ggufBytes(metadata, tensors);
}

export function ggufSeeds(): Record<string, Uint8Array> {
  const v3 = llamaSeed();
  // Version 2 has the same layout as 3 (64-bit counts and lengths); version 1's 32-bit ones are left to mutations.
  const v2 = v3.slice();
  new DataView(v2.buffer).setUint32(4, 2, true);
  return { "llama-v3.gguf": v3, "llama-v2.gguf": v2, "all-types.gguf": allTypesSeed() };
}
