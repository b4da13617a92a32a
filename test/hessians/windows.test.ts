import { test } from "uvu";
import * as assert from "uvu/assert";
import { spawnSync } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { calibrationSequences, sampleWindows, spread } from "../../converters/hessians/windows.js";
import { sequentialJournalIdentity, type SequentialCalibrationArgs } from "../../cli/commands/sequential-hessians.js";
import { CLI, FIXTURE_MODEL, SHARED_DIR, tempDir } from "../helpers/paths.js";

/** Calibration windows: evenly spread (the default) or drawn from a seed (`--sample-seed`). */

const stream = Int32Array.from({ length: 1000 }, (_, i) => i);
/** A window's start: the stream holds its own indices. */
const starts = (windows: Int32Array[]) => windows.map((w) => w[0]!);

test("spread: non-overlapping windows from the first token to the last full window", () => {
  const windows = spread(stream, 4, 100);
  assert.equal(starts(windows), [0, 300, 600, 900]);
  assert.ok(windows.every((w) => w.length === 100));
  assert.is(spread(stream, 20, 100).length, 10, "no more windows than fit without overlap");
  assert.is(spread(stream.subarray(0, 99), 4, 100).length, 0);
});

test("sampleWindows: exactly `count` whole windows inside the stream, the same for a seed on every call", () => {
  const windows = sampleWindows(stream, 64, 100, 7);
  assert.is(windows.length, 64, "draws may overlap, so any count is met");
  for (const w of windows) {
    assert.is(w.length, 100);
    assert.ok(w[0]! >= 0 && w[99]! <= 999, `window at ${w[0]}`);
    assert.is(w[99]! - w[0]!, 99, "one contiguous run of the stream");
  }
  assert.equal(starts(sampleWindows(stream, 64, 100, 7)), starts(windows));
  assert.not.equal(starts(sampleWindows(stream, 64, 100, 8)), starts(windows), "another seed, other windows");
  assert.ok(new Set(starts(windows)).size > 32, "starts are spread, not repeated");
});

test("sampleWindows: every start from the first to the last full window can be drawn; none past it", () => {
  // 11 possible starts (0 … 10); 400 draws miss one with probability < 11·(10/11)^400 ≈ 3e-16.
  const drawn = new Set(starts(sampleWindows(stream.subarray(0, 100), 400, 90, 1)));
  assert.equal([...drawn].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  assert.equal(starts(sampleWindows(stream.subarray(0, 100), 3, 100, 1)), [0, 0, 0], "a stream of exactly one window");
  assert.is(sampleWindows(stream.subarray(0, 99), 3, 100, 1).length, 0, "too short: none");
});

test("calibrationSequences: spread without a seed, drawn with one (seed 0 included)", () => {
  assert.equal(starts(calibrationSequences(stream, 4, 100, undefined)), starts(spread(stream, 4, 100)));
  assert.equal(starts(calibrationSequences(stream, 4, 100, 0)), starts(sampleWindows(stream, 4, 100, 0)));
});

test("a resume journal of sequential calibration keys on the seed, and only when one is given", () => {
  const args: SequentialCalibrationArgs & { hessians: string } = { hessians: "sequential", calibrationText: "calib.txt", samples: 4, seqLen: 32, sampleSeed: undefined, protocol: "wikitext2", tokenizer: undefined, trueSequential: true };
  assert.equal(sequentialJournalIdentity(args).options, { samples: 4, seqLen: 32, protocol: "wikitext2", trueSequential: true }, "journals made before the option still match");
  assert.equal(sequentialJournalIdentity({ ...args, sampleSeed: 0 }).options, { samples: 4, seqLen: 32, sampleSeed: 0, protocol: "wikitext2", trueSequential: true });
});

const run = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8" });
const TEXT = join(SHARED_DIR, "text", "docs-valid.txt");

test("CLI: a bad --sample-seed, or one nothing reads, is refused before any work (BAD_ARGUMENT, exit 1)", async () => {
  const dir = await tempDir();
  try {
    for (const seed of ["-1", "1.5", "4294967296"]) {
      const r = run(["calibrate", FIXTURE_MODEL, "--text", TEXT, "--samples", "2", "--seq-len", "32", "--sample-seed", seed, "--out", join(dir.path, "h")]);
      assert.is(r.status, 1, `seed ${seed}: ${r.stderr}`);
      assert.match(r.stderr, /BAD_ARGUMENT/);
      assert.match(r.stderr, /--sample-seed must be a whole number from 0 to 4294967295/);
    }
    const stored = run(["quantize", FIXTURE_MODEL, "--method", "gptq", "--hessians", join(dir.path, "h"), "--sample-seed", "3", "--to", "lmpack", "--out", join(dir.path, "q.lmpack")]);
    assert.is(stored.status, 1, stored.stderr);
    assert.match(stored.stderr, /--sample-seed is read only with --hessians sequential/);
  } finally {
    await dir.cleanup();
  }
});

test("CLI: calibrate --sample-seed writes the same store twice, another than the spread windows', and says how it drew them", async () => {
  const dir = await tempDir();
  try {
    const calibrate = (out: string, seed?: string) => {
      const r = run(["calibrate", FIXTURE_MODEL, "--text", TEXT, "--samples", "2", "--seq-len", "32", ...(seed === undefined ? [] : ["--sample-seed", seed]), "--out", join(dir.path, out), "--json"]);
      assert.is(r.status, 0, r.stderr);
      return readFile(join(dir.path, out, "hessians.safetensors"));
    };
    const [a, b, even] = [await calibrate("a", "5"), await calibrate("b", "5"), await calibrate("even")];
    assert.ok(a.equals(b), "same seed, same bytes");
    assert.not.ok(a.equals(even), "drawn windows differ from the spread ones");
    assert.match(a.toString("latin1", 0, 4096), /drawn from seed 5/);
    assert.match(even.toString("latin1", 0, 4096), /spread evenly/);
  } finally {
    await dir.cleanup();
  }
});

test.run();
