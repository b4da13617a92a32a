import type { BaseFacts } from "./base-model.js";
import type { ArtifactFacts } from "./card-facts.js";
import { emitFrontMatter } from "./front-matter.js";
import { loadSection } from "./load-snippets.js";
import { sameMeasurement, type EvalFacts, type VerifyFacts } from "./reports.js";

/**
 * The model card (README.md) of a published folder: YAML front matter the Hub reads
 * (base_model + base_model_relation, library_name, license, pipeline_tag, tags) and a body
 * with the method and its parameters, the true bits per weight, the verification results and
 * how to load each artifact. Every number and name comes from `CardFacts` (read from the files
 * and reports); the text is deterministic, so republishing the same folder changes nothing.
 */

export interface CardFacts {
  /** owner/name of the repo the card is for. */
  repo: string;
  base: BaseFacts;
  artifacts: readonly ArtifactFacts[];
  verify: VerifyFacts | undefined;
  evalBase: EvalFacts | undefined;
  evalModel: EvalFacts | undefined;
  /** "lmpack <version>" */
  producer: string;
}

const LAYOUT_NAMES: Record<ArtifactFacts["kind"], string> = { hf: "safetensors (HF)", lmpack: "lmpack container", gguf: "GGUF", onnx: "ONNX" };
/** library_name by the most widely loadable artifact present. */
const LIBRARY_ORDER: readonly [ArtifactFacts["kind"], string][] = [["hf", "transformers"], ["gguf", "gguf"], ["onnx", "onnx"], ["lmpack", "lmpack"]];
/** A quantization_config value longer than this as JSON is summarised, not printed. */
const MAX_VALUE_CHARS = 120;

export function renderCard(facts: CardFacts): string {
  const { base } = facts;
  const frontMatter = emitFrontMatter([
    ["base_model", base.id],
    ["base_model_relation", base.id === undefined ? undefined : "quantized"],
    ["library_name", LIBRARY_ORDER.find(([kind]) => facts.artifacts.some((a) => a.kind === kind))?.[1]],
    ["license", base.license],
    ["license_name", base.license === undefined ? undefined : base.licenseName],
    ["license_link", base.license === undefined ? undefined : base.licenseLink],
    ["pipeline_tag", facts.artifacts.some(isCausalLm) ? "text-generation" : undefined],
    ["tags", tagsOf(facts.artifacts)],
  ]);
  const name = facts.repo.slice(facts.repo.indexOf("/") + 1);
  const body = [`# ${md(name)}`, ""];
  const origin = base.id === undefined ? "a quantized model; its base model is not recorded" : `a quantized version of [${base.id}](https://huggingface.co/${base.id})`;
  body.push(`${md(name)} is ${origin}, made with ${md(facts.producer)}.${base.idSource === undefined || base.idSource === "--base" ? "" : ` The base model is named by ${md(base.idSource)}.`}`, "");
  if (base.license !== undefined) body.push(`License: \`${md(base.license)}\`${base.licenseSource === undefined ? "" : ` (from ${md(base.licenseSource)})`}.`, "");
  body.push(...filesSection(facts.artifacts), ...quantizationSection(facts.artifacts), ...verificationSection(facts), ...loadSection(facts.repo, facts.artifacts));
  return `${frontMatter}\n${body.join("\n").replace(/\n+$/, "")}\n`;
}

function isCausalLm(a: ArtifactFacts): boolean {
  return a.config?.architecture?.endsWith("ForCausalLM") === true || (a.kind === "gguf" && a.general?.["general.architecture"] !== undefined);
}

function tagsOf(artifacts: readonly ArtifactFacts[]): string[] {
  const tags = new Set<string>(["lmpack"]);
  for (const a of artifacts) {
    if (a.kind === "gguf" || a.kind === "onnx") tags.add(a.kind);
    const method = a.quantConfig?.["quant_method"];
    if (typeof method === "string") tags.add(tag(method));
    for (const m of a.packed?.methods ?? []) tags.add(tag(m));
    for (const bits of a.packed?.bits ?? []) tags.add(`${bits}-bit`);
    for (const bits of a.onnx?.bits ?? []) tags.add(`${bits}-bit`);
  }
  return [...tags];
}

function tag(text: string): string {
  return text.toLowerCase().replace(/[^a-z0-9._-]+/g, "-").replace(/^-+|-+$/g, "");
}

function filesSection(artifacts: readonly ArtifactFacts[]): string[] {
  const out = ["## Files", "", "| file | layout | parameters | size | bits per weight |", "| --- | --- | ---: | ---: | ---: |"];
  for (const a of artifacts) {
    const counted = a.parameters > 0;
    out.push(`| ${a.path === "" ? "(this folder)" : `\`${md(a.path)}\``} | ${LAYOUT_NAMES[a.kind]} | ${counted ? a.parameters.toLocaleString("en-US") : "—"} | ${counted ? megabytes(a.bytes) : "—"} | ${counted ? fixed(a.bitsPerWeight) : "—"} |`);
  }
  out.push("", "Bits per weight: the bits the tensors occupy, over every parameter of the model (embeddings, norms and unquantized layers included).", "");
  return out;
}

function quantizationSection(artifacts: readonly ArtifactFacts[]): string[] {
  const out = ["## Quantization", ""];
  for (const a of artifacts) {
    const p = a.packed;
    out.push(`### ${a.path === "" ? "The safetensors folder" : `\`${md(a.path)}\``}`, "");
    if (a.kind === "onnx") {
      const o = a.onnx!;
      if (!o.inspected) out.push("Not inspected (a large graph); see the file.", "");
      else out.push(`- \`com.microsoft.MatMulNBits\` linears: ${o.matMulNBits}${o.bits.length === 0 ? "" : `, ${o.bits.join("/")}-bit fields, block sizes ${o.blockSizes.join(", ")}`}`, `- onnxruntime-genai config: ${o.genai ? "yes (genai_config.json)" : "no"}${a.producer === undefined ? "" : `; written by ${md(a.producer)}`}`, "");
      continue;
    }
    if (p === undefined) {
      out.push("Not quantized: every tensor is stored dense.", "");
      continue;
    }
    const source = a.kind === "hf" ? "`quantization_config.quant_method` in config.json" : a.kind === "gguf" ? "the tensors' ggml types" : "the container's tensor records";
    out.push(`- Method: ${p.methods.map((m) => `\`${md(m)}\``).join(", ")} (from ${source})`);
    out.push(`- Quantized tensors: ${p.tensors}, ${p.parameters.toLocaleString("en-US")} parameters (${((100 * p.parameters) / a.parameters).toFixed(1)} % of the model)`);
    out.push(`- Bits per weight of the quantized tensors: **${fixed(p.storedBitsPerWeight)}** as stored (every array counted: codes, scales, zeros, indices, codebooks, outliers); ${fixed(p.methodBitsPerWeight)} by the method's own count`);
    out.push(`- Whole model: ${fixed(a.bitsPerWeight)} bits per weight`, "");
    out.push("| setting | values |", "| --- | --- |", ...Object.entries(p.settings).map(([key, values]) => `| ${md(key)} | ${values.map(md).join(", ")} |`), "");
    if (a.quantConfig !== undefined) {
      out.push("`quantization_config` as written in config.json:", "", "| key | value |", "| --- | --- |");
      for (const [key, value] of Object.entries(a.quantConfig)) out.push(`| \`${md(key)}\` | ${configValue(value)} |`);
      out.push("");
    }
    if (a.ggmlTypes !== undefined) {
      out.push("| ggml type | parameters | share |", "| --- | ---: | ---: |");
      for (const [type, n] of Object.entries(a.ggmlTypes).sort((x, y) => y[1] - x[1])) out.push(`| ${md(type)} | ${n.toLocaleString("en-US")} | ${((100 * n) / a.parameters).toFixed(1)} % |`);
      out.push("");
    }
  }
  return out;
}

function verificationSection(facts: CardFacts): string[] {
  const out = ["## Verification", ""];
  const v = facts.verify;
  if (v !== undefined) {
    out.push(`\`lmpack verify\` against the source weights: **${v.ok ? "PASS" : "FAIL"}** (${v.tensors} tensors, dequantized on ${md(v.device)}, limit ${v.maxRelativeRms} relative RMS error).`, "");
    out.push(`- Largest absolute error: ${v.maxAbsError.toExponential(3)}`, `- Mean relative RMS error: ${v.meanRelativeRmsError.toExponential(3)}`, `- Lowest SNR: ${v.minSnrDb.toFixed(1)} dB`);
    if (v.gpuChecked > 0) out.push(`- GPU dequantization equal to the CPU reference bit for bit: ${v.gpuChecked - v.gpuMismatchedTensors} of ${v.gpuChecked} tensors`);
    for (const failure of v.failures) out.push(`- FAIL: ${md(failure)}`);
    out.push("", "| tensor (worst first) | representation | bits per weight | max \\|error\\| | relative RMS error | SNR dB |", "| --- | --- | ---: | ---: | ---: | ---: |");
    for (const r of v.worst) out.push(`| \`${md(r.name)}\` | ${md(r.representation)} | ${fixed(r.bitsPerWeight)} | ${r.maxAbsError.toExponential(2)} | ${r.relativeRmsError.toExponential(2)} | ${r.snrDb.toFixed(1)} |`);
    out.push("");
  }
  const { evalBase: before, evalModel: after } = facts;
  if (before !== undefined && after !== undefined && sameMeasurement(before, after)) {
    const change = ((after.perplexity / before.perplexity - 1) * 100).toFixed(2);
    out.push(`Perplexity (\`lmpack eval\`, ${measurement(after)}):`, "", "| model | perplexity |", "| --- | ---: |", `| base model | ${before.perplexity.toFixed(4)} |`, `| this model | ${after.perplexity.toFixed(4)} (${change.startsWith("-") ? "" : "+"}${change} %) |`, "");
  } else {
    if (before !== undefined && after !== undefined) out.push("The two perplexities below were measured differently, so they are not compared.", "");
    for (const [who, e] of [["base model", before], ["this model", after]] as const) if (e !== undefined) out.push(`Perplexity of the ${who} (\`lmpack eval\`, ${measurement(e)}): ${e.perplexity.toFixed(4)}`, "");
  }
  if (v === undefined && before === undefined && after === undefined) out.push("No verification results were recorded for this upload.", "");
  return out;
}

function measurement(e: EvalFacts): string {
  return `${md(e.protocol)} protocol, windows of ${e.ctx} tokens, ${e.tokens.toLocaleString("en-US")} tokens of \`${md(e.text)}\``;
}

function configValue(value: unknown): string {
  const json = JSON.stringify(value) ?? "null";
  if (json.length <= MAX_VALUE_CHARS) return `\`${md(json)}\``;
  const size = Array.isArray(value) ? value.length : typeof value === "object" && value !== null ? Object.keys(value).length : undefined;
  return size === undefined ? `(${json.length} characters; see config.json)` : `(${size} entries; see config.json)`;
}

/** Up to 4 decimals, trailing zeros dropped. */
function fixed(x: number): string {
  return Number.isFinite(x) ? String(Number(x.toFixed(4))) : String(x);
}

function megabytes(bytes: number): string {
  return bytes >= 1e9 ? `${(bytes / 1e9).toFixed(2)} GB` : `${(bytes / 1e6).toFixed(2)} MB`;
}

/** Text from files, made inert in Markdown tables: no column breaks, no HTML. */
function md(text: string): string {
  return text.replace(/\|/g, "\\|").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/[\r\n]+/g, " ");
}
