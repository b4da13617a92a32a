import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { Checkpoint, PackedIntGroup, TensorEntry } from "../../converters/checkpoint.js";
import { writeHessianStore } from "../../converters/hessians/store.js";
import { normaliseConfig, parseConfigJson } from "../../converters/hf/config.js";
import { exportLmpack } from "../../converters/lmpack/export.js";
import { encodeNotes } from "../../converters/lmpack/notes.js";
import { encodeMatMulNBitsLayer } from "../../converters/onnx/export-layer.js";
import { openCheckpoint } from "../../converters/open.js";
import { openSafetensorsCheckpoint } from "../../converters/safetensors/import.js";
import type { IntGroupTensor } from "../../formats/int-group/types.js";
import { FIXTURE_MODEL, REPO_ROOT, SHARED_DIR, tempDir } from "../../test/helpers/paths.js";
import { ggufSeeds } from "./seeds-gguf.js";
import { fixtureSubset, tokenizerSeeds } from "./seeds-small.js";

/**
 * Regenerates the committed seed corpora, bench/fuzz/seeds/<target>/: a few small valid inputs per
 * target, made by lmpack's own writers from the fixture model and the shared packed checkpoints
 * (../shared/checkpoints), so the fuzzer starts from files that reach deep into each reader. Seeds
 * are kept small (the whole set is well under 200 KB): the fuzzer mutates them, it does not need
 * real sizes. Deterministic: the same sources give the same bytes.
 *
 *   node dist/bench/fuzz/seeds.js
 */

const SEEDS_DIR = join(REPO_ROOT, "bench", "fuzz", "seeds");
const PACKED = ["gptq-4bit", "fp6", "spqr", "vptq"].map((m) => join(SHARED_DIR, "checkpoints", `tinystories-656K-${m}`));

type Seeds = Record<string, Uint8Array>;

async function main(): Promise<void> {
  const work = await tempDir("lmpack-fuzz-seeds-");
  try {
    const targets: Record<string, Seeds> = {
      safetensors: { "fixture-subset.safetensors": fixtureSubset(), "hessians.safetensors": await hessianStoreSeed(work.path) },
      lmpack: await lmpackSeeds(work.path),
      "lmpack-notes": notesSeeds(),
      gguf: ggufSeeds(),
      onnx: await onnxSeeds(),
      "hf-config": configSeeds(),
      tokenizer: tokenizerSeeds(),
      "quip-hessian": quipSeeds(),
    };
    let total = 0;
    for (const [target, seeds] of Object.entries(targets)) {
      const dir = join(SEEDS_DIR, target);
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir, { recursive: true });
      for (const [name, bytes] of Object.entries(seeds)) writeFileSync(join(dir, name), bytes);
      const bytes = Object.values(seeds).reduce((sum, s) => sum + s.length, 0);
      total += bytes;
      console.log(`${target}: ${Object.keys(seeds).length} seeds, ${bytes} bytes`);
    }
    console.log(`total ${total} bytes`);
  } finally {
    await work.cleanup();
  }
}

async function hessianStoreSeed(dir: string): Promise<Uint8Array> {
  const square = (k: number, base: number) => ({ size: k, data: Float64Array.from({ length: k * k }, (_, i) => (i % (k + 1) === 0 ? base : 1 / (1 + i))), nSamples: 128 });
  const path = join(dir, "hessians.safetensors");
  await writeHessianStore(path, [
    { name: "model.layers.0.self_attn.q_proj", aliases: ["model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.v_proj"], hessian: square(4, 2) },
    { name: "model.layers.0.mlp.down_proj", aliases: [], hessian: square(3, 5) },
  ], "fuzz seed");
  return readFile(path);
}

/** A checkpoint narrowed to a few of its tensors (and no side files), for small containers. */
function narrowed(checkpoint: Checkpoint, tensors: TensorEntry[]): Checkpoint {
  return { ...checkpoint, tensors, sideFiles: new Map() };
}

async function lmpackSeeds(dir: string): Promise<Seeds> {
  const seeds: Seeds = {};
  const write = async (name: string, checkpoint: Checkpoint, checksum: "crc32" | "sha256") => {
    const path = join(dir, name);
    await exportLmpack(checkpoint, path, { checksum });
    seeds[name] = await readFile(path);
  };
  const subsetPath = join(dir, "subset.safetensors");
  writeFileSync(subsetPath, fixtureSubset());
  const dense = await openSafetensorsCheckpoint(subsetPath);
  const rawConfigText = readFileSync(join(FIXTURE_MODEL, "config.json"), "utf8");
  const rawConfig = parseConfigJson(rawConfigText, "config.json");
  await write("dense-sha256.lmpack", { ...dense, rawConfig, rawConfigText, config: normaliseConfig(rawConfig, "config.json") }, "sha256");
  await dense.close();
  for (const source of PACKED) {
    const checkpoint = await openCheckpoint(source);
    try {
      const packed = checkpoint.tensors.filter((t) => t.packed !== undefined).sort((a, b) => a.packed!.storedBytes - b.packed!.storedBytes)[0]!;
      const norm = checkpoint.tensors.find((t) => t.packed === undefined && t.shape.length === 1)!;
      await write(`${packed.packed!.representation}.lmpack`, narrowed(checkpoint, [norm, packed]), "crc32");
    } finally {
      await checkpoint.close();
    }
  }
  return seeds;
}

function notesSeeds(): Seeds {
  return {
    "provenance.msgpack": encodeNotes({ sourceLayout: "gptq-v1", quantMethod: "gptq", format: "gptq" }),
    "statistics.msgpack": encodeNotes({ sourceDtype: "BF16", relativeOutputError: 0.0123, bits: [4, 4, 3], outliers: { count: 17, share: 0.01 }, ok: true, none: null }),
    "typed-arrays.msgpack": encodeNotes({ rowError: Float32Array.of(0.5, 0.25, -1), counts: Uint16Array.of(1, 2, 65535), big: 2n ** 60n }),
  };
}

/** N rows of an int-group tensor (scales and zeros are [group][N], so they are re-strided). */
function firstRows(t: IntGroupTensor, rows: number): IntGroupTensor {
  const { outFeatures: N, inFeatures: K } = t;
  const groups = t.scales.length / N;
  const pick = <A extends Float32Array | Uint16Array>(a: A, make: (n: number) => A): A => {
    const out = make(groups * rows);
    for (let g = 0; g < groups; g++) for (let n = 0; n < rows; n++) out[g * rows + n] = a[g * N + n]!;
    return out;
  };
  return { ...t, outFeatures: rows, codes: t.codes.slice(0, rows * K), scales: pick(t.scales, (n) => new Float32Array(n)), zeros: pick(t.zeros, (n) => new Uint16Array(n)) };
}

async function onnxSeeds(): Promise<Seeds> {
  const checkpoint = await openCheckpoint(PACKED[0]!);
  try {
    const entry = checkpoint.tensors.find((t) => t.packed?.representation === "int-group" && t.shape[0] === t.shape[1])!;
    const tensor = firstRows(await (entry.packed as PackedIntGroup).load(), 16);
    // Asymmetric: one zero point off the default puts a zero_points initializer in the model.
    const zeros = tensor.zeros.slice();
    zeros[0] = zeros[0]! - 1;
    return {
      "sym-4bit.onnx": encodeMatMulNBitsLayer(tensor),
      "asym-4bit.onnx": encodeMatMulNBitsLayer({ ...tensor, params: { ...tensor.params, sym: false }, zeros }),
    };
  } finally {
    await checkpoint.close();
  }
}

function configSeeds(): Seeds {
  const text = (path: string) => new TextEncoder().encode(readFileSync(path, "utf8"));
  const json = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));
  const quantized = (quantizationConfig: unknown) => json({ hidden_size: 64, num_attention_heads: 4, num_hidden_layers: 1, vocab_size: 32, quantization_config: quantizationConfig });
  return {
    "fixture-config.json": text(join(FIXTURE_MODEL, "config.json")),
    ...Object.fromEntries(PACKED.map((dir) => [`${dir.replace(/^.*tinystories-656K-/, "")}-config.json`, text(join(dir, "config.json"))])),
    "quantize_config.json": text(join(PACKED[0]!, "quantize_config.json")),
    "gptq-dynamic.json": quantized({ quant_method: "gptq", bits: 4, group_size: 128, checkpoint_format: "gptq_v2", dynamic: { "-:.*down_proj": {}, "+:model\\.layers\\.0\\..*": { bits: 8, group_size: 64, sym: false } } }),
    "autoround-extra.json": quantized({ quant_method: "auto-round", bits: 2, group_size: 32, packing_format: "auto_round:auto_awq", extra_config: { "model.layers.0.self_attn.q_proj": { bits: 16 }, "mlp\\.down": { bits: 8, group_size: -1 } } }),
    "awq.json": quantized({ quant_method: "awq", w_bit: 4, q_group_size: 64, zero_point: true, version: "GEMM", modules_to_not_convert: ["lm_head"] }),
    "v5-rope.json": json({ hidden_size: 96, num_attention_heads: 6, num_key_value_heads: 2, head_dim: 16, num_hidden_layers: 2, vocab_size: 100, rope_parameters: { full_attention: { rope_type: "yarn", rope_theta: 1e6, factor: 4 } }, dtype: "bfloat16" }),
  };
}

function quipSeeds(): Seeds {
  const dir = join(REPO_ROOT, "test", "fixtures", "quip-hessians");
  const seeds: Seeds = {};
  for (const name of ["single/3_qkv.pt", "toy/0_o.pt", "variants/float64.pt", "variants/protocol4.pt", "variants/views.pt", "variants/legacy.pt"]) {
    seeds[name.replace("/", "-")] = readFileSync(join(dir, name));
  }
  return seeds;
}

await main();
