import type { ArtifactFacts } from "./card-facts.js";

/**
 * The card's "How to load" section: for each artifact, the runtime that reads its layout
 * (transformers and the format's own package for HF folders, llama.cpp for GGUF, onnxruntime
 * for ONNX, lmpack for .lmpack containers), as commands a reader can paste. Which package
 * reads which `quant_method` is the runtimes' own documented integration; a layout no runtime
 * reads (lmpack's fp6_tc, GGUF with lmpack's packed arrays) says so and points to lmpack.
 */

interface HfLoader {
  pip: string;
  /** Lines before from_pretrained (an import that registers the format). */
  preamble?: string[];
  /** The format's own loader, when it has one besides transformers. */
  own?: { title: string; code: string[] };
  note?: string;
}

const HF_LOADERS: Record<string, HfLoader> = {
  gptq: {
    pip: "transformers optimum gptqmodel",
    own: { title: "GPTQModel", code: ["from gptqmodel import GPTQModel", 'model = GPTQModel.load("{repo}")'] },
  },
  "auto-round": {
    pip: "transformers auto-round",
    preamble: ["from auto_round import AutoRoundConfig  # registers the auto-round format with transformers"],
  },
  awq: {
    pip: "transformers autoawq",
    own: { title: "AutoAWQ", code: ["from awq import AutoAWQForCausalLM", 'model = AutoAWQForCausalLM.from_quantized("{repo}")'] },
  },
  vptq: {
    pip: "transformers vptq",
    own: { title: "VPTQ", code: ["import vptq", 'model = vptq.AutoModelForCausalLM.from_pretrained("{repo}", device_map="auto")'] },
  },
  spqr: { pip: 'transformers "spqr_quant[gpu]"' },
};

export function loadSection(repo: string, artifacts: readonly ArtifactFacts[]): string[] {
  const out = ["## How to load", ""];
  for (const artifact of artifacts) {
    if (artifact.kind === "hf") out.push(...hfSnippet(repo, artifact));
    else if (artifact.kind === "gguf") out.push(...ggufSnippet(repo, artifact));
    else if (artifact.kind === "onnx") out.push(...onnxSnippet(repo, artifact));
    else out.push(...lmpackSnippet(repo, artifact));
  }
  return out;
}

function hfSnippet(repo: string, artifact: ArtifactFacts): string[] {
  const method = typeof artifact.quantConfig?.["quant_method"] === "string" ? (artifact.quantConfig["quant_method"] as string) : undefined;
  const out = [`### transformers (the safetensors folder${method === undefined ? "" : `, \`quant_method: ${method}\``})`, ""];
  if (method === "fp6_tc") {
    out.push("transformers has no loader for `fp6_tc` (lmpack's layout of FP6-LLM's tensor-core packing, no Hub standard). lmpack reads it, and dequantizes it exactly:", "");
    out.push(...fence("sh", [`npx lmpack convert ${repo} --to safetensors --dtype f16 --out ./dense`]));
    return out;
  }
  const loader = method === undefined ? { pip: "transformers" } : HF_LOADERS[method];
  if (loader === undefined) {
    out.push(`No loader is known to lmpack for \`quant_method: ${method}\`; lmpack reads the folder (\`npx lmpack inspect ${repo}\`).`, "");
    return out;
  }
  out.push(...fence("sh", [`pip install ${loader.pip}`]));
  out.push(...fence("python", [...(loader.preamble ?? []), "from transformers import AutoModelForCausalLM, AutoTokenizer", "", `model = AutoModelForCausalLM.from_pretrained("${repo}", device_map="auto")`, `tokenizer = AutoTokenizer.from_pretrained("${repo}")`]));
  if (loader.own !== undefined) {
    out.push(`With ${loader.own.title}'s own loader:`, "");
    out.push(...fence("python", loader.own.code.map((line) => line.replace("{repo}", repo))));
  }
  out.push("lmpack reads it from the Hub as well (inspect, perplexity, dequantization, conversion to GGUF or ONNX):", "");
  out.push(...fence("sh", [`npx lmpack inspect ${repo}`, `npx lmpack convert ${repo} --to safetensors --dtype f16 --out ./dense`]));
  return out;
}

function ggufSnippet(repo: string, artifact: ArtifactFacts): string[] {
  const out = [`### llama.cpp (\`${artifact.path}\`)`, ""];
  if (artifact.keepPacked === true) {
    out.push("This GGUF file carries lmpack's packed arrays (`lmpack.packed.*`): it is valid GGUF, but llama.cpp cannot run those tensors. lmpack reads it:", "");
    out.push(...fence("sh", [`hf download ${repo} ${artifact.path} --local-dir .`, `npx lmpack convert ${artifact.path} --to safetensors --dtype f16 --out ./dense`]));
    return out;
  }
  out.push(...fence("sh", [`llama-cli --hf-repo ${repo} --hf-file ${artifact.path} -p "Once upon a time"`, `llama-server --hf-repo ${repo} --hf-file ${artifact.path}`]));
  return out;
}

function onnxSnippet(repo: string, artifact: ArtifactFacts): string[] {
  const out = [`### onnxruntime (\`${artifact.path}\`)`, ""];
  const folder = artifact.path.includes("/") ? artifact.path.slice(0, artifact.path.lastIndexOf("/")) : "";
  if (artifact.onnx?.genai === true) {
    out.push(...fence("sh", ["pip install onnxruntime-genai huggingface_hub"]));
    out.push(...fence("python", ["import onnxruntime_genai as og", "from huggingface_hub import snapshot_download", "", `local = snapshot_download("${repo}")`, `model = og.Model(f"{local}${folder === "" ? "" : `/${folder}`}")`, "tokenizer = og.Tokenizer(model)"]));
    return out;
  }
  out.push(...fence("sh", ["pip install onnxruntime huggingface_hub"]));
  out.push(...fence("python", ["import onnxruntime as ort", "from huggingface_hub import snapshot_download", "", `local = snapshot_download("${repo}")  # the model and its external data`, `session = ort.InferenceSession(f"{local}/${artifact.path}")`]));
  return out;
}

function lmpackSnippet(repo: string, artifact: ArtifactFacts): string[] {
  const out = [`### lmpack (\`${artifact.path}\`)`, ""];
  out.push("A checksummed lmpack container: lmpack reads it, verifies it, and writes any layout its representation allows (HF safetensors, GGUF, ONNX).", "");
  out.push(...fence("sh", [`hf download ${repo} ${artifact.path} --local-dir .`, `npx lmpack inspect ${artifact.path} --verify`, `npx lmpack convert ${artifact.path} --to safetensors --dtype f16 --out ./dense`]));
  out.push(...fence("ts", ['import { openCheckpoint } from "lmpack";', "", `const checkpoint = await openCheckpoint("${artifact.path}");`]));
  return out;
}

function fence(lang: string, lines: readonly string[]): string[] {
  return ["```" + lang, ...lines, "```", ""];
}
