import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { SafetensorsWriter } from "../../converters/safetensors/writer.js";
import type { PackedArray } from "../../formats/packed-array.js";
import type { DType } from "../../formats/dtype.js";

/** A minimal Llama config (enough for normaliseConfig) plus the given quantization_config. */
export function tinyConfig(quantizationConfig: Record<string, unknown> | undefined): Record<string, unknown> {
  return {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: 64,
    intermediate_size: 128,
    num_attention_heads: 4,
    num_hidden_layers: 1,
    vocab_size: 32,
    torch_dtype: "float16",
    ...(quantizationConfig === undefined ? {} : { quantization_config: quantizationConfig }),
  };
}

export interface ArraySpec {
  name: string;
  dtype: DType;
  shape: number[];
  bytes: Uint8Array;
}

/** Writes an HF directory: config.json and one model.safetensors holding `arrays` in the given order. */
export async function writeHfDir(dir: string, config: Record<string, unknown>, arrays: ArraySpec[]): Promise<string> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, "config.json"), JSON.stringify(config, null, 2));
  const writer = await SafetensorsWriter.create(join(dir, "model.safetensors"), arrays.map(({ name, dtype, shape }) => ({ name, dtype, shape })), { format: "pt" });
  for (const a of arrays) await writer.write(a.name, a.bytes);
  await writer.finish();
  return dir;
}

/** The packed arrays of a golden case renamed to module `module`. */
export function renamed(arrays: Map<string, PackedArray>, module: string, parts: string[]): ArraySpec[] {
  return parts.filter((p) => arrays.has(p)).map((p) => {
    const a = arrays.get(p)!;
    return { name: `${module}.${p}`, dtype: a.dtype, shape: a.shape, bytes: a.bytes };
  });
}
