#!/usr/bin/env node
/**
 * CPU time of VPTQ per 4096×4096 layer at v8/k4096 and v8/k65536 (one thread):
 *
 *   node dist/bench/vptq-speed.js [--shape 4096x4096] [--configs 8/4096,8/65536] [--kmeans-iters 100]
 *
 * Weights Gaussian-like with heavy-tailed entries; H = XᵀX of 256 random correlated rows + I.
 * k-means dominates at large k; `--kmeans-iters` caps its Lloyd steps (the reference's kiter is
 * 100): the table gives the measured total and the iterations actually run, so a capped run
 * can be extrapolated. The GPU engine issue is meant to take this from minutes to seconds.
 */
import { cpus } from "node:os";
import { benchHessian, benchRandom } from "./random-layer.js";
import { quantizeVptq } from "../formats/vptq/quantize.js";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}


const [m, n] = arg("shape", "4096x4096").split("x").map(Number) as [number, number];
const configs = arg("configs", "8/4096,8/65536").split(",").map((c) => c.split("/").map(Number) as [number, number]);
const iterations = Number(arg("kmeans-iters", "100"));
const random = benchRandom(m * 31 + n);
const weight = new Float32Array(m * n).map(() => random() * 0.04 * (random() > 0.495 ? 8 : 1));
const h = benchHessian(n, random);
console.log(`# VPTQ speed (CPU: ${cpus()[0]?.model ?? "?"}, one thread, Node ${process.version}, ${new Date().toISOString().slice(0, 10)})\n`);
console.log("| shape [out×in] | v | k | k-means iterations run (cap) | total s |");
console.log("|---|---|---|---|---|");
for (const [vectorLen, numCentroids] of configs) {
  const t = performance.now();
  const result = quantizeVptq(weight, m, n, { size: n, data: h }, { vectorLen, numCentroids, kmeansIterations: iterations });
  const seconds = (performance.now() - t) / 1000;
  const runs = result.codebooks.map((c) => c.objectives.length).join(", ");
  console.log(`| ${m}×${n} | ${vectorLen} | ${numCentroids} | ${runs} (${iterations}) | ${seconds.toFixed(1)} |`);
}
