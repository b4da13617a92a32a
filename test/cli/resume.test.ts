import { spawn, spawnSync } from "node:child_process";
import { appendFile, open, readdir, readFile, stat, truncate, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { hessianSource } from "../../cli/commands/quantize.js";
import { embeddingProxyHessians } from "../../converters/hessians/embedding-proxy.js";
import { writeHessianStore } from "../../converters/hessians/store.js";
import { journalPath, LayerJournal, scanJournalLog, type JournalIdentity } from "../../converters/io/journal.js";
import { exportLmpack } from "../../converters/lmpack/export.js";
import { openCheckpoint } from "../../converters/open.js";
import { quantizeVptqCheckpoint } from "../../converters/vptq/quantize-checkpoint.js";
import { CLI, FIXTURE_MODEL, tempDir } from "../helpers/paths.js";

const test = suite("quantize resume");

let work: Awaited<ReturnType<typeof tempDir>>;
/** The fixture's embedding-proxy Hessians, computed once: each CLI run then starts in well under a second. */
let hessians: string;
test.before(async () => {
  work = await tempDir("lmpack-resume-");
  hessians = join(work.path, "hessians.safetensors");
  const checkpoint = await openCheckpoint(FIXTURE_MODEL);
  try {
    await writeHessianStore(hessians, await embeddingProxyHessians(checkpoint), "embedding proxy of the fixture");
  } finally {
    await checkpoint.close();
  }
});
test.after(() => work.cleanup());

/** 4 decoder layers x 7 linears in the fixture. */
const FIXTURE_LINEARS = 28;

function lmpack(args: string[]): { code: number; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", cwd: work.path });
  return { code: r.status ?? -1, stderr: r.stderr };
}

/** Runs the CLI and SIGKILLs it as soon as it reports layer `afterLayer` done (each report follows the layer's journal record). */
function lmpackKilledAfter(args: string[], afterLayer: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd: work.path, stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk: string) => {
      stderr += chunk;
      if (stderr.includes(`[${afterLayer}/`)) child.kill("SIGKILL");
    });
    child.on("error", reject);
    child.on("exit", (code, signal) => (signal === "SIGKILL" ? resolve(stderr) : reject(new Error(`exited with ${code} before it was killed:\n${stderr}`))));
  });
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

async function journalLayers(out: string): Promise<number> {
  const handle = await open(join(journalPath(out), "layers.log"), "r");
  try {
    return (await scanJournalLog(handle)).records.size;
  } finally {
    await handle.close();
  }
}

/** Every file under a directory output, by relative name. */
async function tree(path: string): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>();
  for (const name of (await readdir(path)).sort()) files.set(name, await readFile(join(path, name)));
  return files;
}

async function output(path: string): Promise<Buffer | Map<string, Buffer>> {
  return (await stat(path)).isDirectory() ? tree(path) : readFile(path);
}

const CASES = [
  { name: "gptq -> .lmpack (one file)", args: ["--method", "gptq", "--device", "cpu", "--to", "lmpack"], out: "gptq.lmpack" },
  { name: "spqr -> hf-spqr (a directory)", args: ["--method", "spqr", "--device", "cpu", "--to", "hf-spqr"], out: "spqr-hf" },
];

for (const c of CASES) {
  test(`SIGKILL halfway, rerun: resumes and writes the uninterrupted run's bytes: ${c.name}`, async () => {
    const reference = join(work.path, `ref-${c.out}`);
    const out = join(work.path, c.out);
    const args = ["quantize", FIXTURE_MODEL, ...c.args, "--hessians", hessians];
    const ref = lmpack([...args, "--out", reference]);
    assert.is(ref.code, 0, ref.stderr);
    assert.not.ok(await exists(journalPath(reference)), "a finished run removes its journal");

    await lmpackKilledAfter([...args, "--out", out], 4);
    assert.not.ok(await exists(out), "the destination holds nothing after a kill");
    const recorded = await journalLayers(out);
    assert.ok(recorded >= 4 && recorded < FIXTURE_LINEARS, `journal holds ${recorded} layers`);

    const rerun = lmpack([...args, "--out", out]);
    assert.is(rerun.code, 0, rerun.stderr);
    const resumed = Number(/resuming (\d+) layers? from/.exec(rerun.stderr)?.[1]);
    assert.is(resumed, recorded, rerun.stderr);
    assert.is(rerun.stderr.match(/from the journal\)/g)?.length, recorded);
    assert.equal(await output(out), await output(reference));
    // Neither the journal nor the killed run's temporary is left beside the output.
    assert.equal((await readdir(work.path)).filter((n) => n.includes(c.out) && n.startsWith(".")), []);
  });
}

const identity: JournalIdentity = { command: "test", options: { bits: 4, threshold: Infinity }, sources: [] };
const layerValue = (seed: number) => ({ tensor: { codes: new Uint8Array([seed, 2, 3]), scales: new Float32Array([seed / 3, -0, NaN]), gIdx: undefined }, report: { seconds: seed } });

/** Same keys, same typed-array classes, same bytes (-0 and NaN included, which deep equality would blur). */
function assertSameLayer(actual: unknown, expected: ReturnType<typeof layerValue>): void {
  const a = actual as ReturnType<typeof layerValue>;
  assert.equal(Object.keys(a.tensor), Object.keys(expected.tensor));
  assert.ok(a.tensor.scales instanceof Float32Array && a.tensor.codes instanceof Uint8Array);
  assert.equal(new Uint8Array(a.tensor.scales.buffer, a.tensor.scales.byteOffset, 12), new Uint8Array(expected.tensor.scales.buffer));
  assert.equal(a.tensor.codes, expected.tensor.codes);
  assert.equal(a.report, expected.report);
}

test("journal: records come back as written (typed arrays, undefined fields); a torn last record is dropped and the log continues", async () => {
  const out = join(work.path, "torn.lmpack");
  const lines: string[] = [];
  let journal = await LayerJournal.open(out, identity, { resume: true });
  await journal.record("a", layerValue(1));
  await journal.record("b", layerValue(2));
  await journal.close();
  const log = join(journalPath(out), "layers.log");
  await truncate(log, (await stat(log)).size - 5);

  journal = await LayerJournal.open(out, identity, { resume: true, log: (l) => lines.push(l) });
  assert.equal(journal.layers, ["a"]);
  assert.is(lines.length, 1);
  assert.match(lines[0]!, /torn or damaged record/);
  assertSameLayer(await journal.recall("a"), layerValue(1));
  assert.is(await journal.recall("b"), undefined);
  await journal.record("c", layerValue(3));
  await journal.close();

  journal = await LayerJournal.open(out, identity, { resume: true });
  assert.equal(journal.layers, ["a", "c"]);
  assertSameLayer(await journal.recall("c"), layerValue(3));
  await journal.finish();
  assert.not.ok(await exists(journalPath(out)));
});

test("journal: a damaged record ends the log there (its checksum fails)", async () => {
  const out = join(work.path, "damaged.lmpack");
  let journal = await LayerJournal.open(out, identity, { resume: true });
  for (const name of ["a", "b", "c"]) await journal.record(name, layerValue(name.charCodeAt(0)));
  await journal.close();
  const log = join(journalPath(out), "layers.log");
  const bytes = await readFile(log);
  bytes[bytes.length - 3]! ^= 0x40; // inside c's payload
  await writeFile(log, bytes);
  journal = await LayerJournal.open(out, identity, { resume: true });
  assert.equal(journal.layers, ["a", "b"]);
  await journal.finish();
});

test("journal: another fingerprint (options, source contents) or --no-resume discards it", async () => {
  const out = join(work.path, "fingerprint.lmpack");
  const source = join(work.path, "weights.bin");
  await writeFile(source, "weights v1");
  const withSource = { ...identity, sources: [source] };
  let journal = await LayerJournal.open(out, withSource, { resume: true });
  await journal.record("a", layerValue(1));
  await journal.close();

  const lines: string[] = [];
  journal = await LayerJournal.open(out, withSource, { resume: true });
  assert.is(journal.resumedLayers, 1);
  await journal.close();
  journal = await LayerJournal.open(out, { ...withSource, options: { bits: 3, threshold: Infinity } }, { resume: true, log: (l) => lines.push(l) });
  assert.is(journal.resumedLayers, 0);
  assert.match(lines[0] ?? "", /discarding the journal/);
  await journal.record("a", layerValue(1));
  await journal.close();

  await appendFile(source, " changed");
  journal = await LayerJournal.open(out, { ...withSource, options: { bits: 3, threshold: Infinity } }, { resume: true });
  assert.is(journal.resumedLayers, 0, "a changed source file invalidates the layers");
  await journal.record("a", layerValue(1));
  await journal.close();
  journal = await LayerJournal.open(out, { ...withSource, options: { bits: 3, threshold: Infinity } }, { resume: false });
  assert.is(journal.resumedLayers, 0);
  await journal.close();
  assert.not.ok(await exists(journalPath(out)), "a journal with nothing on record is not kept");
});

/** Larger than the journal's hashed head and tail (1 MiB each) together: bytes in between are seen by neither. */
const SHARD_BYTES = 3 * (1 << 20) + 123;
const TAIL_CHANGE_BYTES = 16;

test("journal: a source rewritten in place at its end, size and mtime put back, discards it", async () => {
  const out = join(work.path, "rewritten.lmpack");
  const source = join(work.path, "shard.bin");
  const mtime = new Date("2025-01-01T00:00:00Z");
  const original = new Uint8Array(SHARD_BYTES).map((_, i) => (i * 31) >>> 3);
  await writeFile(source, original);
  await utimes(source, mtime, mtime);
  const withSource = { ...identity, sources: [source] };
  let journal = await LayerJournal.open(out, withSource, { resume: true });
  await journal.record("a", layerValue(1));
  await journal.close();
  const before = await stat(source);

  // The same bytes written again, mtime put back: the same source, the journal is reused.
  await writeFile(source, original);
  await utimes(source, mtime, mtime);
  journal = await LayerJournal.open(out, withSource, { resume: true });
  assert.is(journal.resumedLayers, 1, "an identical rewrite keeps the journal");
  await journal.close();

  const handle = await open(source, "r+");
  try {
    const last = original.slice(SHARD_BYTES - TAIL_CHANGE_BYTES).map((b) => b ^ 0xff);
    await handle.write(last, 0, last.length, SHARD_BYTES - TAIL_CHANGE_BYTES);
  } finally {
    await handle.close();
  }
  await utimes(source, mtime, mtime);
  const after = await stat(source);
  assert.equal([after.size, after.mtimeMs], [before.size, before.mtimeMs], "size and mtime as before: only the content tells");
  const lines: string[] = [];
  journal = await LayerJournal.open(out, withSource, { resume: true, log: (l) => lines.push(l) });
  assert.is(journal.resumedLayers, 0, "the rewritten source invalidates the layers");
  assert.match(lines[0] ?? "", /discarding the journal/);
  await journal.finish();
});

test("vptq: a run that fails mid-way resumes from its journal to the uninterrupted run's bytes", async () => {
  const checkpoint = await openCheckpoint(FIXTURE_MODEL);
  try {
    const hessians = (await hessianSource("embedding-proxy", checkpoint))!;
    const select = (name: string) => /layers\.[01]\.self_attn\.[kv]_proj\.weight$/.test(name);
    const quantizer = { vectorLen: 4, numCentroids: 16, kmeansIterations: 5, seed: 1 };
    const reference = join(work.path, "vptq-ref.lmpack");
    await exportLmpack(quantizeVptqCheckpoint(checkpoint, { hessians, quantizer, select }), reference);

    const out = join(work.path, "vptq.lmpack");
    let journal = await LayerJournal.open(out, identity, { resume: true });
    let seen = 0;
    const failing = quantizeVptqCheckpoint(checkpoint, { hessians, quantizer, select, journal, onLayer: () => {
      if (++seen === 3) throw new Error("simulated failure");
    } });
    try {
      await exportLmpack(failing, out);
      assert.unreachable("the export should have failed");
    } catch (error) {
      assert.is((error as Error).message, "simulated failure");
    }
    await journal.close();
    assert.not.ok(await exists(out));

    journal = await LayerJournal.open(out, identity, { resume: true });
    assert.is(journal.resumedLayers, 3);
    const resumed: boolean[] = [];
    await exportLmpack(quantizeVptqCheckpoint(checkpoint, { hessians, quantizer, select, journal, onLayer: (r) => resumed.push(r.resumed === true) }), out);
    await journal.finish();
    assert.equal(resumed, [true, true, true, false]);
    assert.equal(await readFile(out), await readFile(reference));
  } finally {
    await checkpoint.close();
  }
});

test.run();
