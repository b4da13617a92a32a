#!/usr/bin/env node
/**
 * CPU time of SpQR per layer on real-model shapes, with the split between the shared
 * second-order engine (upper Cholesky of H⁻¹) and the rest (leave-one-out pass, statistics,
 * column loop and its block updates), and the same layer without the statistic-code search
 * (`statsSearch: false`), whose difference is the search's cost:
 *
 *   node dist/bench/spqr-speed.js [--shapes 4096x4096,11008x4096]
 *
 * Shapes are [out, in]; weights Gaussian-like with 0.5 % heavy-tailed entries, H = XᵀX of 256
 * random correlated rows plus the identity. Prints a markdown table.
 */
import { cpus } from "node:os";
import { upperCholeskyOfInverse } from "../formats/second-order/cholesky.js";
import { benchHessian, benchRandom } from "./random-layer.js";
import { quantizeSpqr } from "../formats/spqr/quantize.js";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}


const shapes = arg("shapes", "4096x4096").split(",").map((s) => s.split("x").map(Number) as [number, number]);
console.log(`# SpQR speed (CPU: ${cpus()[0]?.model ?? "?"} ×${cpus().length}, one thread, Node ${process.version}, ${new Date().toISOString().slice(0, 10)})\n`);
console.log("| shape [out×in] | SpQR total s | of which upper Cholesky of H⁻¹ s | outliers % | without the statistic search s | the search, s per million weights |");
console.log("|---|---|---|---|---|---|");
for (const [m, n] of shapes) {
  const random = benchRandom(m * 31 + n);
  const weight = new Float32Array(m * n).map(() => random() * 0.04 * (random() > 0.495 ? 8 : 1));
  const h = benchHessian(n, random);
  let t = performance.now();
  upperCholeskyOfInverse(h.slice(), n);
  const cholesky = (performance.now() - t) / 1000;
  t = performance.now();
  const result = quantizeSpqr(weight, m, n, { size: n, data: h });
  const total = (performance.now() - t) / 1000;
  t = performance.now();
  quantizeSpqr(weight, m, n, { size: n, data: h }, { statsSearch: false });
  const rounded = (performance.now() - t) / 1000;
  const searchPerMillion = ((total - rounded) / (m * n)) * 1e6;
  console.log(`| ${m}×${n} | ${total.toFixed(1)} | ${cholesky.toFixed(1)} | ${((result.outlierCount / (m * n)) * 100).toFixed(2)} | ${rounded.toFixed(1)} | ${searchPerMillion.toFixed(2)} |`);
}
