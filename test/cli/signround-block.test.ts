import { spawnSync } from "node:child_process";
import { stat } from "node:fs/promises";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { spread } from "../../converters/hessians/windows.js";
import { blockJournalIdentity, type BlockObjectiveArgs } from "../../cli/commands/signround-block.js";
import { textTokens, tokenizerFor } from "../../cli/commands/text-input.js";
import type { PackedIntGroup } from "../../converters/checkpoint.js";
import { quantizeCheckpoint } from "../../converters/int-group/quantize-checkpoint.js";
import { quantizeModelSignRoundBlockwise } from "../../converters/int-group/signround-blockwise.js";
import { openCheckpoint } from "../../converters/open.js";
import { isLmpackError } from "../../formats/errors.js";
import { gpuAvailable } from "../../kernels/engine.js";
import { loadLlamaWeights } from "../../model/llama-weights.js";
import { CLI, FIXTURE_MODEL, SHARED_DIR, tempDir } from "../helpers/paths.js";

/**
 * `lmpack quantize --method signround --objective block` on the embedded fixture: the packed
 * codes, scales and zeros are the library's (quantizeModelSignRoundBlockwise on the same
 * windows), the file reads back with `inspect`, and the combinations it cannot honour are refused.
 */
const test = suite("cli: quantize --objective block");

const TEXT = join(SHARED_DIR, "text", "wikitext2-test.raw");
/** Each option once: yargs turns a repeated option into an array. */
function quant(groupSize = "64"): string[] {
  return ["--method", "signround", "--bits", "2", "--group-size", groupSize, "--iters", "5"];
}
function calibration(samples = "4"): string[] {
  return ["--calibration-text", TEXT, "--samples", samples, "--seq-len", "32", "--protocol", "wikitext2"];
}
/** 4 decoder layers x 7 linears in the fixture. */
const FIXTURE_LINEARS = 28;

let work: Awaited<ReturnType<typeof tempDir>>;
test.before(async () => {
  work = await tempDir("lmpack-signround-block-");
});
test.after(() => work.cleanup());

function lmpack(args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", cwd: work.path });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

const exists = (path: string): Promise<boolean> => stat(path).then(() => true, () => false);

test("--objective block writes the library's per-linear results; inspect reads the file; progress per block on stderr", async () => {
  const out = join(work.path, "block.lmpack");
  // --device auto (the default, given here to be explicit): the GPU where one is usable, else the
  // CPU, and stderr says which.
  const probe = await gpuAvailable();
  const r = lmpack(["quantize", FIXTURE_MODEL, ...quant(), "--objective", "block", ...calibration(), "--device", "auto", "--to", "lmpack", "--out", out]);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, probe.ok ? /--objective block runs its block forward\/backward on / : /--objective block runs on the CPU with --device auto: no usable GPU/);
  for (let block = 0; block < 4; block++) assert.match(r.stderr, new RegExp(`block ${block} \\(${block + 1}/4\\): best loss \\d\\.\\d+e-?\\d+ at iteration \\d+ .*, \\d+\\.\\d s`));

  const inspect = lmpack(["inspect", out, "--json"]);
  assert.is(inspect.code, 0, inspect.stderr);
  const summary = JSON.parse(inspect.stdout) as { quantization: { packedTensors: number; bits: number } };
  assert.is(summary.quantization.packedTensors, FIXTURE_LINEARS);
  assert.is(summary.quantization.bits, 2);

  // The library on windows made here from the lower-level pieces (tokenizer, protocol, spread).
  const source = await openCheckpoint(FIXTURE_MODEL);
  const packed = await openCheckpoint(out);
  try {
    const stream = await textTokens(TEXT, await tokenizerFor(source, undefined), source, "wikitext2");
    const windows = spread(stream, 4, 32);
    assert.is(windows.length, 4);
    const expected = quantizeModelSignRoundBlockwise(await loadLlamaWeights(source), windows, { params: { bits: 2, groupSize: 64, sym: false, scaleDtype: "F16" }, iters: 5 });
    assert.is(expected.size, FIXTURE_LINEARS);
    const entries = packed.tensors.filter((t) => t.packed !== undefined);
    assert.is(entries.length, FIXTURE_LINEARS);
    // Dense tensors (embedding, norms; lm_head is tied) pass through untouched.
    assert.ok(packed.tensors.some((t) => t.name === "model.embed_tokens.weight" && t.packed === undefined));
    for (const entry of entries) {
      const want = expected.get(entry.name.replace(/\.weight$/, ""));
      assert.ok(want !== undefined, `${entry.name}: in the library's results`);
      const got = await (entry.packed as PackedIntGroup).load();
      assert.equal(got.codes, want.tensor.codes, `${entry.name}: codes`);
      assert.equal(got.scales, want.tensor.scales, `${entry.name}: scales`);
      assert.equal(got.zeros, want.tensor.zeros, `${entry.name}: zeros`);
    }
  } finally {
    await Promise.all([source.close(), packed.close()]);
  }
});

test("quantizeCheckpoint refuses a precomputed tensor that does not match the entry's params", async () => {
  const source = await openCheckpoint(FIXTURE_MODEL);
  try {
    const weights = await loadLlamaWeights(source);
    const stream = await textTokens(TEXT, await tokenizerFor(source, undefined), source, "wikitext2");
    // 3-bit results handed to a 2-bit export.
    const results = quantizeModelSignRoundBlockwise(weights, spread(stream, 1, 8), { params: { bits: 3, groupSize: 64, sym: false, scaleDtype: "F16" }, iters: 0 });
    const view = quantizeCheckpoint(source, { method: "signround", bits: 2, groupSize: 64, sym: false, precomputed: results });
    const entry = view.tensors.find((t) => t.name === "model.layers.0.self_attn.q_proj.weight")!;
    const error = await (entry.packed as PackedIntGroup).load().then(() => undefined, (e: unknown) => e);
    assert.ok(isLmpackError(error) && error.code === "BAD_ARGUMENT", String(error));
    assert.match((error as Error).message, /precomputed layer does not match/);
  } finally {
    await source.close();
  }
});

const refusals: { name: string; args: string[]; message: RegExp }[] = [
  ...["gptq", "rtn", "fp6"].map((method) => ({ name: `--method ${method}`, args: ["--method", method, "--hessians", "embedding-proxy", "--objective", "block", ...calibration()], message: /--objective block is SignRound's block-wise objective/ })),
  { name: "no --calibration-text", args: [...quant(), "--objective", "block"], message: /--objective block needs --calibration-text/ },
  { name: "--hessians sequential", args: [...quant(), "--objective", "block", "--hessians", "sequential", ...calibration()], message: /--objective block reads no --hessians/ },
  { name: "--hessians embedding-proxy", args: [...quant(), "--objective", "block", "--hessians", "embedding-proxy", ...calibration()], message: /--objective block reads no --hessians/ },
  { name: "--group-size -1", args: [...quant("-1"), "--objective", "block", ...calibration()], message: /positive --group-size/ },
  { name: "--samples 0", args: [...quant(), "--objective", "block", ...calibration("0")], message: /--samples must be a positive integer/ },
  { name: "--group-size wider than the linears", args: [...quant("1024"), "--objective", "block", ...calibration()], message: /wider than model\.layers\.0\.self_attn\.q_proj's 192 input columns/ },
];

for (const r of refusals) {
  test(`--objective block refuses ${r.name} with a usage error (exit 1), writing nothing`, async () => {
    const out = join(work.path, "refused.lmpack");
    const run = lmpack(["quantize", FIXTURE_MODEL, ...r.args, "--to", "lmpack", "--out", out]);
    assert.is(run.code, 1, run.stderr);
    assert.match(run.stderr, /BAD_ARGUMENT/);
    assert.match(run.stderr, r.message);
    assert.not.ok(await exists(out));
  });
}

test("the resume journal keys on the block calibration (and not at all for layer-wise runs)", () => {
  const args: BlockObjectiveArgs = { method: "signround", objective: "block", hessians: undefined, groupSize: 64, iters: 5, device: "cpu", json: false, calibrationText: TEXT, samples: 4, seqLen: 32, protocol: "wikitext2", tokenizer: "tok", trueSequential: true, sampleSeed: undefined };
  assert.equal(blockJournalIdentity(args), { options: { objective: "block", samples: 4, seqLen: 32, protocol: "wikitext2" }, sources: [TEXT, "tok"] });
  assert.equal(blockJournalIdentity({ ...args, sampleSeed: 7 }).options, { objective: "block", samples: 4, seqLen: 32, sampleSeed: 7, protocol: "wikitext2" });
  assert.equal(blockJournalIdentity({ ...args, objective: "layer" }), { options: {}, sources: [] });
});

test("--objective block --device cuda: NO_DEVICE (exit 2, nothing written) without a GPU; with one, the GPU backend runs and its codes stay close to the CPU's", async () => {
  const probe = await gpuAvailable();
  const out = join(work.path, "block-cuda.lmpack");
  const r = lmpack(["quantize", FIXTURE_MODEL, ...quant(), "--objective", "block", ...calibration(), "--device", "cuda", "--to", "lmpack", "--out", out]);
  if (!probe.ok) {
    assert.is(r.code, 2, r.stderr);
    assert.match(r.stderr, /NO_DEVICE/);
    assert.not.ok(await exists(out));
    return;
  }
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, /--objective block runs its block forward\/backward on /);
  const cpuOut = join(work.path, "block-cpu.lmpack");
  const cpu = lmpack(["quantize", FIXTURE_MODEL, ...quant(), "--objective", "block", ...calibration(), "--device", "cpu", "--to", "lmpack", "--out", cpuOut]);
  assert.is(cpu.code, 0, cpu.stderr);
  const [gpuFile, cpuFile] = await Promise.all([openCheckpoint(out), openCheckpoint(cpuOut)]);
  try {
    let differing = 0;
    let total = 0;
    for (const entry of cpuFile.tensors.filter((t) => t.packed !== undefined)) {
      const want = await (entry.packed as PackedIntGroup).load();
      const got = await (gpuFile.tensors.find((t) => t.name === entry.name)!.packed as PackedIntGroup).load();
      for (let i = 0; i < want.codes.length; i++) if (got.codes[i] !== want.codes[i]) differing++;
      total += want.codes.length;
    }
    // The GPU agrees with the CPU to float64 rounding, not bit for bit: a signed step may flip
    // where a gradient is within rounding of zero, so a few codes may differ, never many.
    console.log(`  --device cuda vs cpu: ${differing} of ${total} codes differ`);
    assert.ok(differing <= total * 1e-3, `${differing} of ${total} codes differ`);
  } finally {
    await Promise.all([gpuFile.close(), cpuFile.close()]);
  }
});

test.run();
