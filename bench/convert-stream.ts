import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, stat, statfs } from "node:fs/promises";
import { cpus, release, tmpdir, totalmem } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { planByteLength } from "../converters/safetensors/writer.js";
import { llamaTensorPlans, writeSyntheticLlama } from "./synthetic-llama.js";

/**
 * Streaming benchmark: generates a synthetic Llama-2-7B-shaped checkpoint (bf16, sharded),
 * converts it several ways, each conversion in a child process of its own, and prints a
 * markdown table of throughput and peak RSS, next to plain `cp`/`dd` on the same disk.
 * The goal: peak RSS under 1 GB whatever the model size, throughput near the disk's.
 *
 *   node dist/bench/convert-stream.js [--layers 8] [--dir <parent>] [--keep] [--via auto|lib|cli] [--repeat 1] [--cold]
 *
 * Every measurement starts after `sync`, so writeback (and ext4 discards) left over from the
 * previous step are not billed to the next one; conversions fsync their own outputs.
 */

const USAGE = `usage: convert-stream.js [--layers N] [--dir DIR] [--keep] [--via auto|lib|cli] [--repeat N] [--cold]
  --layers N   decoder layers of the synthetic Llama-2-7B (default 8: ~3.8 GB of bf16; 32 is the real model)
  --dir DIR    parent of the fresh work directory (default: the OS temp dir); needs ~4.2x the model's size free
  --keep       keep the work directory (source, lmpack output) instead of deleting it
  --via        how conversions run: lib = bench/convert-child.js calling the library; cli = dist/cli/main.js
               under /usr/bin/time; auto (default) = cli when dist/cli/main.js exists, else lib
  --repeat N   run every measurement N times and report the median time (default 1; shared disks are noisy)
  --cold       drop the page cache before every measurement (root only: writes /proc/sys/vm/drop_caches)`;

const BENCH_DIR = dirname(fileURLToPath(import.meta.url));
const CHILD_SCRIPT = join(BENCH_DIR, "convert-child.js");
const CLI_SCRIPT = resolve(BENCH_DIR, "../cli/main.js");
const TIME_BIN = "/usr/bin/time";
const MB = 1e6;
const GB = 1e9;
/** Source + kept crc32 lmpack + the largest output (f32: twice the source) + slack for side files. */
const DISK_FACTOR = 4.2;

interface Conversion {
  label: string;
  /** "hf" for the generated directory, otherwise a file name in the work directory. */
  from: string;
  out: string;
  to: "safetensors" | "lmpack";
  dtype?: "f32" | "bf16";
  checksum?: "crc32" | "sha256";
  /** Later conversions read this output; delete it only at the end. */
  keepOutput?: boolean;
}

const CONVERSIONS: Conversion[] = [
  { label: "bf16 → f32 safetensors (dir, 5 GB shards)", from: "hf", out: "out-f32", to: "safetensors", dtype: "f32" },
  { label: "bf16 → bf16 safetensors (dir, copy)", from: "hf", out: "out-bf16", to: "safetensors", dtype: "bf16" },
  { label: "bf16 → lmpack (crc32)", from: "hf", out: "model-crc32.lmpack", to: "lmpack", checksum: "crc32", keepOutput: true },
  { label: "bf16 → lmpack (sha256)", from: "hf", out: "model-sha256.lmpack", to: "lmpack", checksum: "sha256" },
  { label: "lmpack (crc32, verified) → bf16 safetensors", from: "model-crc32.lmpack", out: "out-from-lmpack", to: "safetensors" },
];

interface Row {
  label: string;
  via: string;
  inputBytes: number;
  outputBytes: number;
  /** Wall time of each run, including node's start-up (~0.05 s). */
  runSeconds: number[];
  /** Largest peak RSS over the runs. */
  maxRssKiB: number | undefined;
  error?: string;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      layers: { type: "string", default: "8" },
      dir: { type: "string" },
      keep: { type: "boolean", default: false },
      via: { type: "string", default: "auto" },
      repeat: { type: "string", default: "1" },
      cold: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const layers = Number(values.layers);
  if (!Number.isInteger(layers) || layers < 1) throw new Error(`--layers must be a positive integer\n${USAGE}`);
  const repeat = Number(values.repeat);
  if (!Number.isInteger(repeat) || repeat < 1) throw new Error(`--repeat must be a positive integer\n${USAGE}`);
  const via = values.via === "auto" ? (existsSync(CLI_SCRIPT) ? "cli" : "lib") : values.via;
  if (via !== "lib" && via !== "cli") throw new Error(`--via must be auto, lib or cli\n${USAGE}`);
  if (via === "cli" && !existsSync(TIME_BIN)) throw new Error(`--via cli measures RSS with ${TIME_BIN}, which is missing (apt-get install time)`);

  const parent = resolve(values.dir ?? tmpdir());
  await mkdir(parent, { recursive: true });
  const modelBytes = llamaTensorPlans(layers).reduce((sum, p) => sum + planByteLength(p), 0);
  const fs = await statfs(parent);
  const freeBytes = fs.bavail * fs.bsize;
  if (freeBytes < DISK_FACTOR * modelBytes) {
    throw new Error(`${parent} has ${(freeBytes / GB).toFixed(1)} GB free; ${layers} layers need ~${((DISK_FACTOR * modelBytes) / GB).toFixed(1)} GB (pass --dir or fewer --layers)`);
  }
  const work = await mkdtemp(join(parent, "lmpack-bench-"));
  const cleanup = () => {
    if (!values.keep) rmSync(work, { recursive: true, force: true });
  };
  process.once("SIGINT", () => {
    cleanup();
    process.exit(130);
  });

  try {
    const cold = values.cold;
    log(`work dir ${work}; generating ${layers} layers (${(modelBytes / GB).toFixed(2)} GB bf16)`);
    const generateStarted = performance.now();
    const source = await writeSyntheticLlama(join(work, "hf"), layers);
    const generateSeconds = (performance.now() - generateStarted) / 1000;
    const sourceBytes = await diskBytes(source.dir);
    log(`generated in ${generateSeconds.toFixed(1)} s`);

    const diskRows = await measureDisk(work, source.shardPaths, cold, repeat);
    const rows = await measureConversions(work, source.dir, via, cold, repeat);

    console.log(report({ layers, sourceBytes, generateSeconds, cold, via, repeat, work, diskRows, rows }));
    return rows.some((r) => r.error !== undefined) ? 1 : 0;
  } finally {
    cleanup();
  }
}

/** Runs every conversion `repeat` times, each in a child process; a failure is recorded in its row. */
async function measureConversions(work: string, sourceDir: string, via: "lib" | "cli", cold: boolean, repeat: number): Promise<Row[]> {
  const rows: Row[] = [];
  for (const conversion of CONVERSIONS) {
    const input = conversion.from === "hf" ? sourceDir : join(work, conversion.from);
    const out = join(work, conversion.out);
    const row: Row = { label: conversion.label, via, inputBytes: 0, outputBytes: 0, runSeconds: [], maxRssKiB: undefined };
    rows.push(row);
    if (!existsSync(input)) {
      row.error = "input missing (an earlier conversion failed)";
      continue;
    }
    row.inputBytes = await diskBytes(input);
    for (let run = 0; run < repeat && row.error === undefined; run++) {
      await rm(out, { recursive: true, force: true });
      settle(cold);
      log(`${conversion.label} (run ${run + 1}/${repeat}) ...`);
      const result = runConversion(conversion, input, out, via);
      if ("error" in result) {
        row.error = result.error;
        log(`  FAILED: ${row.error}`);
        break;
      }
      row.runSeconds.push(result.seconds);
      row.maxRssKiB = Math.max(row.maxRssKiB ?? 0, result.maxRssKiB);
      row.outputBytes = await diskBytes(out);
      log(`  ${result.seconds.toFixed(1)} s, peak RSS ${rssMiB(result.maxRssKiB)} MiB`);
    }
    if (!conversion.keepOutput) await rm(out, { recursive: true, force: true });
  }
  return rows;
}

function runConversion(c: Conversion, input: string, out: string, via: "lib" | "cli"): { seconds: number; maxRssKiB: number } | { error: string } {
  const flags = ["--to", c.to, "--out", out, ...(c.dtype === undefined ? [] : ["--dtype", c.dtype]), ...(c.checksum === undefined ? [] : ["--checksum", c.checksum])];
  const rssFile = `${out}.maxrss`;
  const [command, args] =
    via === "lib"
      ? [process.execPath, [CHILD_SCRIPT, input, ...flags]]
      : [TIME_BIN, ["-f", "%M", "-o", rssFile, process.execPath, CLI_SCRIPT, "convert", input, ...flags]];
  const started = performance.now();
  const result = spawnSync(command, args, { encoding: "utf8", maxBuffer: 64 * MB, stdio: ["ignore", "pipe", "pipe"] });
  const seconds = (performance.now() - started) / 1000;
  if (result.status !== 0) {
    rmSync(rssFile, { force: true });
    const lines = (result.stderr || result.stdout).trim().split("\n");
    return { error: `exit ${result.status ?? result.signal}: ${(lines.find((l) => /error/i.test(l)) ?? lines.at(-1) ?? "").trim()}` };
  }
  if (via === "lib") {
    const last = result.stdout.trim().split("\n").at(-1) ?? "";
    return { seconds, maxRssKiB: (JSON.parse(last) as { maxRssKiB: number }).maxRssKiB };
  }
  const text = readFileSync(rssFile, "utf8").trim().split("\n").at(-1);
  rmSync(rssFile, { force: true });
  return { seconds, maxRssKiB: Number(text) };
}

interface DiskRow {
  label: string;
  bytes: number;
  runSeconds: number[];
}

/** The disk's own speed on the same file system, with the tools everyone trusts. */
async function measureDisk(work: string, shardPaths: string[], cold: boolean, repeat: number): Promise<DiskRow[]> {
  const bytes = (await Promise.all(shardPaths.map((p) => stat(p)))).reduce((sum, s) => sum + s.size, 0);
  const refDir = join(work, "disk-ref");
  const copies = shardPaths.map((p) => join(refDir, p.slice(p.lastIndexOf("/") + 1)));
  const blockBytes = 16 * 1024 * 1024;
  const blocks = Math.ceil(bytes / blockBytes);
  const steps: { label: string; bytes: number; commands: [string, string[]][] }[] = [
    { label: "cp source shards + sync (fsync) the copies", bytes, commands: [["cp", [...shardPaths, refDir]], ["sync", copies]] },
    { label: "dd read of the source shards, O_DIRECT (bs=16M)", bytes, commands: shardPaths.map((p) => ["dd", [`if=${p}`, "of=/dev/null", "bs=16M", "iflag=direct", "status=none"]]) },
    { label: "dd write of zeros + fsync (bs=16M, conv=fsync)", bytes: blocks * blockBytes, commands: [["dd", ["if=/dev/zero", `of=${join(refDir, "zeros")}`, "bs=16M", `count=${blocks}`, "conv=fsync", "status=none"]]] },
  ];
  const rows: DiskRow[] = [];
  for (const step of steps) {
    const row: DiskRow = { label: step.label, bytes: step.bytes, runSeconds: [] };
    rows.push(row);
    for (let run = 0; run < repeat; run++) {
      await rm(refDir, { recursive: true, force: true });
      await mkdir(refDir);
      settle(cold);
      log(`${step.label} (run ${run + 1}/${repeat}) ...`);
      const started = performance.now();
      for (const [command, args] of step.commands) {
        const result = spawnSync(command, args, { stdio: ["ignore", "ignore", "pipe"], encoding: "utf8" });
        if (result.status !== 0) throw new Error(`${command} ${args.join(" ")} failed: ${result.stderr}`);
      }
      row.runSeconds.push((performance.now() - started) / 1000);
    }
  }
  await rm(refDir, { recursive: true, force: true });
  return rows;
}

/** Flushes earlier writes (and, with --cold, drops the page cache) before a measurement. */
function settle(cold: boolean): void {
  spawnSync("sync");
  if (cold) writeFileSync("/proc/sys/vm/drop_caches", "3");
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function runsText(values: number[]): string {
  return values.map((v) => v.toFixed(1)).join(", ");
}

async function diskBytes(path: string): Promise<number> {
  const s = await stat(path);
  if (!s.isDirectory()) return s.size;
  let total = 0;
  for (const entry of await readdir(path)) total += await diskBytes(join(path, entry));
  return total;
}

interface Report {
  layers: number;
  sourceBytes: number;
  generateSeconds: number;
  cold: boolean;
  via: string;
  repeat: number;
  work: string;
  diskRows: DiskRow[];
  rows: Row[];
}

function report(r: Report): string {
  const cpu = cpus();
  const df = spawnSync("df", ["-h", "--output=source,fstype,size", r.work], { encoding: "utf8" }).stdout.trim().split("\n").at(-1)?.replace(/\s+/g, " ");
  const lines = [
    `Date: ${new Date().toISOString()}`,
    `Machine: ${cpu.length} × ${cpu[0]?.model ?? "?"}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB RAM, Linux ${release()}, Node ${process.version}, disk ${df ?? "?"}`,
    `Source: synthetic Llama-2-7B shape with ${r.layers} of its 32 decoder layers, bf16, ${(r.sourceBytes / GB).toFixed(2)} GB in 2 GB shards (generated in ${r.generateSeconds.toFixed(1)} s = ${(r.sourceBytes / MB / r.generateSeconds).toFixed(0)} MB/s)`,
    `Page cache: ${r.cold ? "dropped before every measurement (--cold): reads come from the disk" : pageCacheNote(r.sourceBytes)}; conversions via ${r.via === "lib" ? "bench/convert-child.js (library)" : "dist/cli/main.js"}; ${r.repeat} run(s) each, median time shown`,
    "GB = 1e9 bytes, MB/s = 1e6 bytes per second of wall time; input = bytes of the source on disk, output = bytes of the result on disk.",
    "",
    "| disk reference | GB | seconds | MB/s | runs (s) |",
    "| --- | ---: | ---: | ---: | --- |",
    ...r.diskRows.map((d) => {
      const seconds = median(d.runSeconds);
      return `| ${d.label} | ${(d.bytes / GB).toFixed(2)} | ${seconds.toFixed(1)} | ${(d.bytes / MB / seconds).toFixed(0)} | ${runsText(d.runSeconds)} |`;
    }),
    "",
    "| conversion | input GB | output GB | seconds | input MB/s | output MB/s | peak RSS MiB | runs (s) |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ...r.rows.map((row) => {
      if (row.error !== undefined) return `| ${row.label} | FAILED: ${row.error.replace(/\|/g, "/")} | | | | | | |`;
      const seconds = median(row.runSeconds);
      return `| ${row.label} | ${(row.inputBytes / GB).toFixed(2)} | ${(row.outputBytes / GB).toFixed(2)} | ${seconds.toFixed(1)} | ${(row.inputBytes / MB / seconds).toFixed(0)} | ${(row.outputBytes / MB / seconds).toFixed(0)} | ${rssMiB(row.maxRssKiB)} | ${runsText(row.runSeconds)} |`;
    }),
  ];
  return lines.join("\n");
}

function pageCacheNote(sourceBytes: number): string {
  const ram = totalmem();
  const fits = sourceBytes < ram / 2 ? "so reads come mostly from the page cache" : "but outputs evict part of it, so reads come partly from the disk";
  return `warm: the source was just written (${(sourceBytes / GB).toFixed(1)} GB, RAM ${(ram / GB).toFixed(1)} GB), ${fits}; writes go through the page cache and every output file is fsynced`;
}

function rssMiB(kib: number | undefined): string {
  return kib === undefined ? "?" : (kib / 1024).toFixed(0);
}

function log(message: string): void {
  process.stderr.write(`[bench] ${message}\n`);
}

try {
  process.exitCode = await main();
} catch (error) {
  process.stderr.write(`convert-stream: ${(error as Error).message}\n`);
  process.exitCode = 2;
}
