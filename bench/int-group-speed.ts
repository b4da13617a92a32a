#!/usr/bin/env node
/**
 * CPU time per layer of the second-order quantizers on real-model shapes:
 *
 *   node dist/bench/int-group-speed.js [--shapes 4096x4096,11008x4096] [--signround-steps 3]
 *
 * GPTQ runs whole (Cholesky of H⁻¹ and the column loop are timed apart). SignRound's 200 steps
 * cost the same each (one ΔW·H product of N·K² multiply-adds dominates), so it runs
 * `--signround-steps` steps and reports the measured time per step and that × 200 — the table
 * marks it as extrapolated. Shapes are [out, in]; H = XᵀX of 256 random correlated rows plus a
 * diagonal, weights Gaussian-like. Prints a markdown table.
 */
import { cpus } from "node:os";
import { quantizeGptq } from "../formats/int-group/quantizers/gptq.js";
import { quantizeSignRound } from "../formats/int-group/quantizers/signround.js";
import { upperCholeskyOfInverse } from "../formats/second-order/cholesky.js";
import { benchHessian, benchRandom } from "./random-layer.js";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}



const shapes = arg("shapes", "4096x4096,11008x4096").split(",").map((s) => s.split("x").map(Number) as [number, number]);
const steps = Number(arg("signround-steps", "3"));
const params = { bits: 4 as const, groupSize: 128, sym: true, scaleDtype: "F16" as const };
console.log(`# int-group quantizer speed (CPU: ${cpus()[0]?.model ?? "?"} ×${cpus().length}, Node ${process.version}, ${new Date().toISOString().slice(0, 10)})\n`);
console.log("| shape [out×in] | GPTQ total s | of which upper Cholesky of H⁻¹ s | SignRound s/step (measured) | SignRound 200 steps s (extrapolated) |");
console.log("|---|---|---|---|---|");
for (const [N, K] of shapes) {
  const random = benchRandom(N * 31 + K);
  const weight = new Float32Array(N * K).map(() => random() * 0.04);
  const h = { size: K, data: benchHessian(K, random) };
  let t = performance.now();
  upperCholeskyOfInverse(h.data.slice(), K);
  const prep = (performance.now() - t) / 1000;
  t = performance.now();
  quantizeGptq(weight, N, K, h, { params });
  const gptqSeconds = (performance.now() - t) / 1000;
  t = performance.now();
  quantizeSignRound(weight, N, K, params, { hessian: h, iters: steps });
  const perStep = (performance.now() - t) / 1000 / Math.max(1, steps);
  console.log(`| ${N}×${K} | ${gptqSeconds.toFixed(1)} | ${prep.toFixed(1)} | ${perStep.toFixed(2)} | ${(perStep * 200).toFixed(0)} |`);
}
