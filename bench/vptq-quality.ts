#!/usr/bin/env node
/**
 * VPTQ against RTN and GPTQ at about the same total bits per weight (codebooks and norm
 * included for VPTQ; fp16 scale and zero per group for RTN/GPTQ), on every decoder linear of a
 * real model: the relative output error tr(ΔW H ΔWᵀ) / tr(W H Wᵀ) per layer. H comes from real
 * activations, a store written by `lmpack calibrate` (the recorded run:
 * `lmpack calibrate ../shared/models/docs-llama-16m --text ../shared/text/docs-valid.txt
 * --samples 64 --seq-len 512 --out /tmp/h16`), or from the embedding proxy with
 * `--hessians embedding-proxy` (converters/hessians/embedding-proxy.ts).
 *
 *   node dist/bench/vptq-quality.js --hessians <store>|embedding-proxy [--model DIR] [--json FILE]
 *
 * Settings:
 *   ~2 bits: VPTQ v4-k256 (2 index bits/weight)          vs 2-bit g64 asym (2 + 18/64 = 2.281)
 *   ~3 bits: VPTQ v4-k256-16 (3 index bits/weight)       vs 3-bit g64 asym (3 + 19/64 = 3.297)
 * GPTQ with act-order and percdamp 0.01; VPTQ with its defaults (Hessian-weighted k-means++,
 * seed 0, act-order, norm). Deterministic: any machine prints the same errors.
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { openHfDirectory } from "../converters/hf/import-local.js";
import { benchHessians } from "./hessians.js";
import { isDecoderLinear, quantizeCheckpoint, type IntMethod, type LayerQuantReport } from "../converters/int-group/quantize-checkpoint.js";
import { quantizeVptqCheckpoint, type VptqLayerReport } from "../converters/vptq/quantize-checkpoint.js";
import type { IntBits } from "../formats/int-group/types.js";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

const SETTINGS = [
  { name: "~2 bits", vptq: { vectorLen: 4, numCentroids: 256, numResCentroids: 0 }, int: { bits: 2 as IntBits, groupSize: 64 } },
  { name: "~3 bits", vptq: { vectorLen: 4, numCentroids: 256, numResCentroids: 16 }, int: { bits: 3 as IntBits, groupSize: 64 } },
];

const here = fileURLToPath(import.meta.url);
const model = arg("model", join(here, "..", "..", "..", "..", "shared", "models", "docs-llama-16m"));
const started = performance.now();
const checkpoint = await openHfDirectory(model);
const hessianSpec = arg("hessians", "");
if (hessianSpec === "") throw new Error("--hessians <store written by lmpack calibrate> or --hessians embedding-proxy");
const hessians = await benchHessians(hessianSpec, checkpoint);
const layers = checkpoint.tensors.filter((t) => isDecoderLinear(t.name)).map((t) => t.name);

const results: Record<string, unknown>[] = [];
console.log(`# VPTQ quality: ${JSON.stringify({ model, hessians: hessianSpec })}\n`);
for (const setting of SETTINGS) {
  const intBits = setting.int.bits + (16 + setting.int.bits) / setting.int.groupSize;
  console.log(`## ${setting.name}: VPTQ ${JSON.stringify(setting.vptq)} vs RTN/GPTQ ${setting.int.bits}-bit g${setting.int.groupSize} (${intBits.toFixed(3)} bits/w)\n`);
  console.log("| layer | shape | RTN out err % | GPTQ out err % | VPTQ out err % | VPTQ bits/w (index + codebooks) | VPTQ s |");
  console.log("|---|---|---|---|---|---|---|");
  let lowest = 0;
  const sums = { rtn: 0, gptq: 0, vptq: 0, bits: 0 };
  for (const layer of layers) {
    const int = async (method: IntMethod) => {
      let report: LayerQuantReport | undefined;
      const view = quantizeCheckpoint(checkpoint, { method, ...setting.int, sym: false, hessians, actOrder: method === "gptq", percDamp: 0.01, select: (n) => n === layer, onLayer: (r) => (report = r) });
      await view.tensors.find((t) => t.name === layer)!.packed!.load();
      return report!;
    };
    const rtn = await int("rtn");
    const gptq = await int("gptq");
    let vptq: VptqLayerReport | undefined;
    const view = quantizeVptqCheckpoint(checkpoint, { hessians, quantizer: setting.vptq, select: (n) => n === layer, onLayer: (r) => (vptq = r) });
    await view.tensors.find((t) => t.name === layer)!.packed!.load();
    const [r, g, v] = [rtn.relativeOutputError!, gptq.relativeOutputError!, vptq!.relativeOutputError!];
    if (v < r && v < g) lowest++;
    sums.rtn += r;
    sums.gptq += g;
    sums.vptq += v;
    sums.bits += vptq!.bitsPerWeight;
    results.push({ setting: setting.name, layer, rtn: r, gptq: g, vptq: v, vptqBits: vptq!.bitsPerWeight });
    console.log(`| ${layer.replace(/^model\.layers\./, "").replace(/\.weight$/, "")} | ${rtn.outFeatures}x${rtn.inFeatures} | ${(r * 100).toFixed(4)} | ${(g * 100).toFixed(4)} | ${(v * 100).toFixed(4)} | ${vptq!.bitsPerWeight.toFixed(3)} (${vptq!.indexBitsPerWeight.toFixed(2)} + ${vptq!.codebookBitsPerWeight.toFixed(3)}) | ${vptq!.seconds.toFixed(1)} |`);
  }
  const n = layers.length;
  console.log(`| **mean over ${n} layers** | | ${((sums.rtn / n) * 100).toFixed(4)} | ${((sums.gptq / n) * 100).toFixed(4)} | ${((sums.vptq / n) * 100).toFixed(4)} | ${(sums.bits / n).toFixed(3)} | |`);
  console.log(`\nVPTQ has the lowest output error on ${lowest}/${n} layers (${((lowest / n) * 100).toFixed(1)} %); mean VPTQ bits/w ${(sums.bits / n).toFixed(3)} vs ${intBits.toFixed(3)}.\n`);
}
await checkpoint.close();
console.log(`Total ${((performance.now() - started) / 1000).toFixed(0)} s.`);
const json = arg("json", "");
if (json !== "") await writeFile(json, JSON.stringify(results, null, 1));
