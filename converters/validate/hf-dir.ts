import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { FormatError } from "../../formats/errors.js";
import { MAX_CONFIG_BYTES, type TensorEntry } from "../checkpoint.js";
import { normaliseConfig, parseConfigJson, type ModelConfig } from "../hf/config.js";
import { INDEX_FILE, readWeightMap, SINGLE_WEIGHTS_FILE } from "../hf/import-local.js";
import { fileExists, readSmallFile } from "../io/json-file.js";
import type { RandomAccessSource } from "../io/random-access.js";
import { checkConfigTensors } from "./config-tensors.js";
import type { Findings } from "./findings.js";
import { checkHfQuantized } from "./hf-quant.js";
import { checkedEntries, checkSafetensorsFile } from "./safetensors.js";
import { closeAll, type ScanArray, type Validated } from "./types.js";

/**
 * A Hugging Face model directory: config.json, the weight index and every shard, the quantized
 * layers of whatever `quantization_config` declares (hf-quant.ts), then config ↔ tensors. Each
 * step reports and goes on: a broken config still lets the shards be checked, a broken shard
 * still lets the others be.
 */
export async function validateHfDirectory(dir: string, findings: Findings, deep: boolean): Promise<Validated> {
  const configPath = join(dir, "config.json");
  const { rawConfig, config } = await readConfig(configPath, findings);
  const weightMap = (await fileExists(join(dir, INDEX_FILE))) ? await findings.guard({ file: join(dir, INDEX_FILE) }, () => readWeightMap(join(dir, INDEX_FILE))) : undefined;
  const names = await weightFileNames(dir, weightMap, findings);
  const sources: RandomAccessSource[] = [];
  let tensors: TensorEntry[] = [];
  const owner = new Map<string, string>();
  for (const name of names) {
    const checked = await checkSafetensorsFile(join(dir, name), findings);
    if (checked === undefined) continue;
    sources.push(checked.source);
    for (const entry of checkedEntries(checked)) {
      const previous = owner.get(entry.name);
      if (previous !== undefined) {
        findings.add("TENSOR_DUPLICATE", `tensor also stored in ${previous}`, { file: entry.file, tensor: entry.name, byteOffset: entry.byteOffset });
        continue;
      }
      if (weightMap !== undefined && weightMap[entry.name] !== name) {
        findings.add("INDEX_INVALID", "shard holds a tensor the index does not map to it", { file: join(dir, INDEX_FILE), tensor: entry.name, expected: name, actual: weightMap[entry.name] ?? "absent" });
      }
      owner.set(entry.name, name);
      tensors.push(entry);
    }
  }
  if (weightMap !== undefined) {
    for (const [name, shard] of Object.entries(weightMap)) {
      if (!owner.has(name) && names.includes(shard) && !findings.names(name)) findings.add("TENSOR_MISSING", "the index maps the tensor to a shard that does not hold it", { file: join(dir, shard), tensor: name });
    }
  }
  const sourceOf = new Map(sources.map((s) => [s.name, s]));
  const arrays: ScanArray[] = [];
  let failed = new Set<string>();
  let declared: Validated["declared"] = { method: "dense" };
  const quant = await checkHfQuantized(dir, rawConfig, configPath, tensors, { findings, deep, config, sourceOf });
  if (quant !== undefined) {
    tensors = quant.entries;
    arrays.push(...quant.arrays);
    failed = quant.failedModules;
    declared = quant.declared;
  }
  for (const entry of tensors) {
    if (entry.packed === undefined && (entry.dtype === "F32" || entry.dtype === "F16" || entry.dtype === "BF16" || entry.dtype === "F64")) {
      arrays.push({ name: entry.name, file: entry.file, dtype: entry.dtype, byteOffset: entry.byteOffset!, byteLength: entry.byteLength, role: "weight", source: sourceOf.get(entry.file)! });
    }
  }
  if (config !== undefined) {
    const excused = (name: string) => [...failed].some((m) => name.startsWith(`${m}.`)) || findings.names(name);
    checkConfigTensors(config, tensors, findings, { configFile: configPath, excused });
  }
  return { layout: "hf-safetensors", entries: tensors, arrays, config, declared, close: () => closeAll(sources) };
}

async function readConfig(path: string, findings: Findings): Promise<{ rawConfig: Record<string, unknown> | undefined; config: ModelConfig | undefined }> {
  if (!(await fileExists(path))) {
    findings.add("CONFIG_INVALID", "no config.json: shapes cannot be checked against the model's dimensions", { file: path }, "warning");
    return { rawConfig: undefined, config: undefined };
  }
  const rawConfig = await findings.guard({ file: path }, async () => {
    const bytes = await readSmallFile(path, MAX_CONFIG_BYTES, "CONFIG_INVALID");
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    } catch (cause) {
      throw new FormatError("CONFIG_INVALID", "not valid UTF-8", { file: path, cause });
    }
    return parseConfigJson(text, path);
  });
  const config = rawConfig === undefined ? undefined : await findings.guard({ file: path }, () => normaliseConfig(rawConfig, path));
  return { rawConfig, config };
}

/** The shard names, as openHfDirectory picks them: the index, model.safetensors, or every *.safetensors. */
async function weightFileNames(dir: string, weightMap: Record<string, string> | undefined, findings: Findings): Promise<string[]> {
  if (weightMap !== undefined) {
    const shards = [...new Set(Object.values(weightMap))].sort();
    const present: string[] = [];
    for (const shard of shards) {
      if (await fileExists(join(dir, shard))) present.push(shard);
      else findings.add("INDEX_INVALID", "the index names a shard that is not in the directory", { file: join(dir, INDEX_FILE), tensor: Object.keys(weightMap).find((k) => weightMap[k] === shard), expected: shard, actual: "absent" });
    }
    return present;
  }
  if (await fileExists(join(dir, SINGLE_WEIGHTS_FILE))) return [SINGLE_WEIGHTS_FILE];
  const entries = await findings.guard({ file: dir }, () => readdir(dir));
  const names = (entries ?? []).filter((n) => n.endsWith(".safetensors")).sort();
  if (names.length === 0) findings.add("LAYOUT_UNKNOWN", "no safetensors weights in the directory", { file: dir });
  return names;
}
