#!/usr/bin/env node
/**
 * `npm run demo`: the main job on the embedded default model, offline. Inspects
 * test/fixtures/lmpack-fixture-2m, packs it into an .lmpack container, verifies the container's
 * checksums, unpacks it back to a Hugging Face directory and proves the round trip bit-exact;
 * then calibrates, quantizes with GPTQ and measures perplexity before and after, and exports the
 * quantized model to GGUF (llama.cpp) and ONNX (onnxruntime) with its codes carried over.
 */
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { openCheckpoint } from "../converters/open.js";
import { inspectCheckpoint } from "../converters/inspect.js";
import { exportLmpack } from "../converters/lmpack/export.js";
import { exportSafetensors } from "../converters/safetensors/export.js";
import { LmpackFile } from "../converters/lmpack/reader.js";
import { formatBytes } from "../converters/io/byte-size.js";
import { reportError } from "./errors.js";
import { renderInspect } from "./report.js";
import { calibrateHessians } from "../converters/hessians/calibrate.js";
import { quantizeCheckpoint } from "../converters/int-group/quantize-checkpoint.js";
import { windows } from "../model/eval-stream.js";
import { LlamaForward } from "../model/llama-forward.js";
import { loadLlamaWeights } from "../model/llama-weights.js";
import { perplexity } from "../model/perplexity.js";
import { loadTokenizer } from "../model/tokenizer.js";
import { exportGguf } from "../converters/gguf/export.js";
import type { IntGroupTensor } from "../formats/int-group/types.js";
import { onnxStep } from "./demo-onnx.js";
import { openQuantizerDevice } from "./commands/device.js";
import { verifyCheckpoint } from "../converters/verify/verify-checkpoint.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const FIXTURE = join(ROOT, "test", "fixtures", "lmpack-fixture-2m");
const README = join(ROOT, "README.md");
const WINDOW = 256;

async function demo(): Promise<number> {
  const work = await mkdtemp(join(tmpdir(), "lmpack-demo-"));
  try {
    step(`1. inspect the embedded model (${FIXTURE})`);
    const source = await openCheckpoint(FIXTURE);
    console.log(renderInspect(inspectCheckpoint(source)).split("\n").slice(0, 9).join("\n"));

    const container = join(work, "fixture.lmpack");
    step("2. pack it into one .lmpack container (streaming, crc32 per blob)");
    await exportLmpack(source, container);
    await source.close();
    const file = await LmpackFile.open(container);
    const failures = await file.verifyAll();
    console.log(`${container}: ${file.tensors.length} tensors, ${file.sideFiles.size} side files, ${formatBytes(file.source.byteLength)}; checksums: ${failures.length === 0 ? "all match" : `${failures.length} FAILED`}`);
    await file.close();

    const unpacked = join(work, "unpacked");
    step("3. unpack the container back to a Hugging Face directory");
    const packed = await openCheckpoint(container);
    await exportSafetensors(packed, unpacked);
    await packed.close();

    step("4. compare with the original, byte for byte");
    let allSame = failures.length === 0;
    for (const name of ["model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"]) {
      const same = Buffer.compare(await readFile(join(FIXTURE, name)), await readFile(join(unpacked, name))) === 0;
      allSame &&= same;
      console.log(`${same ? "identical" : "DIFFERENT"}  ${name}`);
    }
    console.log(allSame ? "\nround trip through the container is bit-exact" : "\nround trip FAILED");
    if (!allSame) return 3;
    await quantizeAndEvaluate(work);
    return 0;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * Steps 5–6: calibrate on the first half of this repository's README (technical prose, like the
 * model's training text), quantize with GPTQ 4-bit g128, and compare perplexity before and after
 * on the README's second half (never the calibration text).
 */
async function quantizeAndEvaluate(work: string): Promise<void> {
  const source = await openCheckpoint(FIXTURE);
  const tokenizer = await loadTokenizer(FIXTURE);
  const ids = tokenizer.encode(await readFile(README, "utf8"));
  const half = Math.floor(ids.length / 2);
  const calibration = windows(ids.subarray(0, half), WINDOW);
  const evaluation = windows(ids.subarray(half), WINDOW);
  step(`5. calibrate on ${calibration.length}×${WINDOW} tokens of README.md, quantize with GPTQ 4-bit g128 into .lmpack, verify against the source (on the GPU when one is present)`);
  const weights = await loadLlamaWeights(source);
  const entries = calibrateHessians(new LlamaForward(weights, WINDOW), calibration);
  const byName = new Map(entries.flatMap((e) => [[e.name, e.hessian] as const, ...e.aliases.map((a) => [a, e.hessian] as const)]));
  const quantizedPath = join(work, "fixture-gptq-w4g128.lmpack");
  const device = await openQuantizerDevice("auto");
  try {
    const quantized = quantizeCheckpoint(source, { method: "gptq", bits: 4, groupSize: 128, sym: true, actOrder: false, percDamp: 0.01, hessians: { get: async (name) => byName.get(name) }, ...(device.deferred === undefined ? {} : { deferred: device.deferred }), ...(device.factorize === undefined ? {} : { factorize: device.factorize }) });
    await exportLmpack(quantized, quantizedPath);
  } finally {
    device.close();
  }
  console.log(`GPTQ factorization and loop on ${device.description}`);
  const packed = await openCheckpoint(quantizedPath);
  const packedWeights = await loadLlamaWeights(packed);
  await packed.close();
  console.log(`${quantizedPath}: ${formatBytes((await stat(quantizedPath)).size)} (the dense bf16 model: ${formatBytes((await stat(join(FIXTURE, "model.safetensors"))).size)})`);
  const check = await openCheckpoint(quantizedPath);
  const report = await verifyCheckpoint(check, source, { device: "auto" });
  await check.close();
  await source.close();
  const packedRows = report.rows.filter((r) => r.representation !== "dense");
  const worst = Math.max(...packedRows.map((r) => r.relativeRmsError));
  const gpuChecked = packedRows.filter((r) => r.gpuCpuMismatches !== undefined);
  const agreement = gpuChecked.length === 0 ? "" : `; GPU = CPU bit for bit in ${gpuChecked.filter((r) => r.gpuCpuMismatches === 0).length} of ${gpuChecked.length}`;
  console.log(`verified on ${report.device}: ${packedRows.length} packed layers, worst relative RMS error ${worst.toFixed(4)}${agreement}: ${report.ok ? "PASS" : "FAIL"}`);
  step(`6. perplexity on the other ${evaluation.length}×${WINDOW} tokens of README.md (CPU reference forward)`);
  const before = perplexity(new LlamaForward(weights, WINDOW), evaluation).perplexity;
  const after = perplexity(new LlamaForward(packedWeights, WINDOW), evaluation).perplexity;
  console.log(`perplexity before packing ${before.toFixed(3)}, after GPTQ 4-bit g128 ${after.toFixed(3)} (${(((after - before) / before) * 100).toFixed(2)} %)`);

  step("7. export the quantized model to GGUF Q4_0 for llama.cpp: the 4-bit codes are carried over, not requantized");
  const ggufPath = join(work, "fixture-q4_0.gguf");
  const again = await openCheckpoint(quantizedPath);
  const result = await exportGguf(again, ggufPath, { mainType: "Q4_0" });
  const exact = result.tensors.filter((t) => t.how === "exact").length;
  const embedding = result.tensors.find((t) => t.ggufName === "token_embd.weight");
  console.log(`${ggufPath}: ${formatBytes(result.bytes)}; ${exact} linears carried code for code; norms F32; tied embedding/output ${embedding?.type}${embedding?.note === undefined ? "" : ` (${embedding.note})`}`);
  const gguf = await openCheckpoint(ggufPath);
  const name = "model.layers.0.mlp.down_proj.weight";
  const codes = async (c: typeof gguf) => ((await c.tensors.find((t) => t.name === name)!.packed!.load()) as IntGroupTensor).codes;
  const same = Buffer.compare(Buffer.from(await codes(again)), Buffer.from(await codes(gguf))) === 0;
  console.log(`${name}: codes read back from the GGUF ${same ? "equal" : "DIFFER FROM"} the .lmpack codes`);
  await gguf.close();
  await again.close();

  step("8. export it to ONNX for onnxruntime: MatMulNBits with the same codes, a GroupQueryAttention decoder, genai_config.json");
  await onnxStep(ROOT, quantizedPath, join(work, "fixture-onnx"), evaluation, after);
}

function step(title: string): void {
  console.log(`\n== ${title}`);
}

demo().then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.exitCode = reportError(error, false);
  },
);
