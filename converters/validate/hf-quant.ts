import { join } from "node:path";
import { MAX_CONFIG_BYTES, type TensorEntry } from "../checkpoint.js";
import { parseHfFpxConfig } from "../fpx/hf-config.js";
import type { ModelConfig } from "../hf/config.js";
import { parseHfQuantConfig } from "../int-group/hf-quant-config.js";
import { fileExists, readJsonFile } from "../io/json-file.js";
import type { RandomAccessSource } from "../io/random-access.js";
import { parseHfSpqrConfig } from "../spqr/hf-config.js";
import { parseHfVptqConfig } from "../vptq/hf-config.js";
import type { Findings } from "./findings.js";
import { checkFpxLayers } from "./hf-fp6.js";
import { checkIntLayers } from "./hf-int.js";
import { checkSpqrLayers } from "./hf-spqr.js";
import { checkVptqLayers } from "./hf-vptq.js";
import type { ArrayRole, Declared, ScanArray } from "./types.js";

/**
 * The quantized layers of an HF directory, by `quantization_config` (or the quantize_config.json
 * of old AutoGPTQ repos, as openHfDirectory reads it). Each layout's checker groups its packed
 * linears one module at a time with the importer's own grouping function, so a bad module
 * becomes findings while the others are still grouped, loaded and checked.
 */

export interface QuantContext {
  findings: Findings;
  deep: boolean;
  /** The normalised config.json, when it parsed (expected shapes of each linear). */
  config: ModelConfig | undefined;
  /** Open shard sources by path (for the arrays the deep pass scans). */
  sourceOf: Map<string, RandomAccessSource>;
  /** The file the quantization config came from, and the config as written. */
  configFile: string;
  rawQuant: unknown;
}

export interface QuantResult {
  entries: TensorEntry[];
  arrays: ScanArray[];
  /** Modules with a structural finding: config ↔ tensors does not report them again. */
  failedModules: Set<string>;
  declared: Declared;
}

export async function checkHfQuantized(dir: string, rawConfig: Record<string, unknown> | undefined, configPath: string, tensors: TensorEntry[], base: Omit<QuantContext, "configFile" | "rawQuant">): Promise<QuantResult | undefined> {
  const { raw, file } = await rawQuantConfig(dir, rawConfig, configPath, base.findings);
  if (raw === undefined) return undefined;
  const ctx: QuantContext = { ...base, configFile: file, rawQuant: raw };
  // Each layout's parser returns undefined for another quant_method and throws for a malformed one.
  const layouts: (() => (() => Promise<QuantResult>) | undefined)[] = [
    () => withConfig(parseHfQuantConfig(raw, file), (c) => checkIntLayers(tensors, c, ctx)),
    () => withConfig(parseHfFpxConfig(raw, file), (c) => checkFpxLayers(tensors, c, ctx)),
    () => withConfig(parseHfSpqrConfig(raw, file), (c) => checkSpqrLayers(tensors, c, ctx)),
    () => withConfig(parseHfVptqConfig(raw, file), (c) => checkVptqLayers(tensors, c, ctx)),
  ];
  for (const parse of layouts) {
    let check: (() => Promise<QuantResult>) | undefined;
    try {
      check = parse();
    } catch (error) {
      // The config names this method but is malformed: its packed layers cannot be interpreted,
      // so config ↔ tensors does not report each of them again as missing or unexpected.
      base.findings.fromError(error, { file });
      const packed = new Set(PACKED_ANCHORS.flatMap((anchor) => modulesWith(tensors, anchor)));
      return { entries: tensors, arrays: [], failedModules: packed, declared: { method: String((raw as { quant_method?: unknown }).quant_method) } };
    }
    if (check !== undefined) return check();
  }
  const method = (raw as { quant_method?: unknown } | null)?.quant_method;
  base.findings.add("QUANT_CONFIG_INVALID", `quant_method ${JSON.stringify(method)} is not a layout lmpack reads: its tensors are checked as plain tensors`, { file }, "warning");
  return undefined;
}

function withConfig<C>(config: C | undefined, check: (config: C) => Promise<QuantResult>): (() => Promise<QuantResult>) | undefined {
  return config === undefined ? undefined : () => check(config);
}

/** The tensor each packed layout stores once per linear (GPTQ/AWQ, FPx, SpQR, VPTQ). */
const PACKED_ANCHORS = [".qweight", ".weight_packed", ".dense_weights", ".indices"];

async function rawQuantConfig(dir: string, rawConfig: Record<string, unknown> | undefined, configPath: string, findings: Findings): Promise<{ raw: unknown; file: string }> {
  if (rawConfig?.["quantization_config"] !== undefined) return { raw: rawConfig["quantization_config"], file: configPath };
  const path = join(dir, "quantize_config.json");
  if (!(await fileExists(path))) return { raw: undefined, file: path };
  const raw = await findings.guard({ file: path }, () => readJsonFile(path, MAX_CONFIG_BYTES, "CONFIG_INVALID"));
  return { raw: raw === undefined ? undefined : { quant_method: "gptq", ...(raw as object) }, file: path };
}

export interface ModuleGrouping<T> {
  /** The importer's grouping function, run on one module's tensors. */
  group(subset: TensorEntry[]): Promise<TensorEntry[]> | TensorEntry[];
  /** Optionally turns a grouping error into a more precise finding; true when it did. */
  explain?(module: string, error: unknown): boolean;
  /**
   * Called with the loaded (fully validated) representation of each module that passed; false
   * when it reported a finding of its own (the module then counts as failed).
   */
  loaded?(module: string, entry: TensorEntry, representation: T): Promise<boolean | void> | boolean | void;
}

/**
 * Groups `modules` one at a time: tensors of a module that fails stay as they are (and the module
 * is listed as failed); the others are replaced by their grouped entries, in storage order.
 */
export async function groupModules<T>(tensors: readonly TensorEntry[], modules: readonly string[], grouping: ModuleGrouping<T>, ctx: QuantContext): Promise<{ entries: TensorEntry[]; failed: Set<string> }> {
  const failed = new Set<string>();
  const replacement = new Map<string, TensorEntry[]>();
  const consumed = new Set<string>();
  for (const module of modules) {
    const subset = tensors.filter((t) => t.name.startsWith(`${module}.`));
    const where = { file: subset[0]?.file ?? ctx.configFile, tensor: `${module}.weight` };
    let grouped: TensorEntry[];
    try {
      grouped = await grouping.group(subset);
    } catch (error) {
      if (grouping.explain?.(module, error) !== true) ctx.findings.fromError(error, where);
      failed.add(module);
      continue;
    }
    const entry = grouped.find((e) => e.packed !== undefined && e.name === `${module}.weight`);
    const loaded = entry === undefined ? undefined : await ctx.findings.guard<unknown>(where, () => entry.packed!.load());
    if (entry === undefined || loaded === undefined) {
      failed.add(module);
      continue;
    }
    if ((await grouping.loaded?.(module, entry, loaded as T)) === false) failed.add(module);
    for (const t of subset) consumed.add(t.name);
    replacement.set(subset[0]!.name, grouped);
  }
  return { entries: tensors.flatMap((t) => replacement.get(t.name) ?? (consumed.has(t.name) ? [] : [t])), failed };
}

/** A stored tensor as an array for the deep pass. */
export function scanArray(entry: TensorEntry, role: ArrayRole, ctx: QuantContext): ScanArray {
  return { name: entry.name, file: entry.file, dtype: entry.dtype, byteOffset: entry.byteOffset ?? 0, byteLength: entry.byteLength, role, source: ctx.sourceOf.get(entry.file)! };
}

/** Modules whose tensors end with `suffix` (e.g. ".qweight" → "model.layers.0.mlp.up_proj"). */
export function modulesWith(tensors: readonly TensorEntry[], suffix: string): string[] {
  return tensors.filter((t) => t.name.endsWith(suffix)).map((t) => t.name.slice(0, -suffix.length));
}

/** Stored parts whose anchor tensor is missing: `<m>.qzeros` without `<m>.qweight`, and so on. */
export function reportOrphans(tensors: readonly TensorEntry[], anchor: string, parts: readonly string[], what: string, ctx: QuantContext): Set<string> {
  const anchored = new Set(modulesWith(tensors, anchor));
  const orphans = new Set<string>();
  for (const t of tensors) {
    const part = parts.find((p) => t.name.endsWith(p));
    if (part === undefined) continue;
    const module = t.name.slice(0, -part.length);
    if (anchored.has(module) || orphans.has(module)) continue;
    orphans.add(module);
    ctx.findings.add("TENSOR_MISSING", `${what} "${module}" stores ${part.slice(1)} but no ${anchor.slice(1)}`, { file: t.file, tensor: `${module}${anchor}` });
  }
  return orphans;
}
