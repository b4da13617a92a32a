#!/usr/bin/env node
/**
 * The model-level quality table (issue 10): every method at the reference rows' settings on one
 * model, with real calibration Hessians, scored by perplexity on held-out text, next to the
 * original implementations' results (../shared/ref/reference-quality.md). One command:
 *
 *   node dist/bench/quality-table.js [--model ../shared/models/docs-llama-16m]
 *       [--calibration ../shared/text/wikitext2-test.raw] [--eval ../shared/text/docs-valid.txt]
 *       [--hessians <store>|sequential|sequential-layer] [--rows gptq-w4g128,vptq-v4k256,...] [--workers N] [--device auto]
 *       [--max-tokens N] [--keep DIR] [--sample-seed N]
 *
 * It drives lmpack's own CLI, so each row is exactly what a user would run, and prints the
 * commands: `calibrate` once unless `--hessians` is given (WikiText-2 test text, 128 windows of
 * 512 tokens, as the reference runs), then per row `quantize … --to lmpack`, `inspect --json` (true bits per weight: codes,
 * scales, zeros, codebooks, outliers, everything stored for the packed linears) and `eval --json`
 * (the protocol of ../shared/models/README.md). Calibration text and evaluation text are never
 * the same. `--hessians sequential` makes each row's `quantize` calibrate every layer through
 * the already quantized ones (as the reference GPTQ and SpQR rows do) instead of reading the
 * unquantized model's Hessians from a store. Rows run in `--workers` child processes (a whole
 * number from 1 to the core count, default 2 or fewer); the table is deterministic.
 */
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { availableParallelism, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { QUALITY_ROWS, type QualityRow } from "./quality-rows.js";

function arg(name: string, fallback: string): string;
function arg(name: string): string | undefined;
function arg(name: string, fallback?: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

/** A bad flag: one line naming it, exit code 1 (the CLI's usage code), before anything is computed. */
function usage(message: string): never {
  console.error(`quality-table: ${message}`);
  process.exit(1);
}

/** `--<name>` as a whole number in 1 … max; the default is used only when the flag is absent. */
function count(name: string, fallback: number, max: number): number {
  const text = arg(name);
  if (text === undefined && process.argv.includes(`--${name}`)) usage(`--${name} needs a value (a whole number from 1 to ${max})`);
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 1 || value > max) usage(`--${name} must be a whole number from 1 to ${max} (the cores available), got "${text}"`);
  return value;
}

const FLAGS = ["model", "calibration", "eval", "hessians", "rows", "workers", "device", "max-tokens", "keep", "sample-seed"];
if (process.argv.includes("--help") || process.argv.includes("-h")) {
  console.log(`node dist/bench/quality-table.js ${FLAGS.map((f) => `[--${f} …]`).join(" ")}  (see the header of bench/quality-table.ts)`);
  process.exit(0);
}
// Every flag takes a value: an unknown one (a typo) must not start an hour of work with defaults.
for (const word of process.argv.slice(2)) if (word.startsWith("--") && !FLAGS.includes(word.slice(2))) usage(`unknown flag ${word}; known: ${FLAGS.map((f) => `--${f}`).join(", ")}`);

const here = dirname(fileURLToPath(import.meta.url));
const CLI = join(here, "..", "cli", "main.js");
const shared = process.env["LMPACK_SHARED"] ?? join(here, "..", "..", "..", "shared");
const model = arg("model", join(shared, "models", "docs-llama-16m"));
const calibration = arg("calibration", join(shared, "text", "wikitext2-test.raw"));
const evalText = arg("eval", join(shared, "text", "docs-valid.txt"));
const cores = availableParallelism();
/** Rows quantized at once, each in its own CLI process: more than the cores only slows every row down. */
const workers = count("workers", Math.min(2, cores), cores);
/** Each row's evaluation gets its share of the cores (eval --threads; the result is the same at any count). */
const evalThreads = Math.floor(cores / workers);
const device = arg("device", "auto");
const maxTokens = arg("max-tokens");
const wanted = arg("rows")?.split(",");
/** The reference's calibration: 128 windows of 512 tokens of WikiText-2 test text. */
// `--sample-seed N`: the 128 windows drawn at random from seed N (GPTQ's and SpQR's sampler)
// instead of spread evenly; lmpack checks the value.
const sampleSeed = arg("sample-seed");
const WINDOWS = ["--protocol", "wikitext2", "--samples", "128", "--seq-len", "512", ...(sampleSeed === undefined ? [] : ["--sample-seed", sampleSeed])];
const rows = wanted === undefined ? QUALITY_ROWS.filter((r) => r.optIn !== true) : QUALITY_ROWS.filter((r) => wanted.includes(r.id));
if (rows.length === 0) usage(`no row matches --rows ${wanted?.join(",")}; known: ${QUALITY_ROWS.map((r) => r.id).join(", ")}`);

interface Outcome {
  row: QualityRow;
  bitsPerWeight: number;
  perplexity: number;
  quantizeSeconds: number;
  evalSeconds: number;
}

/** Runs the CLI; resolves with stdout, rejects with stderr on a non-zero exit. */
function lmpack(args: string[]): Promise<string> {
  console.error(`$ lmpack ${args.join(" ")}`);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    child.on("close", (code) => (code === 0 ? resolve(out) : reject(new Error(`lmpack ${args.join(" ")} exited ${code}:\n${err}${out}`))));
  });
}

async function evaluate(path: string): Promise<{ perplexity: number; seconds: number }> {
  const started = performance.now();
  const out = JSON.parse(await lmpack(["eval", path, "--text", evalText, "--tokenizer", model, "--device", device, "--threads", String(evalThreads), "--json", ...(maxTokens === undefined ? [] : ["--max-tokens", maxTokens])])) as { perplexity: number };
  return { perplexity: out.perplexity, seconds: (performance.now() - started) / 1000 };
}

/** GPTQ, SpQR, VPTQ and layer-wise SignRound read H; RTN, FP6 and the block-wise rows do not. */
function readsHessians(row: QualityRow): boolean {
  return row.windows !== true && ["gptq", "spqr", "vptq", "signround"].some((method) => row.args.includes(method));
}

/**
 * `--hessians sequential-layer`: sequential calibration with all of a layer's H taken from its
 * full-precision weights (`--no-true-sequential`), as SpQR's main.py runs without
 * `--true-sequential`, which its README's launch command (the reference rows' recipe) leaves out.
 */
const SEQUENTIAL_LAYER = "sequential-layer";

async function runRow(row: QualityRow, hessians: string, dir: string): Promise<Outcome> {
  const out = join(dir, `${row.id}.lmpack`);
  let started = performance.now();
  const needsHessians = readsHessians(row);
  const hessianArgs = hessians === "sequential" || hessians === SEQUENTIAL_LAYER
    ? ["--hessians", "sequential", ...(hessians === SEQUENTIAL_LAYER ? ["--no-true-sequential"] : []), "--calibration-text", calibration, ...WINDOWS]
    : ["--hessians", hessians];
  const calibrationArgs = row.windows === true ? ["--calibration-text", calibration, ...WINDOWS] : needsHessians ? hessianArgs : [];
  await lmpack(["quantize", model, ...row.args, ...calibrationArgs, "--device", device, "--to", "lmpack", "--out", out]);
  const quantizeSeconds = (performance.now() - started) / 1000;
  const inspected = JSON.parse(await lmpack(["inspect", out, "--json"])) as { quantization?: { effectiveBitsPerWeight?: number } };
  started = performance.now();
  const scored = await evaluate(out);
  return { row, bitsPerWeight: inspected.quantization?.effectiveBitsPerWeight ?? NaN, perplexity: scored.perplexity, quantizeSeconds, evalSeconds: scored.seconds };
}

const keep = arg("keep");
const dir = keep ?? (await mkdtemp(join(tmpdir(), "lmpack-quality-")));
try {
  let hessians = arg("hessians");
  if (hessians === undefined && rows.some(readsHessians)) {
    hessians = join(dir, "hessians.safetensors");
    await lmpack(["calibrate", model, "--text", calibration, ...WINDOWS, "--device", device, "--out", hessians]);
  }
  const dense = await evaluate(model);
  const outcomes: Outcome[] = [];
  const queue = [...rows];
  await Promise.all(Array.from({ length: Math.min(workers, queue.length) }, async () => {
    for (let row = queue.shift(); row !== undefined; row = queue.shift()) outcomes.push(await runRow(row, hessians ?? "", dir));
  }));
  outcomes.sort((a, b) => rows.indexOf(a.row) - rows.indexOf(b.row));
  console.log(`\n# Quality of ${model.split("/").pop()} (${new Date().toISOString().slice(0, 10)}): calibration ${calibration.split("/").pop()}${sampleSeed === undefined ? "" : ` (windows drawn from seed ${sampleSeed})`}${hessians === SEQUENTIAL_LAYER ? ", sequential calibration layer by layer" : hessians === "sequential" ? ", sequential calibration" : ""}, evaluation ${evalText.split("/").pop()}${maxTokens === undefined ? "" : ` (first ${maxTokens} tokens)`}\n`);
  console.log(`fp32 (unquantized): perplexity ${dense.perplexity.toFixed(4)} (${dense.seconds.toFixed(0)} s)\n`);
  console.log("| method | settings | lmpack bits/weight | perplexity | Δ vs fp32 | reference (bpw, perplexity) | quantize s | eval s |");
  console.log("|---|---|---|---|---|---|---|---|");
  for (const o of outcomes) {
    const reference = o.row.reference === undefined ? "—" : `${o.row.reference.bitsPerWeight}, ${o.row.reference.perplexity.toFixed(4)}`;
    console.log(`| ${o.row.method} | ${o.row.settings} | ${o.bitsPerWeight.toFixed(4)} | ${o.perplexity.toFixed(4)} | ${(o.perplexity - dense.perplexity >= 0 ? "+" : "")}${(o.perplexity - dense.perplexity).toFixed(2)} | ${reference} | ${o.quantizeSeconds.toFixed(1)} | ${o.evalSeconds.toFixed(0)} |`);
  }
} finally {
  if (keep === undefined) await rm(dir, { recursive: true, force: true });
}
