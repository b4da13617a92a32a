import { spawn } from "node:child_process";
import { createWriteStream, existsSync, mkdirSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { availableParallelism } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { MAX_INPUT_BYTES } from "./harness.js";
import { findingExcerpt, parseFuzzLog, type FuzzRunStats } from "./libfuzzer-log.js";
import { FUZZ_TARGETS, fuzzTarget, type FuzzTarget } from "./registry.js";
import { nodeLauncher, type NodeLauncher } from "./runtime.js";

/**
 * Coverage-guided fuzzing of every reader with Jazzer.js (libFuzzer inside Node), one target per
 * parser (registry.ts). Each target runs in its own process for --seconds (and/or --runs) from its
 * committed seeds (bench/fuzz/seeds/<target>/) and its growing corpus (bench/fuzz/corpus/<target>/,
 * git-ignored, kept between runs); a crash, hang, OOM or oversized allocation is a finding, saved
 * under bench/out/fuzz/findings/<target>/. Prints a markdown table and, last, "fuzz: N passed, M
 * failed"; exits 1 on any finding.
 *
 *   node dist/bench/fuzz/run.js [--targets a,b] [--seconds 60] [--runs N] [--seed S] [--jobs J]
 *                               [--timeout-ms 5000] [--add-to-summary "N passed, M failed"]
 *
 * --add-to-summary (CI): the test suite's final line; each target then counts as one more test
 * and the last line printed is the combined "N passed, M failed[, K skipped]".
 *
 * A finding: replay it in plain Node (node dist/bench/fuzz/replay.js <target> <file>), minimise
 * it, add it to test/fuzz/regressions.test.ts, fix the reader.
 */

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
/** Per-input time limit: every reader handles a 64 KiB input in milliseconds; seconds is a hang. */
const DEFAULT_TIMEOUT_MS = 5000;
/** libFuzzer's RSS limit; the V8 heap cap below makes a JS-heap blow-up abort before it. */
const RSS_LIMIT_MB = 2048;
const NODE_FLAGS = ["--max-old-space-size=1024"];
/** Bug detectors that do not apply to in-memory parsers (no shell, no paths, no network, no eval). */
const DISABLED_DETECTORS = ["command-injection", "path-traversal", "remote-code-execution", "ssrf"];

interface Options {
  targets: FuzzTarget[];
  seconds: number;
  runs: number | undefined;
  seed: number | undefined;
  jobs: number;
  timeoutMs: number;
  /** The test suite's summary to add the targets to: passed, failed and the ", K skipped" tail. */
  summary: { passed: number; failed: number; tail: string } | undefined;
}

interface Outcome {
  target: FuzzTarget;
  stats: FuzzRunStats;
  wallSeconds: number;
  exitCode: number | null;
  findings: string[];
  logPath: string;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      targets: { type: "string" },
      seconds: { type: "string", default: "60" },
      runs: { type: "string" },
      seed: { type: "string" },
      jobs: { type: "string", default: String(availableParallelism()) },
      "timeout-ms": { type: "string", default: String(DEFAULT_TIMEOUT_MS) },
      "add-to-summary": { type: "string" },
    },
  });
  const names = values.targets === undefined ? FUZZ_TARGETS.map((t) => t.name) : values.targets.split(",").filter((n) => n !== "");
  const targets = names.map((n) => fuzzTarget(n) ?? fail(`unknown target "${n}" (known: ${FUZZ_TARGETS.map((t) => t.name).join(", ")})`));
  const positive = (text: string | undefined, what: string): number | undefined => {
    if (text === undefined) return undefined;
    const n = Number(text);
    return Number.isSafeInteger(n) && n > 0 ? n : fail(`--${what} must be a positive integer, got "${text}"`);
  };
  return {
    targets,
    seconds: positive(values.seconds, "seconds")!,
    runs: positive(values.runs, "runs"),
    seed: positive(values.seed, "seed"),
    jobs: positive(values.jobs, "jobs")!,
    timeoutMs: positive(values["timeout-ms"], "timeout-ms")!,
    summary: values["add-to-summary"] === undefined ? undefined : parseSummary(values["add-to-summary"]),
  };
}

/** "N passed, M failed[, K skipped]", as test/run.mjs prints it; anything else counts as one failure. */
function parseSummary(line: string): { passed: number; failed: number; tail: string } {
  const match = /^(\d+) passed, (\d+) failed(.*)$/.exec(line.trim());
  if (match === null) return { passed: 0, failed: 1, tail: ` (no test summary: "${line.trim().slice(0, 80)}")` };
  return { passed: Number(match[1]), failed: Number(match[2]), tail: match[3]! };
}

function fail(message: string): never {
  console.error(`fuzz: ${message}`);
  process.exit(2);
}

function jazzerArgs(target: FuzzTarget, options: Options, dirs: { corpus: string; seeds: string; findings: string }): string[] {
  const cli = createRequire(import.meta.url).resolve("@jazzer.js/core/dist/cli.js");
  const libFuzzer = [
    `-max_total_time=${options.seconds}`,
    ...(options.runs === undefined ? [] : [`-runs=${options.runs}`]),
    ...(options.seed === undefined ? [] : [`-seed=${options.seed}`]),
    `-max_len=${MAX_INPUT_BYTES}`,
    `-rss_limit_mb=${RSS_LIMIT_MB}`,
    `-artifact_prefix=${dirs.findings}/`,
    "-print_final_stats=1",
  ];
  return [
    cli,
    join(ROOT, "dist", "bench", "fuzz", "targets", `${target.name}.js`),
    dirs.corpus,
    ...(target.input === "bytes" && existsSync(dirs.seeds) ? [dirs.seeds] : []),
    ...target.instrument.flatMap((pattern) => ["-i", pattern]),
    ...DISABLED_DETECTORS.flatMap((d) => ["--disable_bug_detectors", d]),
    `--sync=${target.sync}`,
    `--timeout=${options.timeoutMs}`,
    "--",
    ...libFuzzer,
  ];
}

async function runTarget(target: FuzzTarget, options: Options, launcher: NodeLauncher): Promise<Outcome> {
  const dirs = {
    corpus: join(ROOT, "bench", "fuzz", "corpus", target.name),
    seeds: join(ROOT, "bench", "fuzz", "seeds", target.name),
    findings: join(ROOT, "bench", "out", "fuzz", "findings", target.name),
  };
  for (const dir of [dirs.corpus, dirs.findings]) mkdirSync(dir, { recursive: true });
  const findingsBefore = new Set(readdirSync(dirs.findings));
  const logPath = join(ROOT, "bench", "out", "fuzz", `${target.name}.log`);
  const log = createWriteStream(logPath);
  let text = "";
  const started = performance.now();
  const child = spawn(launcher.command, [...launcher.args, ...jazzerArgs(target, options, dirs)], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
  // A run that ignores -max_total_time (a hang inside the native fuzzer) is stopped and counted as a finding.
  const deadline = setTimeout(() => child.kill("SIGKILL"), (options.seconds + 120) * 1000 + options.timeoutMs);
  for (const stream of [child.stdout, child.stderr]) {
    stream.on("data", (chunk: Buffer) => {
      log.write(chunk);
      text += chunk.toString("utf8");
      if (text.length > 4 * 1024 * 1024) text = text.slice(-2 * 1024 * 1024);
    });
  }
  const exitCode = await new Promise<number | null>((done) => child.on("close", (code) => done(code)));
  clearTimeout(deadline);
  await new Promise<void>((done) => log.end(done));
  const findings = readdirSync(dirs.findings).filter((f) => !findingsBefore.has(f)).map((f) => join(dirs.findings, f));
  if (exitCode !== 0 && findings.length === 0) findings.push(`(exit ${exitCode}, no artifact: see ${logPath})`);
  if (findings.length > 0) console.error(`\n[${target.name}] FINDING\n${findingExcerpt(text)}\n`);
  return { target, stats: parseFuzzLog(text), wallSeconds: (performance.now() - started) / 1000, exitCode, findings, logPath };
}

async function runAll(options: Options, launcher: NodeLauncher): Promise<Outcome[]> {
  const queue = [...options.targets];
  const outcomes: Outcome[] = [];
  const worker = async (): Promise<void> => {
    for (let target = queue.shift(); target !== undefined; target = queue.shift()) {
      const outcome = await runTarget(target, options, launcher);
      console.error(`[${target.name}] ${outcome.stats.executions} executions in ${outcome.wallSeconds.toFixed(0)} s, ${outcome.findings.length} finding(s)`);
      outcomes.push(outcome);
    }
  };
  await Promise.all(Array.from({ length: Math.min(options.jobs, queue.length) }, worker));
  return options.targets.map((t) => outcomes.find((o) => o.target === t)!);
}

function printTable(outcomes: Outcome[]): void {
  console.log("| target | executions | seconds | exec/s | coverage | corpus | findings |");
  console.log("| --- | ---: | ---: | ---: | ---: | ---: | --- |");
  for (const o of outcomes) {
    const rate = o.stats.execPerSecond ?? Math.round(o.stats.executions / o.wallSeconds);
    const findings = o.findings.length === 0 ? "0" : o.findings.map((f) => f.replace(`${ROOT}/`, "")).join(", ");
    console.log(`| ${o.target.name} | ${o.stats.executions} | ${o.wallSeconds.toFixed(0)} | ${rate} | ${o.stats.coverage ?? "?"} | ${o.stats.corpusUnits ?? "?"} | ${findings} |`);
  }
}

const options = parseOptions(process.argv.slice(2));
const launcher = nodeLauncher(ROOT, NODE_FLAGS);
mkdirSync(join(ROOT, "bench", "out", "fuzz"), { recursive: true });
console.error(`fuzz: ${options.targets.length} target(s), ${options.runs === undefined ? "" : `${options.runs} runs or `}${options.seconds} s each, ${options.jobs} at a time, seed ${options.seed ?? "random"}; ${launcher.describe}`);
const outcomes = await runAll(options, launcher);
printTable(outcomes);
const failed = outcomes.filter((o) => o.findings.length > 0).length;
console.log(`fuzz: ${outcomes.length - failed} passed, ${failed} failed`);
const summary = options.summary;
if (summary !== undefined) console.log(`${summary.passed + outcomes.length - failed} passed, ${summary.failed + failed} failed${summary.tail}`);
process.exit(failed > 0 || (summary?.failed ?? 0) > 0 ? 1 : 0);
