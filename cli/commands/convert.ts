import type { ArgumentsCamelCase, Argv } from "yargs";
import { parseTargetDType } from "../../formats/dtype.js";
import { UsageError } from "../../formats/errors.js";
import { openCheckpoint } from "../../converters/open.js";
import { exportLmpack } from "../../converters/lmpack/export.js";
import { exportSafetensors } from "../../converters/safetensors/export.js";
import { exportHfInt, HF_INT_TARGETS, type LayerExportReport } from "../../converters/int-group/export-hf.js";
import { exportHfFpx } from "../../converters/fpx/export-hf.js";
import { exportHfSpqr } from "../../converters/spqr/export-hf.js";
import { exportHfVptq } from "../../converters/vptq/export-hf.js";
import { withVptqSemantics } from "../../converters/vptq/entry.js";
import { parseByteSize } from "../../converters/io/byte-size.js";
import type { ChecksumName } from "../../converters/lmpack/checksum.js";
import { EXIT } from "../errors.js";
import { exportGguf, type GgufTensorReport } from "../../converters/gguf/export.js";
import { WRITABLE_TYPES } from "../../converters/gguf/tensor-plan.js";
import type { Checkpoint } from "../../converters/checkpoint.js";
import { terminalProgress } from "../progress.js";
import { convertToOnnx } from "./convert-onnx.js";

interface ConvertArgs {
  src: string;
  to: (typeof TARGETS)[number];
  gptqFormat: "v1" | "v2";
  allowRequant: boolean;
  out: string;
  dtype: string | undefined;
  maxShardSize: string | undefined;
  checksum: ChecksumName;
  force: boolean;
  progress: boolean;
  json: boolean;
  vptqDequant: "cuda" | "torch";
  type: string;
  outputType: string | undefined;
  embeddingType: string | undefined;
  ggufName: string | undefined;
  keepPacked: boolean;
  perLayer: boolean;
  onnxPacked: "dequant-graph" | "float";
}

const TARGETS = ["safetensors", "lmpack", "gguf", "onnx", "hf-gptq", "hf-autoround", "hf-awq", "hf-fp6", "hf-spqr", "hf-vptq"] as const;

export const convertCommand = {
  command: "convert <src>",
  describe: "Convert a checkpoint to safetensors (HF directory or one file), an .lmpack container, GGUF, or a packed HF layout, streaming",
  builder: (yargs: Argv) =>
    yargs
      .positional("src", { type: "string", demandOption: true, describe: "model directory, .safetensors or .lmpack file, or Hub id" })
      .option("to", { choices: TARGETS, demandOption: true, describe: "output layout: dense safetensors, the .lmpack container, gguf (llama.cpp; --type), onnx (a whole-decoder folder for onnxruntime, or --per-layer MatMulNBits models), or a packed HF layout (codes moved, not requantized: hf-gptq/hf-autoround/hf-awq for integer layers, hf-fp6 for FP6/FP5, hf-spqr for SpQR, hf-vptq for VPTQ)" })
      .option("type", { type: "string", default: "F16", describe: `--to gguf: ggml type of the 2-D weights (${WRITABLE_TYPES.join(", ")}); norms stay F32, the output matrix stays at Q6_K below it; rows a type cannot block fall back (reported)` })
      .option("output-type", { type: "string", describe: "--to gguf: type of the output matrix (lm_head, or the tied embedding)" })
      .option("embedding-type", { type: "string", describe: "--to gguf: type of token_embd when it is not the output matrix" })
      .option("keep-packed", { type: "boolean", default: false, describe: "--to gguf: store VPTQ/SpQR/FP6 (and integer layers without an exact ggml type) as lmpack's packed arrays with lmpack.* metadata instead of requantizing: readable by any GGUF parser and re-imported by lmpack losslessly, not runnable by llama.cpp" })
      .option("per-layer", { type: "boolean", default: false, describe: "--to onnx: one model per packed linear (MatMulNBits for integer groups, a dequantization subgraph + MatMul for VPTQ/SpQR/FP6) instead of the whole decoder (model.onnx + genai_config.json)" })
      .option("onnx-packed", { choices: ["dequant-graph", "float"] as const, default: "dequant-graph" as const, describe: "--to onnx: VPTQ/SpQR/FP6 linears as their stored arrays behind an exact dequantization subgraph of standard ops (small file; onnxruntime folds it into float32 weights at load), or as float32 weights" })
      .option("gguf-name", { type: "string", describe: "--to gguf: general.name (default: the source folder's name)" })
      .option("vptq-dequant", { choices: ["cuda", "torch"] as const, default: "cuda" as const, describe: "VPTQ layers to dense: the CUDA kernel's single fused rounding (default) or the torch fallback's two roundings" })
      .option("gptq-format", { choices: ["v1", "v2"] as const, default: "v1" as const, describe: "--to hf-gptq: zero-point convention (v1 = checkpoint_format gptq, stores zero − 1; v2 = gptq_v2)" })
      .option("allow-requant", { type: "boolean", default: false, describe: "requantize layers the target cannot hold exactly (and report the error) instead of refusing" })
      .option("out", { type: "string", demandOption: true, describe: "output path: a directory (HF layout) or a .safetensors file; a .lmpack file" })
      .option("dtype", { type: "string", describe: "convert float tensors to f32 | f16 | bf16 (exact, round to nearest even)" })
      .option("max-shard-size", { type: "string", describe: "shard safetensors output (e.g. 2GB, 4GiB); default 5GB" })
      .option("checksum", { choices: ["crc32", "sha256"] as const, default: "crc32" as const, describe: "blob checksum of .lmpack output" })
      .option("force", { type: "boolean", default: false, describe: "replace an existing output (only after the new one is complete)" })
      .option("progress", { type: "boolean", default: true, describe: "progress bar on stderr when it is a terminal" }),
  handler: async (args: ArgumentsCamelCase<ConvertArgs>): Promise<number> => {
    const dtype = args.dtype === undefined ? undefined : parseTargetDType(args.dtype);
    if (args.dtype !== undefined && dtype === undefined) throw new UsageError("BAD_ARGUMENT", `--dtype must be f32, f16 or bf16, got "${args.dtype}"`);
    const maxShardBytes = args.maxShardSize === undefined ? undefined : parseByteSize(args.maxShardSize);
    if (args.to !== "safetensors" && maxShardBytes !== undefined) throw new UsageError("BAD_ARGUMENT", "--max-shard-size applies to --to safetensors only");
    const progress = args.progress && !args.json ? terminalProgress() : undefined;
    const started = performance.now();
    const opened = await openCheckpoint(args.src, progress === undefined ? {} : { hub: { progress } });
    const checkpoint = args.vptqDequant === "cuda" ? opened : withVptqSemantics(opened, args.vptqDequant);
    try {
      const common = { overwrite: args.force, ...(dtype === undefined ? {} : { dtype }), ...(progress === undefined ? {} : { progress }) };
      let layers: LayerExportReport[] = [];
      if (args.to === "gguf") return await convertToGguf(checkpoint, args, started);
      if (args.to === "onnx") return await convertToOnnx(checkpoint, args, started);
      if (args.to === "lmpack") await exportLmpack(checkpoint, args.out, { ...common, checksum: args.checksum });
      else if (args.to === "safetensors") await exportSafetensors(checkpoint, args.out, { ...common, ...(maxShardBytes === undefined ? {} : { maxShardBytes }) });
      else if (args.to === "hf-fp6") await exportHfFpx(checkpoint, args.out, common);
      else if (args.to === "hf-spqr") await exportHfSpqr(checkpoint, args.out, common);
      else if (args.to === "hf-vptq") await exportHfVptq(checkpoint, args.out, common);
      else layers = await exportHfInt(checkpoint, args.out, { ...common, method: HF_INT_TARGETS[args.to], gptqFormat: args.gptqFormat, allowRequant: args.allowRequant });
      const requantized = layers.filter((l) => l.action === "requantized");
      if (!args.json) for (const l of requantized) console.error(`lmpack: requantized ${l.name} (${l.reason}): relative RMS error ${l.relativeRmsError!.toExponential(3)}, max |error| ${l.maxAbsError!.toExponential(3)}`);
      const seconds = (performance.now() - started) / 1000;
      const bytesRead = checkpoint.tensors.reduce((sum, t) => sum + t.byteLength, 0);
      const summary = { ok: true, source: args.src, to: args.to, out: args.out, dtype: dtype ?? "unchanged", tensors: checkpoint.tensors.length, bytesRead, seconds: Number(seconds.toFixed(3)), ...(layers.length === 0 ? {} : { packedLayers: layers.length, requantized }) };
      if (args.json) console.log(JSON.stringify(summary, null, 2));
      else console.error(`lmpack: wrote ${args.out} (${checkpoint.tensors.length} tensors, ${seconds.toFixed(1)} s)`);
      return EXIT.ok;
    } finally {
      await checkpoint.close();
    }
  },
};

async function convertToGguf(checkpoint: Checkpoint, args: ArgumentsCamelCase<ConvertArgs>, started: number): Promise<number> {
  if (args.dtype !== undefined) throw new UsageError("BAD_ARGUMENT", "--to gguf takes --type (a ggml type), not --dtype");
  const result = await exportGguf(checkpoint, args.out, {
    mainType: args.type,
    keepPacked: args.keepPacked,
    ...(args.outputType === undefined ? {} : { outputType: args.outputType }),
    ...(args.embeddingType === undefined ? {} : { embeddingType: args.embeddingType }),
    ...(args.ggufName === undefined ? {} : { naming: { name: args.ggufName } }),
    overwrite: args.force,
    onTensor: (r: GgufTensorReport) => {
      if (args.json) return;
      const error = r.how === "quantized" ? `, relative error ${r.relativeError!.toExponential(3)}` : "";
      console.error(`${r.ggufName} ${r.type} ${r.how}${error}${r.note === undefined ? "" : ` (${r.note})`}`);
    },
  });
  for (const w of result.warnings) if (!args.json) console.error(`lmpack: warning: ${w}`);
  const seconds = (performance.now() - started) / 1000;
  if (args.json) console.log(JSON.stringify({ ok: true, source: args.src, to: "gguf", out: args.out, bytes: result.bytes, seconds: Number(seconds.toFixed(3)), tensors: result.tensors, warnings: result.warnings }, null, 2));
  else console.error(`lmpack: wrote ${args.out} (${result.tensors.length} tensors, ${seconds.toFixed(1)} s)`);
  return EXIT.ok;
}
