import { FormatError } from "../../formats/errors.js";
import type { ZeroConvention } from "../../formats/int-group/gptq-layout.js";
import { INT_BITS, type IntBits } from "../../formats/int-group/types.js";
import { compileNamePattern, PatternError, type Anchoring, type NamePattern } from "./dynamic-pattern.js";

/**
 * `quantization_config` of the Hugging Face integer layouts lmpack reads and writes:
 *
 *   quant_method "gptq"        AutoGPTQ / GPTQModel: checkpoint_format "gptq" (v1, zero − 1, the
 *                              default) or "gptq_v2"; per-module overrides in GPTQModel's `dynamic`
 *                              ({"+:regex": {bits, group_size, sym}, "-:regex": {}}, re.match)
 *   quant_method "auto-round"  auto-round: packing_format "auto_round:auto_gptq" (v1),
 *                              "auto_round" / "auto_round:gptqmodel" (v2), "auto_round:auto_awq"
 *                              (AWQ tensors); per-layer overrides in `extra_config`
 *                              ({name or regex: {bits, group_size, sym}}, bits 16 = not quantized)
 *   quant_method "awq"         AutoAWQ GEMM: bits 4, group_size, zero_point (false = sym)
 *
 * Sources: ../shared/ref/signround-gptq-fp6.md A2, A4, A5 (auto-round export code, transformers
 * AutoRoundConfig / GPTQConfig).
 */
export type HfIntMethod = "gptq" | "auto-round" | "awq";
export type TensorLayout = "gptq" | "awq";

export interface LayerQuantSpec {
  bits: IntBits;
  /** As written: -1 means per-channel. */
  groupSize: number;
  sym: boolean;
}

export interface HfIntQuantConfig {
  method: HfIntMethod;
  tensorLayout: TensorLayout;
  /** Zero-point convention of GPTQ-layout tensors (AWQ stores zeros as is). */
  zeros: ZeroConvention;
  /** The label of `checkpoint_format` / `packing_format` as written (or its default). */
  format: string;
  descAct: boolean;
  global: LayerQuantSpec;
  /** Parameters of the linear module `moduleName` (no ".weight"), or "skip" when the config excludes it. */
  layer(moduleName: string): LayerQuantSpec | "skip";
  raw: Record<string, unknown>;
}

const AUTO_ROUND_FORMATS: Record<string, { tensorLayout: TensorLayout; zeros: ZeroConvention }> = {
  "auto_round:auto_gptq": { tensorLayout: "gptq", zeros: "v1" },
  // transformers' AutoRoundConfig default, and what it rewrites quant_method "gptq" (v1 only) to.
  "auto_round:gptq": { tensorLayout: "gptq", zeros: "v1" },
  auto_round: { tensorLayout: "gptq", zeros: "v2" },
  "auto_round:gptqmodel": { tensorLayout: "gptq", zeros: "v2" },
  "auto_round:auto_awq": { tensorLayout: "awq", zeros: "v2" },
  "auto_round:awq": { tensorLayout: "awq", zeros: "v2" },
};

/** Parses `quantization_config`; undefined when it is absent or another method (kept as plain tensors). */
export function parseHfQuantConfig(raw: unknown, file: string): HfIntQuantConfig | undefined {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return undefined;
  const q = raw as Record<string, unknown>;
  const method = q["quant_method"];
  if (method !== "gptq" && method !== "auto-round" && method !== "awq") return undefined;
  const read = new QuantKeyReader(q, file);
  if (method === "awq") {
    const version = String(q["version"] ?? "gemm").toLowerCase();
    if (version !== "gemm") throw new FormatError("QUANT_CONFIG_INVALID", `AWQ version "${version}" is not the GEMM layout lmpack reads`, { file, expected: "gemm", actual: version });
    const global = { bits: read.bits(["bits", "w_bit"]), groupSize: read.groupSize(["group_size", "q_group_size"]), sym: !(read.boolean("zero_point") ?? true) };
    if (global.bits !== 4) throw new FormatError("QUANT_CONFIG_INVALID", "AWQ checkpoints are 4-bit", { file, expected: 4, actual: global.bits });
    const skipped = stringList(q["modules_to_not_convert"]);
    return { method, tensorLayout: "awq", zeros: "v2", format: "gemm", descAct: false, global, raw: q, layer: (name) => (skipped.some((s) => name.includes(s)) ? "skip" : global) };
  }
  const global = { bits: read.bits(["bits"]), groupSize: read.groupSize(["group_size"]), sym: read.boolean("sym") ?? true };
  if (method === "gptq") {
    const format = typeof q["checkpoint_format"] === "string" ? q["checkpoint_format"] : "gptq";
    if (format !== "gptq" && format !== "gptq_v2") throw new FormatError("QUANT_CONFIG_INVALID", `checkpoint_format "${format}" is not a GPTQ layout lmpack reads`, { file, expected: "gptq or gptq_v2", actual: format });
    const overrides = dynamicOverrides(q["dynamic"], global, file);
    return { method, tensorLayout: "gptq", zeros: format === "gptq" ? "v1" : "v2", format, descAct: read.boolean("desc_act") ?? false, global, raw: q, layer: overrides };
  }
  const format = typeof q["packing_format"] === "string" ? q["packing_format"] : "auto_round:gptq";
  const layout = AUTO_ROUND_FORMATS[format];
  if (layout === undefined) throw new FormatError("QUANT_CONFIG_INVALID", `auto-round packing_format "${format}" is not an integer layout lmpack reads`, { file, expected: Object.keys(AUTO_ROUND_FORMATS).join(", "), actual: format });
  const dataType = q["data_type"] ?? "int";
  if (dataType !== "int") throw new FormatError("QUANT_CONFIG_INVALID", `auto-round data_type "${String(dataType)}" is not integer quantization`, { file, expected: "int", actual: dataType });
  return { method, ...layout, format, descAct: false, global, raw: q, layer: extraConfigOverrides(q["extra_config"], global, file) };
}

/**
 * Work bounds for override patterns, which a config.json from anywhere supplies. Matching is
 * linear (dynamic-pattern.ts), costing NFA states × name characters per module: all rules
 * together may hold 64 Ki states (a config with one exact rule per linear of an 80-layer model
 * holds ~25 Ki), and a name matched against them is at most 512 characters (real module paths,
 * multimodal and MoE included, stay under 100). Together: at most ~3·10^7 steps per module.
 */
export const MAX_OVERRIDE_STATES = 1 << 16;
export const MAX_MODULE_NAME_CHARS = 512;

/** GPTQModel `dynamic`: "-:regex" excludes, "+:regex" (or a bare regex) overrides; first match wins, anchored at the start (re.match). */
function dynamicOverrides(dynamic: unknown, global: LayerQuantSpec, file: string): (name: string) => LayerQuantSpec | "skip" {
  if (dynamic === undefined || dynamic === null) return () => global;
  if (typeof dynamic !== "object" || Array.isArray(dynamic)) throw new FormatError("QUANT_CONFIG_INVALID", "\"dynamic\" must be an object of regex → overrides", { file });
  const budget = new StateBudget(file, "dynamic");
  const rules = Object.entries(dynamic as Record<string, unknown>).map(([key, value]) => {
    const negative = key.startsWith("-:");
    const pattern = key.replace(/^[+-]:/, "");
    return { negative, regex: budget.compile(key, pattern, "match"), spec: negative ? undefined : overrideSpec(value, global, file, key) };
  });
  return (name) => {
    if (rules.length > 0) checkNameLength(name, file, "dynamic");
    for (const rule of rules) if (rule.regex.test(name)) return rule.negative ? "skip" : rule.spec!;
    return global;
  };
}

/** auto-round `extra_config`: exact layer names first, then keys as regexes (re.search); bits ≥ 16 = not quantized. */
function extraConfigOverrides(extra: unknown, global: LayerQuantSpec, file: string): (name: string) => LayerQuantSpec | "skip" {
  if (extra === undefined || extra === null) return () => global;
  if (typeof extra !== "object" || Array.isArray(extra)) throw new FormatError("QUANT_CONFIG_INVALID", "\"extra_config\" must be an object of layer → overrides", { file });
  const entries = Object.entries(extra as Record<string, unknown>);
  const specOf = (key: string, value: unknown) => {
    const bits = (value as Record<string, unknown> | null)?.["bits"];
    return typeof bits === "number" && bits >= 16 ? ("skip" as const) : overrideSpec(value, global, file, key);
  };
  const exact = new Map(entries.map(([k, v]) => [k, specOf(k, v)]));
  const budget = new StateBudget(file, "extra_config");
  // A key that is no valid pattern is a plain layer name with metacharacters, matched exactly above.
  const regexes = entries.map(([k]) => ({ regex: budget.compile(k, k, "search", { invalidIsLiteral: true }), spec: exact.get(k)! }));
  return (name) => {
    const hit = exact.get(name);
    if (hit !== undefined) return hit;
    if (regexes.length > 0) checkNameLength(name, file, "extra_config");
    return regexes.find((r) => r.regex?.test(name))?.spec ?? global;
  };
}

/** Compiles a config's override keys with the linear matcher, within one budget of NFA states. */
class StateBudget {
  private states = 0;
  constructor(private readonly file: string, private readonly section: string) {}

  compile(key: string, pattern: string, anchoring: Anchoring, options: { invalidIsLiteral: true }): NamePattern | undefined;
  compile(key: string, pattern: string, anchoring: Anchoring): NamePattern;
  compile(key: string, pattern: string, anchoring: Anchoring, options?: { invalidIsLiteral: true }): NamePattern | undefined {
    let compiled: NamePattern;
    try {
      compiled = compileNamePattern(pattern, anchoring);
    } catch (cause) {
      if (!(cause instanceof PatternError)) throw cause;
      if (cause.reason === "SYNTAX" && options?.invalidIsLiteral) return undefined;
      const what = cause.reason === "SYNTAX" ? "is not a valid regular expression" : "is refused: its matching could not be bounded";
      throw new FormatError("QUANT_CONFIG_INVALID", `"${this.section}" key "${key}" ${what} (${cause.reason}: ${cause.message}); pattern: ${pattern}`, { file: this.file, actual: pattern, cause });
    }
    this.states += compiled.stateCount;
    if (this.states > MAX_OVERRIDE_STATES) {
      throw new FormatError("QUANT_CONFIG_INVALID", `"${this.section}" patterns together compile to over ${MAX_OVERRIDE_STATES} matcher states (at key "${key}"); pattern: ${pattern}`, { file: this.file, expected: `<= ${MAX_OVERRIDE_STATES} states`, actual: this.states });
    }
    return compiled;
  }
}

function checkNameLength(name: string, file: string, section: string): void {
  if (name.length <= MAX_MODULE_NAME_CHARS) return;
  throw new FormatError("QUANT_CONFIG_INVALID", `module name of ${name.length} characters is too long to match against "${section}" patterns`, { file, tensor: `${name.slice(0, 64)}…`, expected: `<= ${MAX_MODULE_NAME_CHARS} characters`, actual: name.length });
}

function overrideSpec(value: unknown, global: LayerQuantSpec, file: string, key: string): LayerQuantSpec {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new FormatError("QUANT_CONFIG_INVALID", `override "${key}" must be an object`, { file });
  const read = new QuantKeyReader(value as Record<string, unknown>, file);
  const has = (k: string) => (value as Record<string, unknown>)[k] !== undefined;
  return { bits: has("bits") ? read.bits(["bits"]) : global.bits, groupSize: has("group_size") ? read.groupSize(["group_size"]) : global.groupSize, sym: read.boolean("sym") ?? global.sym };
}

function stringList(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === "string") : [];
}

class QuantKeyReader {
  constructor(private readonly raw: Record<string, unknown>, private readonly file: string) {}

  bits(keys: string[]): IntBits {
    const value = keys.map((k) => this.raw[k]).find((v) => v !== undefined);
    if (!INT_BITS.includes(value as IntBits)) throw new FormatError("QUANT_CONFIG_INVALID", `"${keys[0]}" must be one of ${INT_BITS.join(", ")}`, { file: this.file, expected: INT_BITS.join(" | "), actual: value ?? "absent" });
    return value as IntBits;
  }

  groupSize(keys: string[]): number {
    const value = keys.map((k) => this.raw[k]).find((v) => v !== undefined) ?? 128;
    if (typeof value !== "number" || !Number.isSafeInteger(value) || (value <= 0 && value !== -1)) {
      throw new FormatError("QUANT_CONFIG_INVALID", `"${keys[0]}" must be a positive integer or -1`, { file: this.file, actual: value });
    }
    return value;
  }

  boolean(key: string): boolean | undefined {
    const value = this.raw[key];
    if (value === undefined || value === null) return undefined;
    if (typeof value !== "boolean") throw new FormatError("QUANT_CONFIG_INVALID", `"${key}" must be true or false`, { file: this.file, actual: value });
    return value;
  }
}
