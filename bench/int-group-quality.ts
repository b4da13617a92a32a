#!/usr/bin/env node
/**
 * RTN vs GPTQ vs SignRound on every decoder linear of a real model, per layer and in total:
 * weight MSE and the layer's relative output error tr(ΔW H ΔWᵀ) / tr(W H Wᵀ), with H from a
 * store written by `lmpack calibrate` (real activations) or the embedding proxy (the default;
 * converters/hessians/embedding-proxy.ts).
 *
 *   node dist/bench/int-group-quality.js [--hessians <store>|embedding-proxy] [--model DIR] [--iters 200] [--workers N] [--json FILE]
 *
 * Configurations: W4G128 sym and W2G64 asym (the auto-round reference rows). Jobs (layer ×
 * configuration × method) run in `--workers` child processes, largest first; results are
 * deterministic, so any machine gives the same table (only the seconds differ).
 */
import { fork } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { openHfDirectory } from "../converters/hf/import-local.js";
import { embeddingProxyHessians } from "../converters/hessians/embedding-proxy.js";
import { openHessianStore, writeHessianStore } from "../converters/hessians/store.js";
import { isDecoderLinear, quantizeCheckpoint, type IntMethod, type LayerQuantReport } from "../converters/int-group/quantize-checkpoint.js";
import type { IntBits } from "../formats/int-group/types.js";

interface Job {
  layer: string;
  config: string;
  method: IntMethod;
  cost: number;
}

const CONFIGS: Record<string, { bits: IntBits; groupSize: number; sym: boolean }> = {
  W4G128: { bits: 4, groupSize: 128, sym: true },
  W2G64: { bits: 2, groupSize: 64, sym: false },
};
const METHODS: IntMethod[] = ["rtn", "gptq", "signround"];

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

async function runJobs(model: string, store: string, jobs: Job[], iters: number): Promise<(LayerQuantReport & { config: string })[]> {
  const checkpoint = await openHfDirectory(model);
  const hessians = await openHessianStore(store);
  const results: (LayerQuantReport & { config: string })[] = [];
  try {
    for (const job of jobs) {
      const c = CONFIGS[job.config]!;
      let report: LayerQuantReport | undefined;
      const view = quantizeCheckpoint(checkpoint, { method: job.method, ...c, hessians, iters, select: (n) => n === job.layer, onLayer: (r) => (report = r) });
      await view.tensors.find((t) => t.name === job.layer)!.packed!.load();
      results.push({ ...report!, config: job.config });
    }
  } finally {
    await hessians.close();
    await checkpoint.close();
  }
  return results;
}

async function main(): Promise<void> {
  if (process.argv.includes("--worker")) {
    process.on("message", async (m: { model: string; store: string; jobs: Job[]; iters: number }) => {
      process.send!(await runJobs(m.model, m.store, m.jobs, m.iters));
      process.exit(0);
    });
    return;
  }
  const here = fileURLToPath(import.meta.url);
  const model = arg("model", join(here, "..", "..", "..", "..", "shared", "models", "docs-llama-16m"));
  const iters = Number(arg("iters", "200"));
  const workers = Number(arg("workers", "2"));
  const started = performance.now();
  const checkpoint = await openHfDirectory(model);
  // Workers read one store: a calibrated one as given, or the embedding proxy written to a temp file.
  const hessianSpec = arg("hessians", "embedding-proxy");
  const work = await mkdtemp(join(tmpdir(), "lmpack-bench-"));
  let store = hessianSpec;
  if (hessianSpec === "embedding-proxy") {
    store = join(work, "hessians.safetensors");
    await writeHessianStore(store, await embeddingProxyHessians(checkpoint), "embedding-proxy");
  }
  const layers = checkpoint.tensors.filter((t) => isDecoderLinear(t.name));
  await checkpoint.close();
  const hessianSeconds = (performance.now() - started) / 1000;
  const jobs: Job[] = layers.flatMap((t) => Object.keys(CONFIGS).flatMap((config) => METHODS.map((method) => ({ layer: t.name, config, method, cost: t.shape[0]! * t.shape[1]! * t.shape[1]! * (method === "signround" ? iters : 1) }))));
  jobs.sort((a, b) => b.cost - a.cost);
  const buckets: Job[][] = Array.from({ length: workers }, () => []);
  const load = new Array<number>(workers).fill(0);
  for (const job of jobs) {
    const i = load.indexOf(Math.min(...load));
    buckets[i]!.push(job);
    load[i]! += job.cost;
  }
  const results = (await Promise.all(buckets.filter((b) => b.length > 0).map((b) => new Promise<(LayerQuantReport & { config: string })[]>((resolve, reject) => {
    const child = fork(here, ["--worker"]);
    child.once("message", (m) => resolve(m as (LayerQuantReport & { config: string })[]));
    child.once("exit", (code) => (code === 0 ? undefined : reject(new Error(`worker exited with ${code}`))));
    child.send({ model, store, jobs: b, iters });
  })))).flat();
  await rm(work, { recursive: true, force: true });
  printTables(results, layers.map((t) => t.name), { model, hessians: hessianSpec, iters, workers, hessianSeconds, totalSeconds: (performance.now() - started) / 1000 });
  const json = arg("json", "");
  if (json !== "") await writeFile(json, JSON.stringify(results, null, 1));
}

function printTables(results: (LayerQuantReport & { config: string })[], layers: string[], run: Record<string, unknown>): void {
  console.log(`# int-group quality: ${JSON.stringify(run)}\n`);
  for (const config of Object.keys(CONFIGS)) {
    const get = (layer: string, method: IntMethod) => results.find((r) => r.name === layer && r.config === config && r.method === method)!;
    console.log(`## ${config} (${JSON.stringify(CONFIGS[config])})\n`);
    console.log("| layer | shape | RTN MSE | GPTQ MSE | SignRound MSE | RTN out err % | GPTQ out err % | SignRound out err % | GPTQ s | SignRound s |");
    console.log("|---|---|---|---|---|---|---|---|---|---|");
    const totals = { rtn: 0, gptq: 0, signround: 0 };
    const wins = { gptq: 0, signround: 0 };
    for (const layer of layers) {
      const [r, g, s] = METHODS.map((m) => get(layer, m));
      for (const [m, x] of [["rtn", r], ["gptq", g], ["signround", s]] as const) totals[m] += x!.relativeOutputError!;
      if (g!.relativeOutputError! < r!.relativeOutputError!) wins.gptq++;
      if (s!.relativeOutputError! < r!.relativeOutputError!) wins.signround++;
      const pct = (x: LayerQuantReport) => (x.relativeOutputError! * 100).toFixed(4);
      console.log(`| ${layer.replace(/^model\.layers\./, "").replace(/\.weight$/, "")} | ${r!.outFeatures}x${r!.inFeatures} | ${r!.weightMse.toExponential(3)} | ${g!.weightMse.toExponential(3)} | ${s!.weightMse.toExponential(3)} | ${pct(r!)} | ${pct(g!)} | ${pct(s!)} | ${g!.seconds.toFixed(2)} | ${s!.seconds.toFixed(1)} |`);
    }
    const n = layers.length;
    console.log(`| **mean over ${n} layers** | | | | | ${((totals.rtn / n) * 100).toFixed(4)} | ${((totals.gptq / n) * 100).toFixed(4)} | ${((totals.signround / n) * 100).toFixed(4)} | | |`);
    console.log(`\nGPTQ beats RTN on ${wins.gptq}/${n} layers (${((wins.gptq / n) * 100).toFixed(1)} %), SignRound on ${wins.signround}/${n} (${((wins.signround / n) * 100).toFixed(1)} %) in relative output error.\n`);
  }
}

await main();
