import { suite } from "uvu";
import * as assert from "uvu/assert";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ggmlCodec } from "../../formats/ggml/registry.js";
import type { TensorEntry } from "../../converters/checkpoint.js";
import { openCheckpoint } from "../../converters/open.js";
import { openGgufCheckpoint, type GgufCheckpoint } from "../../converters/gguf/import.js";
import { ggufToHfName, hfToGgufName, permuteQk, qkPermutation, unpermuteQk } from "../../converters/gguf/names.js";
import { SafetensorsFile } from "../../converters/safetensors/reader.js";
import { CLI, SHARED_DIR, sharedModel, tempDir } from "../helpers/paths.js";
import { mulberry32 } from "../helpers/prng.js";

/**
 * GGUF → Checkpoint. Raw decoding (GGUF names and row order) must equal gguf-py's dequantization
 * bit for bit; the HF view of the F16 file must equal the HF checkpoint it was converted from;
 * the v1 llama2.c file must equal its original llama2.c weights; and the CLI converts a GGUF file.
 */

const GGUF_DIR = join(SHARED_DIR, "checkpoints", "gguf");
const F16 = join(GGUF_DIR, "tinystories-656K-f16.gguf");
const Q8 = join(GGUF_DIR, "tinystories-656K-q8_0.gguf");
const V1 = join(sharedModel("stories260K"), "stories260K-f32.gguf");
const HF_MODEL = join(sharedModel("tinystories-656K"), "model.safetensors");

const bytesOf = (x: Float32Array): Uint8Array => new Uint8Array(x.buffer, x.byteOffset, x.byteLength);

/** An entry's data widened to F32 (F16/BF16 pass through the importer in their own dtype). */
async function asF32(entry: TensorEntry): Promise<Float32Array> {
  const bytes = await entry.read();
  if (entry.dtype === "F32") return new Float32Array(bytes.slice().buffer);
  const codec = ggmlCodec(entry.dtype === "F16" ? 1 : 30)!;
  const out = new Float32Array(entry.nElements);
  codec.dequantize(bytes, entry.nElements, out);
  return out;
}

async function withCheckpoint(path: string, run: (c: GgufCheckpoint) => Promise<void>): Promise<void> {
  const checkpoint = await openGgufCheckpoint(path);
  try {
    await run(checkpoint);
  } finally {
    await checkpoint.close();
  }
}

// ---------------------------------------------------------------------------------------------

const names = suite("gguf names and Q/K permutation");

names("llama names map both ways; unknown names have no mapping", () => {
  const pairs: [string, string][] = [
    ["token_embd.weight", "model.embed_tokens.weight"],
    ["output_norm.weight", "model.norm.weight"],
    ["output.weight", "lm_head.weight"],
    ["blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight"],
    ["blk.1.attn_q.weight", "model.layers.1.self_attn.q_proj.weight"],
    ["blk.1.attn_q.bias", "model.layers.1.self_attn.q_proj.bias"],
    ["blk.2.attn_k.weight", "model.layers.2.self_attn.k_proj.weight"],
    ["blk.3.attn_v.weight", "model.layers.3.self_attn.v_proj.weight"],
    ["blk.4.attn_output.weight", "model.layers.4.self_attn.o_proj.weight"],
    ["blk.5.ffn_norm.weight", "model.layers.5.post_attention_layernorm.weight"],
    ["blk.6.ffn_gate.weight", "model.layers.6.mlp.gate_proj.weight"],
    ["blk.7.ffn_up.weight", "model.layers.7.mlp.up_proj.weight"],
    ["blk.31.ffn_down.weight", "model.layers.31.mlp.down_proj.weight"],
  ];
  for (const [gguf, hf] of pairs) {
    assert.is(ggufToHfName(gguf), hf);
    assert.is(hfToGgufName(hf), gguf);
  }
  for (const name of ["rope_freqs.weight", "blk.0.attn_qkv.weight", "token_embd", "blk.x.attn_q.weight"]) assert.is(ggufToHfName(name), undefined, name);
  for (const name of ["model.layers.0.mlp.fc1.weight", "model.rotary_emb.inv_freq", "lm_head"]) assert.is(hfToGgufName(name), undefined, name);
  assert.is(qkPermutation("blk.3.attn_q.weight"), "q");
  assert.is(qkPermutation("blk.3.attn_k.bias"), "k");
  assert.is(qkPermutation("blk.3.attn_v.weight"), undefined);
});

/** numpy, literally: W.reshape(nHead, 2, half, K).swapaxes(1, 2).reshape(rows, K) (convert_hf_to_gguf). */
function numpyPermute(w: Float32Array, rows: number, cols: number, nHead: number): Float32Array {
  const half = rows / nHead / 2;
  const out = new Float32Array(w.length);
  for (let h = 0; h < nHead; h++) for (let j = 0; j < half; j++) for (let t = 0; t < 2; t++) for (let c = 0; c < cols; c++) {
    out[((h * half + j) * 2 + t) * cols + c] = w[((h * 2 + t) * half + j) * cols + c]!;
  }
  return out;
}

/** torch, literally: w.view(nHead, half, 2, K).transpose(1, 2).reshape(rows, K) (transformers' convert_llama_weights_to_hf). */
function torchMetaToHf(w: Float32Array, rows: number, cols: number, nHead: number): Float32Array {
  const half = rows / nHead / 2;
  const out = new Float32Array(w.length);
  for (let h = 0; h < nHead; h++) for (let t = 0; t < 2; t++) for (let j = 0; j < half; j++) for (let c = 0; c < cols; c++) {
    out[((h * 2 + t) * half + j) * cols + c] = w[((h * half + j) * 2 + t) * cols + c]!;
  }
  return out;
}

names("permuteQk is convert_hf_to_gguf's reshape/swapaxes; unpermuteQk is its inverse and transformers' Meta→HF", () => {
  const rng = mulberry32(0x9e7a);
  for (const [rows, cols, nHead] of [[128, 128, 8], [64, 128, 4], [32, 64, 4], [16, 3, 1], [8, 1, 4]] as const) {
    const w = Float32Array.from({ length: rows * cols }, () => rng() - 0.5);
    const p = permuteQk(w, rows, nHead);
    assert.equal(p, numpyPermute(w, rows, cols, nHead), `${rows}x${cols}/${nHead}`);
    assert.equal(unpermuteQk(p, rows, nHead), w);
    assert.equal(unpermuteQk(w, rows, nHead), torchMetaToHf(w, rows, cols, nHead));
  }
  assert.throws(() => permuteQk(new Float32Array(12), 12, 8), RangeError);
});

// ---------------------------------------------------------------------------------------------

const raw = suite("gguf raw decode vs gguf-py");

for (const [label, path] of [["F16", F16], ["Q8_0", Q8]] as const) {
  raw(`${label}: every tensor decodes to the exact F32 bits of *.dequant.safetensors`, async () => {
    const reference = await SafetensorsFile.open(path.replace(/\.gguf$/, ".dequant.safetensors"));
    try {
      await withCheckpoint(path, async (c) => {
        assert.equal(c.gguf.tensors.map((t) => t.name), reference.tensors.map((t) => t.name), "names, in order");
        for (const t of c.gguf.tensors) {
          assert.equal(t.shape, reference.tensor(t.name).shape, t.name);
          const ours = bytesOf(await c.readGgufTensor(t.name));
          assert.ok(Buffer.from(ours).equals(await reference.read(t.name)), `${t.name} (${t.codec.name})`);
        }
      });
    } finally {
      await reference.close();
    }
  });
}

// ---------------------------------------------------------------------------------------------

const hf = suite("gguf as an HF checkpoint");

hf("F16 file = the HF fp32 weights exactly, every tensor (Q/K un-permuted, tied head stored as lm_head)", async () => {
  const model = await SafetensorsFile.open(HF_MODEL);
  try {
    await withCheckpoint(F16, async (c) => {
      assert.is(c.layout, "gguf");
      const hfName = (name: string): string => (name === "model.embed_tokens.weight" ? "lm_head.weight" : name);
      assert.equal(c.tensors.map((t) => hfName(t.name)).sort(), model.tensors.map((t) => t.name).sort());
      for (const entry of c.tensors) {
        const theirs = model.tensor(hfName(entry.name));
        assert.equal(entry.shape, theirs.shape, entry.name);
        assert.ok(Buffer.from(bytesOf(await asF32(entry))).equals(await model.read(theirs.name)), entry.name);
      }
      const config = JSON.parse(readFileSync(join(sharedModel("tinystories-656K"), "config.json"), "utf8")) as Record<string, unknown>;
      for (const key of ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "rms_norm_eps", "rope_theta", "max_position_embeddings", "vocab_size", "tie_word_embeddings", "bos_token_id", "eos_token_id"]) {
        assert.is(c.rawConfig?.[key], config[key], key);
      }
      assert.is(c.config?.headDim, 16);
      assert.is(c.metadata["general.file_type"], "1");
      assert.is(c.gguf.metadata.array("tokenizer.ggml.scores")?.items.length, 2048);
    });
  } finally {
    await model.close();
  }
});

hf("Q8_0 file: HF names and order, data = un-permuted raw decode, chunked reads = whole reads", async () => {
  await withCheckpoint(Q8, async (c) => {
    const f16 = await openGgufCheckpoint(F16);
    try {
      assert.equal(c.tensors.map((t) => [t.name, t.shape]), f16.tensors.map((t) => [t.name, t.shape]));
    } finally {
      await f16.close();
    }
    for (const entry of c.tensors) {
      const ggufName = String(entry.notes?.["ggufName"]);
      const decoded = await c.readGgufTensor(ggufName);
      const which = qkPermutation(ggufName);
      const expected = which === undefined ? decoded : unpermuteQk(decoded, entry.shape[0]!, which === "q" ? 8 : 4);
      const whole = await entry.read();
      assert.ok(Buffer.from(whole).equals(bytesOf(expected)), entry.name);
      const chunks: Uint8Array[] = [];
      for await (const chunk of entry.readChunks(1000)) {
        assert.ok(chunk.length <= 1000 && chunk.length % 4 === 0, `${entry.name}: chunk of ${chunk.length}`);
        chunks.push(chunk.slice());
      }
      assert.ok(Buffer.concat(chunks).equals(whole), `${entry.name} chunked`);
    }
  });
});

hf("v1 stories260K: shapes of the llama2.c header, raw tensors = the llama2.c weights, Q/K = transformers' Meta→HF", async () => {
  // llama2.c legacy layout: 7 int32 (dim, hidden, layers, heads, kv_heads, vocab, seq), then fp32 arrays, layer-major.
  const bin = readFileSync(join(sharedModel("stories260K"), "stories260K.bin"));
  const [dim, hidden, layers, heads, kvHeads, vocab] = Array.from({ length: 7 }, (_, i) => bin.readInt32LE(4 * i)) as [number, number, number, number, number, number];
  assert.equal([dim, hidden, layers, heads, kvHeads, vocab], [64, 172, 5, 8, 4, 512]);
  const weights = new Float32Array(bin.buffer.slice(bin.byteOffset + 28, bin.byteOffset + bin.length));
  let at = 0;
  const take = (n: number, per: number): Float32Array[] => Array.from({ length: n }, () => weights.subarray(at, (at += per)));
  const kvDim = (dim / heads) * kvHeads;
  const [embedding] = take(1, vocab * dim);
  const [attnNorm, wq, wk, wv, wo, ffnNorm, w1, w2, w3] = [dim, dim * dim, dim * kvDim, dim * kvDim, dim * dim, dim, dim * hidden, hidden * dim, dim * hidden].map((per) => take(layers, per));
  const [finalNorm] = take(1, dim);
  const source: Record<string, Float32Array> = { "token_embd.weight": embedding!, "output.weight": embedding!, "output_norm.weight": finalNorm! };
  const perLayer = { attn_norm: attnNorm, attn_q: wq, attn_k: wk, attn_v: wv, attn_output: wo, ffn_norm: ffnNorm, ffn_gate: w1, ffn_down: w2, ffn_up: w3 };
  for (let l = 0; l < layers; l++) for (const [stem, arrays] of Object.entries(perLayer)) source[`blk.${l}.${stem}.weight`] = arrays![l]!;

  await withCheckpoint(V1, async (c) => {
    assert.is(c.gguf.header.version, 1);
    const cfg = c.config!;
    assert.equal([cfg.hiddenSize, cfg.intermediateSize, cfg.numLayers, cfg.numHeads, cfg.numKvHeads, cfg.vocabSize, cfg.headDim, cfg.tiedEmbeddings], [64, 172, 5, 8, 4, 512, 8, false]);
    assert.is(c.tensors.length, 48);
    const shapes = Object.fromEntries(c.tensors.map((t) => [t.name, t.shape]));
    assert.equal(shapes["model.embed_tokens.weight"], [512, 64]);
    assert.equal(shapes["lm_head.weight"], [512, 64]);
    assert.equal(shapes["model.norm.weight"], [64]);
    for (let l = 0; l < layers; l++) {
      const p = `model.layers.${l}.`;
      assert.equal([shapes[`${p}self_attn.q_proj.weight`], shapes[`${p}self_attn.k_proj.weight`], shapes[`${p}self_attn.v_proj.weight`], shapes[`${p}self_attn.o_proj.weight`]], [[64, 64], [32, 64], [32, 64], [64, 64]]);
      assert.equal([shapes[`${p}mlp.gate_proj.weight`], shapes[`${p}mlp.up_proj.weight`], shapes[`${p}mlp.down_proj.weight`]], [[172, 64], [172, 64], [64, 172]]);
      assert.equal([shapes[`${p}input_layernorm.weight`], shapes[`${p}post_attention_layernorm.weight`]], [[64], [64]]);
    }
    for (const t of c.gguf.tensors) assert.equal(await c.readGgufTensor(t.name), source[t.name], t.name);
    for (const entry of c.tensors) {
      const ggufName = String(entry.notes?.["ggufName"]);
      const which = qkPermutation(ggufName);
      const expected = which === undefined ? source[ggufName]! : torchMetaToHf(source[ggufName]!, entry.shape[0]!, dim, which === "q" ? heads : kvHeads);
      assert.equal(await asF32(entry), expected, entry.name);
    }
  });
});

hf("openCheckpoint recognises GGUF by its magic; the CLI converts it to f32 safetensors", async () => {
  const c = await openCheckpoint(F16);
  assert.is(c.layout, "gguf");
  await c.close();
  const dir = await tempDir("lmpack-gguf-cli-");
  try {
    const out = join(dir.path, "model");
    const r = spawnSync(process.execPath, [CLI, "convert", F16, "--to", "safetensors", "--dtype", "f32", "--out", out], { encoding: "utf8" });
    assert.is(r.status, 0, r.stderr);
    const converted = await openCheckpoint(out);
    const model = await SafetensorsFile.open(HF_MODEL);
    try {
      assert.is(converted.config?.tiedEmbeddings, true);
      assert.is(converted.tensors.length, 20);
      for (const entry of converted.tensors) {
        assert.is(entry.dtype, "F32", entry.name);
        const theirs = entry.name === "model.embed_tokens.weight" ? "lm_head.weight" : entry.name;
        assert.ok(Buffer.from(await entry.read()).equals(await model.read(theirs)), entry.name);
      }
    } finally {
      await converted.close();
      await model.close();
    }
  } finally {
    await dir.cleanup();
  }
});

names.run();
raw.run();
hf.run();
