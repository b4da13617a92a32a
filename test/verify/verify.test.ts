import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { quantizeCheckpoint } from "../../converters/int-group/quantize-checkpoint.js";
import { exportLmpack } from "../../converters/lmpack/export.js";
import { openCheckpoint } from "../../converters/open.js";
import { errorStats, verifyCheckpoint } from "../../converters/verify/verify-checkpoint.js";
import { gpuAvailable } from "../../kernels/engine.js";
import { CLI, FIXTURE_MODEL, SHARED_DIR, tempDir } from "../helpers/paths.js";

/**
 * `lmpack verify`: error statistics per tensor and the verdict. On the CPU path, the shared
 * third-party checkpoints (GPTQ, SpQR, FP6, VPTQ of tinystories-656K) are checked against the
 * model they were made from. With a GPU, the packed tensors go through the kernels and must equal
 * the CPU reference bit for bit.
 */

const CHECKPOINTS = join(SHARED_DIR, "checkpoints");
const MODEL = join(SHARED_DIR, "models", "tinystories-656K");
const run = (...args: string[]) => spawnSync(process.execPath, [CLI, "verify", ...args], { encoding: "utf8" });

const verify = suite("verify");

verify("errorStats: max |error|, relative RMS, SNR; non-finite weights counted apart", () => {
  const s = errorStats(Float32Array.of(1, 2, Number.NaN, 4), Float32Array.of(1, 1, 1, 4));
  assert.equal([s.maxAbsError, s.nonFinite], [1, 1]);
  assert.ok(Math.abs(s.relativeRmsError - Math.sqrt(1 / 18)) < 1e-15);
  assert.ok(Math.abs(s.snrDb - 10 * Math.log10(18)) < 1e-12);
});

for (const [name, bits, worstRms] of [["gptq-4bit", 4.5, 0.1], ["spqr", 3.0, 0.14], ["fp6", 6.0, 0.06], ["vptq", 2.0, 0.45]] as const) {
  verify(`tinystories-656K-${name} against the model it was made from: PASS, per-tensor bits and errors`, async () => {
    const packed = await openCheckpoint(join(CHECKPOINTS, `tinystories-656K-${name}`));
    const source = await openCheckpoint(MODEL);
    try {
      const report = await verifyCheckpoint(packed, source, { device: "cpu" });
      assert.ok(report.ok, report.failures.join("\n"));
      const linears = report.rows.filter((r) => r.representation !== "dense");
      assert.is(linears.length, 14);
      for (const r of linears) {
        assert.ok(r.bitsPerWeight >= bits && r.relativeRmsError > 0 && r.relativeRmsError < worstRms, `${r.name}: ${r.bitsPerWeight} bits/w, rel RMS ${r.relativeRmsError}`);
        assert.is(r.device, "cpu");
        assert.is(r.gpuCpuMismatches, undefined);
      }
      for (const r of report.rows.filter((row) => row.representation === "dense")) assert.is(r.maxAbsError, 0, r.name);
    } finally {
      await packed.close();
      await source.close();
    }
  });
}

verify("CLI: --json report; a threshold below the real error fails with exit 3 naming the tensors", async () => {
  const dir = await tempDir("lmpack-verify-");
  try {
    const path = join(dir.path, "rtn4.lmpack");
    const source = await openCheckpoint(FIXTURE_MODEL);
    await exportLmpack(quantizeCheckpoint(source, { method: "rtn", bits: 4, groupSize: 32, sym: true, scaleDtype: "F16" }), path);
    await source.close();
    const pass = run(path, "--against", FIXTURE_MODEL, "--device", "cpu", "--json");
    assert.is(pass.status, 0, pass.stderr);
    const report = JSON.parse(pass.stdout) as { ok: boolean; rows: { representation: string; relativeRmsError: number }[] };
    assert.ok(report.ok);
    assert.is(report.rows.filter((r) => r.representation === "int-group").length, 28);
    const fail = run(path, "--against", FIXTURE_MODEL, "--device", "cpu", "--max-relative-rms", "0.01");
    assert.is(fail.status, 3, fail.stdout + fail.stderr);
    assert.match(fail.stdout, /verdict: FAIL \(28 of \d+ tensors\)/);
    assert.match(fail.stdout, /FAIL model\.layers\.0\.mlp\.down_proj\.weight: relative RMS error/);
  } finally {
    await dir.cleanup();
  }
});

const probe = await gpuAvailable();
verify(`GPU: GPTQ, SpQR, FP6 and VPTQ layers dequantized by the kernels equal the CPU reference bit for bit${probe.ok ? "" : " (skipped: no GPU)"}`, async () => {
  if (!probe.ok) {
    console.log(`  skipped: no GPU (${probe.reason}); --device cuda must refuse`);
    const refused = run(join(CHECKPOINTS, "tinystories-656K-gptq-4bit"), "--against", MODEL, "--device", "cuda", "--json");
    assert.is(refused.status, 2);
    assert.is((JSON.parse(refused.stdout) as { error: { code: string } }).error.code, "NO_DEVICE");
    return;
  }
  for (const name of ["gptq-4bit", "spqr", "fp6", "vptq"]) {
    const packed = await openCheckpoint(join(CHECKPOINTS, `tinystories-656K-${name}`));
    const source = await openCheckpoint(MODEL);
    try {
      const report = await verifyCheckpoint(packed, source, { device: "cuda" });
      const linears = report.rows.filter((r) => r.representation !== "dense");
      assert.is(linears.length, 14, name);
      for (const r of linears) assert.equal([r.device, r.gpuCpuMismatches], ["cuda", 0], `${name} ${r.name}`);
      assert.ok(report.ok, report.failures.join("\n"));
      console.log(`  ${name}: ${report.device}`);
    } finally {
      await packed.close();
      await source.close();
    }
  }
});

verify.run();
