import { readdir } from "node:fs/promises";
import { basename, join } from "node:path";
import { FormatError } from "../../formats/errors.js";
import { MAX_CONFIG_BYTES, MAX_SIDE_FILE_BYTES, SIDE_FILE_NAMES, type Checkpoint, type SideFiles, type TensorEntry } from "../checkpoint.js";
import { fileExists, readJsonFile, readSmallFile } from "../io/json-file.js";
import { ioErrorFor } from "../io/random-access.js";
import { safetensorsEntries } from "../safetensors/import.js";
import { SafetensorsFile } from "../safetensors/reader.js";
import { normaliseConfig, parseConfigJson } from "./config.js";
import { groupIntLayers, summarise } from "../int-group/import-hf.js";
import { parseHfQuantConfig } from "../int-group/hf-quant-config.js";
import { FP6_TC_METHOD, fpxQuantizationSummary, parseHfFpxConfig } from "../fpx/hf-config.js";
import { groupFpxLayers } from "../fpx/import-hf.js";
import { parseHfSpqrConfig, spqrQuantizationSummary } from "../spqr/hf-config.js";
import { groupSpqrLayers } from "../spqr/import-hf.js";
import { parseHfVptqConfig, vptqQuantizationSummary } from "../vptq/hf-config.js";
import { groupVptqLayers } from "../vptq/import-hf.js";
import type { QuantizationSummary } from "../checkpoint.js";

export const SINGLE_WEIGHTS_FILE = "model.safetensors";
export const INDEX_FILE = "model.safetensors.index.json";
/** An index.json of a 1T-parameter model is ~10 MB; 64 MB bounds what a hostile one can cost. */
export const MAX_INDEX_BYTES = 64 * 1024 * 1024;

/**
 * A Hugging Face model directory: config.json, side files, and safetensors weights, either
 * one `model.safetensors`, shards listed by `model.safetensors.index.json`, or (for repos
 * that name files their own way) every `*.safetensors` in the folder.
 */
export async function openHfDirectory(dir: string, location = dir): Promise<Checkpoint> {
  const configPath = join(dir, "config.json");
  let rawConfig: Record<string, unknown> | undefined;
  let rawConfigText: string | undefined;
  if (await fileExists(configPath)) {
    rawConfigText = decodeUtf8(await readSmallFile(configPath, MAX_CONFIG_BYTES, "CONFIG_INVALID"), configPath);
    rawConfig = parseConfigJson(rawConfigText, configPath);
  }
  const config = rawConfig === undefined ? undefined : normaliseConfig(rawConfig, configPath);
  const sideFiles = await readSideFiles(dir);
  const indexPath = join(dir, INDEX_FILE);
  const weightMap = (await fileExists(indexPath)) ? await readWeightMap(indexPath) : undefined;
  const files = await openWeightFiles(dir, weightMap);
  try {
    let tensors = collectTensors(dir, files, weightMap);
    // Old AutoGPTQ repos keep the settings in quantize_config.json only.
    const quantConfigPath = rawConfig?.["quantization_config"] !== undefined ? configPath : join(dir, "quantize_config.json");
    const rawQuant = rawConfig?.["quantization_config"] ?? ((await fileExists(quantConfigPath)) ? { quant_method: "gptq", ...(await readJsonFile(quantConfigPath, MAX_CONFIG_BYTES, "CONFIG_INVALID") as object) } : undefined);
    let quantization: QuantizationSummary | undefined;
    const quantConfig = parseHfQuantConfig(rawQuant, quantConfigPath);
    const fpxConfig = parseHfFpxConfig(rawQuant, quantConfigPath);
    const spqrConfig = parseHfSpqrConfig(rawQuant, quantConfigPath);
    const vptqConfig = parseHfVptqConfig(rawQuant, quantConfigPath);
    if (quantConfig !== undefined) {
      tensors = groupIntLayers(tensors, quantConfig);
      quantization = summarise(quantConfig);
    } else if (fpxConfig !== undefined) {
      tensors = groupFpxLayers(tensors, fpxConfig);
      quantization = fpxQuantizationSummary(FP6_TC_METHOD, fpxConfig.format);
    } else if (spqrConfig !== undefined) {
      tensors = await groupSpqrLayers(tensors, spqrConfig, quantConfigPath);
      quantization = spqrQuantizationSummary("spqr");
    } else if (vptqConfig !== undefined) {
      tensors = groupVptqLayers(tensors, vptqConfig, quantConfigPath);
      const first = tensors.find((t) => t.packed?.representation === "vptq")?.packed;
      quantization = vptqQuantizationSummary("vptq", first?.representation === "vptq" ? first.params : undefined);
    }
    return {
      layout: "hf-safetensors",
      location,
      files: files.map((f) => f.path),
      config,
      rawConfig,
      rawConfigText,
      sideFiles,
      metadata: { ...(files[0]?.metadata ?? {}) },
      ...(quantization === undefined ? {} : { quantization }),
      tensors,
      close: async () => {
        await Promise.all(files.map((f) => f.close()));
      },
    };
  } catch (error) {
    await Promise.all(files.map((f) => f.close()));
    throw error;
  }
}

function decodeUtf8(bytes: Uint8Array, file: string): string {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch (cause) {
    throw new FormatError("CONFIG_INVALID", "not valid UTF-8", { file, cause });
  }
}

async function readSideFiles(dir: string): Promise<SideFiles> {
  const sideFiles: SideFiles = new Map();
  for (const name of SIDE_FILE_NAMES) {
    const path = join(dir, name);
    if (await fileExists(path)) sideFiles.set(name, await readSmallFile(path, MAX_SIDE_FILE_BYTES, "LAYOUT_UNKNOWN"));
  }
  return sideFiles;
}

async function openWeightFiles(dir: string, weightMap: Record<string, string> | undefined): Promise<SafetensorsFile[]> {
  let names: string[];
  if (weightMap !== undefined) {
    names = [...new Set(Object.values(weightMap))].sort();
  } else if (await fileExists(join(dir, SINGLE_WEIGHTS_FILE))) {
    names = [SINGLE_WEIGHTS_FILE];
  } else {
    let entries: string[];
    try {
      entries = await readdir(dir);
    } catch (cause) {
      throw ioErrorFor(cause, dir, "cannot list directory");
    }
    names = entries.filter((n) => n.endsWith(".safetensors")).sort();
    if (names.length === 0) {
      const hint = entries.some((n) => n.endsWith(".bin") || n.endsWith(".pth")) ? " (pickle .bin/.pth weights are not read: they can run code)" : "";
      throw new FormatError("LAYOUT_UNKNOWN", `no safetensors weights in the directory${hint}`, { file: dir });
    }
  }
  const files: SafetensorsFile[] = [];
  try {
    for (const name of names) files.push(await SafetensorsFile.open(join(dir, name)));
  } catch (error) {
    await Promise.all(files.map((f) => f.close()));
    throw error;
  }
  return files;
}

function collectTensors(dir: string, files: SafetensorsFile[], weightMap: Record<string, string> | undefined): TensorEntry[] {
  const indexPath = join(dir, INDEX_FILE);
  const tensors: TensorEntry[] = [];
  const owner = new Map<string, string>();
  for (const file of files) {
    const shard = basename(file.path);
    for (const entry of safetensorsEntries(file)) {
      const previous = owner.get(entry.name);
      if (previous !== undefined) {
        throw new FormatError("TENSOR_DUPLICATE", `tensor also stored in ${previous}`, { file: file.path, tensor: entry.name });
      }
      if (weightMap !== undefined && weightMap[entry.name] !== shard) {
        throw new FormatError("INDEX_INVALID", "shard holds a tensor the index does not map to it", { file: indexPath, tensor: entry.name, expected: shard, actual: weightMap[entry.name] ?? "absent" });
      }
      owner.set(entry.name, shard);
      tensors.push(entry);
    }
  }
  if (weightMap !== undefined) {
    for (const [name, shard] of Object.entries(weightMap)) {
      if (!owner.has(name)) throw new FormatError("TENSOR_MISSING", "index maps the tensor to a shard that does not hold it", { file: join(dir, shard), tensor: name });
    }
  }
  return tensors;
}

/** Reads `weight_map` (tensor → shard file name), refusing names that would leave the directory. */
export async function readWeightMap(indexPath: string): Promise<Record<string, string>> {
  const index = await readJsonFile(indexPath, MAX_INDEX_BYTES, "INDEX_INVALID");
  const map = (index as { weight_map?: unknown } | null)?.weight_map;
  if (typeof map !== "object" || map === null || Array.isArray(map)) {
    throw new FormatError("INDEX_INVALID", "index has no weight_map object", { file: indexPath });
  }
  const out: Record<string, string> = {};
  for (const [name, shard] of Object.entries(map)) {
    if (typeof shard !== "string" || !/^[^/\\]+\.safetensors$/.test(shard) || shard.startsWith(".")) {
      throw new FormatError("INDEX_INVALID", "weight_map values must be plain .safetensors file names in the same directory", { file: indexPath, tensor: name, actual: shard });
    }
    out[name] = shard;
  }
  return out;
}
