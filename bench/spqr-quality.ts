#!/usr/bin/env node
/**
 * SpQR against RTN and GPTQ at the same 3-bit 16-column groups, on every decoder linear of a
 * real model: the layer's relative output error tr(ΔW H ΔWᵀ) / tr(W H Wᵀ) and bits per weight,
 * per layer and in total. H comes from a store written by `lmpack calibrate` (real activations)
 * or the embedding proxy (the default; converters/hessians/embedding-proxy.ts: each layer's
 * inputs built from the model's own token-embedding rows).
 *
 *   node dist/bench/spqr-quality.js [--hessians <store>|embedding-proxy] [--model DIR] [--threshold 0.2] [--json FILE]
 *
 * Bits per weight, the papers' way: RTN/GPTQ 3-bit g16 asym = 3 + (16 + 3)/16 (fp16 scale and
 * 3-bit zero per group); SpQR = 3 + 6/16 + 64/256 + 32·outlier share (formats/spqr/types.ts).
 * Deterministic: any machine prints the same table (only the seconds differ).
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { openHfDirectory } from "../converters/hf/import-local.js";
import { benchHessians } from "./hessians.js";
import { isDecoderLinear, quantizeCheckpoint, type IntMethod, type LayerQuantReport } from "../converters/int-group/quantize-checkpoint.js";
import { quantizeSpqrCheckpoint, type SpqrLayerReport } from "../converters/spqr/quantize-checkpoint.js";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

const here = fileURLToPath(import.meta.url);
const model = arg("model", join(here, "..", "..", "..", "..", "shared", "models", "docs-llama-16m"));
const threshold = Number(arg("threshold", "0.2"));
const INT_BITS_PER_WEIGHT = 3 + (16 + 3) / 16;
const started = performance.now();
const checkpoint = await openHfDirectory(model);
const hessianSpec = arg("hessians", "embedding-proxy");
const hessians = await benchHessians(hessianSpec, checkpoint);
const layers = checkpoint.tensors.filter((t) => isDecoderLinear(t.name)).map((t) => t.name);

interface Row {
  layer: string;
  shape: string;
  rtn: number;
  gptq: number;
  spqr: number;
  outlierShare: number;
  spqrBits: number;
  seconds: { gptq: number; spqr: number };
}
const rows: Row[] = [];
for (const layer of layers) {
  const int = async (method: IntMethod) => {
    let report: LayerQuantReport | undefined;
    const view = quantizeCheckpoint(checkpoint, { method, bits: 3, groupSize: 16, sym: false, hessians, actOrder: method === "gptq", percDamp: 0.01, select: (n) => n === layer, onLayer: (r) => (report = r) });
    await view.tensors.find((t) => t.name === layer)!.packed!.load();
    return report!;
  };
  const rtn = await int("rtn");
  const gptq = await int("gptq");
  let spqr: SpqrLayerReport | undefined;
  const view = quantizeSpqrCheckpoint(checkpoint, { hessians, quantizer: { outlierRelativeThreshold: threshold }, select: (n) => n === layer, onLayer: (r) => (spqr = r) });
  await view.tensors.find((t) => t.name === layer)!.packed!.load();
  rows.push({ layer, shape: `${rtn.outFeatures}x${rtn.inFeatures}`, rtn: rtn.relativeOutputError!, gptq: gptq.relativeOutputError!, spqr: spqr!.relativeOutputError!, outlierShare: spqr!.outlierShare, spqrBits: spqr!.bitsPerWeight, seconds: { gptq: gptq.seconds, spqr: spqr!.seconds } });
}
await checkpoint.close();

const pct = (x: number) => (x * 100).toFixed(4);
console.log(`# SpQR quality: ${JSON.stringify({ model, threshold, hessians: hessianSpec, seconds: Number(((performance.now() - started) / 1000).toFixed(1)) })}\n`);
console.log("| layer | shape | RTN-3bit-g16 out err % | GPTQ-3bit-g16 out err % | SpQR out err % | SpQR outliers % | SpQR bits/w | GPTQ s | SpQR s |");
console.log("|---|---|---|---|---|---|---|---|---|");
for (const r of rows) {
  console.log(`| ${r.layer.replace(/^model\.layers\./, "").replace(/\.weight$/, "")} | ${r.shape} | ${pct(r.rtn)} | ${pct(r.gptq)} | ${pct(r.spqr)} | ${(r.outlierShare * 100).toFixed(2)} | ${r.spqrBits.toFixed(3)} | ${r.seconds.gptq.toFixed(2)} | ${r.seconds.spqr.toFixed(2)} |`);
}
const n = rows.length;
const mean = (f: (r: Row) => number) => rows.reduce((s, r) => s + f(r), 0) / n;
const lowest = rows.filter((r) => r.spqr < r.gptq && r.spqr < r.rtn).length;
console.log(`| **mean over ${n} layers** | | ${pct(mean((r) => r.rtn))} | ${pct(mean((r) => r.gptq))} | ${pct(mean((r) => r.spqr))} | ${(mean((r) => r.outlierShare) * 100).toFixed(2)} | ${mean((r) => r.spqrBits).toFixed(3)} | | |`);
console.log(`\nSpQR has the lowest output error on ${lowest}/${n} layers (${((lowest / n) * 100).toFixed(1)} %). Bits per weight: RTN/GPTQ-3bit-g16 ${INT_BITS_PER_WEIGHT.toFixed(3)}, SpQR ${mean((r) => r.spqrBits).toFixed(3)} on average.`);
const json = arg("json", "");
if (json !== "") await writeFile(json, JSON.stringify(rows, null, 1));
