import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { formatBytes } from "../converters/io/byte-size.js";
import { exportOnnxDecoder, MODEL_FILE } from "../converters/onnx/export-decoder.js";
import { importMatMulNBits } from "../converters/onnx/import.js";
import { openCheckpoint } from "../converters/open.js";
import type { IntGroupTensor } from "../formats/int-group/types.js";
import { windowNll } from "../model/perplexity.js";

/**
 * Demo step 8: the GPTQ-quantized embedded model as an onnxruntime folder (model.onnx with
 * com.microsoft.MatMulNBits, genai_config.json, tokenizer files). The 4-bit codes are carried
 * over: reading them back out of model.onnx gives the .lmpack codes of every linear. When
 * onnxruntime-node is installed in .runtimes/ (`npm run runtimes`, or any `npm test`), the
 * folder also runs there, on the same evaluation windows as step 6.
 */
export async function onnxStep(root: string, quantizedPath: string, outDir: string, evaluation: readonly Int32Array[], lmpackPerplexity: number): Promise<void> {
  const checkpoint = await openCheckpoint(quantizedPath);
  let matching = 0;
  let linears = 0;
  try {
    const result = await exportOnnxDecoder(checkpoint, outDir);
    const nbits = result.linears.filter((l) => l.how === "matmul-nbits").length;
    console.log(`${outDir}: ${result.files.join(", ")}; ${formatBytes(result.modelBytes)} model.onnx, ${nbits} of ${result.linears.length} linears as MatMulNBits`);
    const imported = importMatMulNBits(await readFile(join(outDir, MODEL_FILE)));
    for (const { name, tensor } of imported) {
      const entry = checkpoint.tensors.find((t) => t.name === `${name}.weight`);
      const source = entry?.packed?.representation === "int-group" ? await entry.packed.load() : undefined;
      linears++;
      if (source !== undefined && sameCodes(source, tensor)) matching++;
    }
  } finally {
    await checkpoint.close();
  }
  console.log(`codes and scales read back from model.onnx equal the .lmpack ones in ${matching} of ${linears} linears`);

  const ort = await loadInstalledOnnxRuntime(root);
  if (ort === undefined) {
    console.log("onnxruntime-node is not installed here (npm run runtimes installs it): the model was not run");
    return;
  }
  const session = await ort.InferenceSession.create(join(outDir, MODEL_FILE), { executionProviders: ["cpu"], logSeverityLevel: 3 });
  const config = (JSON.parse(await readFile(join(outDir, "genai_config.json"), "utf8")) as { model: { vocab_size: number; decoder: { num_hidden_layers: number; num_key_value_heads: number; head_size: number } } }).model;
  let nll = 0;
  for (const ids of evaluation) {
    const feeds: Record<string, unknown> = {
      input_ids: new ort.Tensor("int64", BigInt64Array.from(ids, (id) => BigInt(id)), [1, ids.length]),
      attention_mask: new ort.Tensor("int64", new BigInt64Array(ids.length).fill(1n), [1, ids.length]),
    };
    const empty = new ort.Tensor("float32", new Float32Array(0), [1, config.decoder.num_key_value_heads, 0, config.decoder.head_size]);
    for (let i = 0; i < config.decoder.num_hidden_layers; i++) feeds[`past_key_values.${i}.key`] = feeds[`past_key_values.${i}.value`] = empty;
    const logits = (await session.run(feeds))["logits"]!.data as Float32Array;
    nll += windowNll(logits, ids, config.vocab_size);
  }
  await session.release();
  const scored = evaluation.reduce((sum, ids) => sum + ids.length - 1, 0);
  const ortPerplexity = Math.exp(nll / scored);
  console.log(`perplexity in onnxruntime ${ortPerplexity.toFixed(3)} (lmpack's forward on the same 4-bit weights: ${lmpackPerplexity.toFixed(3)})`);
}

function sameCodes(a: IntGroupTensor, b: IntGroupTensor): boolean {
  const same = (x: ArrayLike<number>, y: ArrayLike<number>) => x.length === y.length && Array.prototype.every.call(x, (v: number, i: number) => Object.is(v, y[i]));
  return same(a.codes, b.codes) && same(a.scales, b.scales) && same(a.zeros, b.zeros);
}

interface DemoOrt {
  InferenceSession: { create(path: string, options: object): Promise<{ run(feeds: Record<string, unknown>): Promise<Record<string, { data: unknown }>>; release(): Promise<void> }> };
  Tensor: new (type: string, data: BigInt64Array | Float32Array, dims: readonly number[]) => unknown;
}

/** onnxruntime-node from the repository's .runtimes/ folder, if installed; never downloaded here (the demo is offline). */
async function loadInstalledOnnxRuntime(root: string): Promise<DemoOrt | undefined> {
  const entry = join(root, ".runtimes", "node_modules", "onnxruntime-node", "dist", "index.js");
  if (!existsSync(entry)) return undefined;
  const loaded = (await import(pathToFileURL(entry).href)) as { default?: DemoOrt } & Partial<DemoOrt>;
  return loaded.InferenceSession !== undefined ? (loaded as DemoOrt) : loaded.default;
}
