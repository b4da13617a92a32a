import { spawnSync } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import type { PackedIntGroup } from "../../converters/checkpoint.js";
import { openCheckpoint } from "../../converters/open.js";
import { convertFloatBytes } from "../../formats/dense/convert.js";
import { dequantize } from "../../formats/int-group/reference.js";
import { CLI, FIXTURE_MODEL, tempDir } from "../helpers/paths.js";

/** `lmpack quantize` end to end on the embedded fixture: every method, read back by `convert`/`inspect`. */
const test = suite("int-group: lmpack quantize");

let work: Awaited<ReturnType<typeof tempDir>>;
test.before(async () => {
  work = await tempDir();
});
test.after(() => work.cleanup());

function lmpack(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", cwd: work.path, env: { ...process.env, NO_COLOR: "1" } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const runs = [
  { method: "rtn", extra: [], to: "hf-gptq", bits: "4", group: "64", sym: true },
  { method: "gptq", extra: ["--hessians", "embedding-proxy", "--act-order"], to: "hf-gptq", bits: "3", group: "32", sym: false },
  { method: "signround", extra: ["--hessians", "embedding-proxy", "--iters", "4"], to: "hf-autoround", bits: "2", group: "64", sym: false },
  { method: "signround", extra: ["--iters", "4"], to: "lmpack", bits: "4", group: "128", sym: true },
];

for (const r of runs) {
  test(`${r.method} W${r.bits}G${r.group} ${r.sym ? "sym" : "asym"} → ${r.to}: readable, all 28 linears packed, dequantizes close to the source`, async () => {
    const out = join(work.path, `${r.method}-${r.bits}-${r.to}${r.to === "lmpack" ? ".lmpack" : ""}`);
    const q = lmpack("quantize", FIXTURE_MODEL, "--method", r.method, "--bits", r.bits, "--group-size", r.group, ...(r.sym ? ["--sym"] : []), ...r.extra, "--to", r.to, "--out", out, "--json");
    assert.is(q.status, 0, q.stderr);
    const summary = JSON.parse(q.stdout) as { layers: { name: string; weightMse: number; relativeOutputError?: number }[] };
    assert.is(summary.layers.length, 28);
    const inspect = JSON.parse(lmpack("inspect", out, "--json").stdout) as { quantization: { packedTensors: number; bits: number; effectiveBitsPerWeight: number } };
    assert.is(inspect.quantization.packedTensors, 28);
    assert.is(inspect.quantization.bits, Number(r.bits));
    assert.ok(inspect.quantization.effectiveBitsPerWeight > Number(r.bits) && inspect.quantization.effectiveBitsPerWeight < Number(r.bits) + 1);
    // The packed weights must be the source weights up to quantization error: relative RMS < 2^-(bits-2).
    const [packed, source] = [await openCheckpoint(out), await openCheckpoint(FIXTURE_MODEL)];
    for (const t of packed.tensors.filter((t) => t.packed !== undefined).slice(0, 4)) {
      const entry = source.tensors.find((s) => s.name === t.name)!;
      const f32 = convertFloatBytes(await entry.read(), entry.dtype as "BF16", "F32");
      const w = new Float32Array(f32.buffer, f32.byteOffset, f32.length / 4);
      const d = dequantize(await (t.packed as PackedIntGroup).load());
      let err = 0;
      let energy = 0;
      for (let i = 0; i < w.length; i++) {
        err += (d[i]! - w[i]!) ** 2;
        energy += w[i]! ** 2;
      }
      assert.ok(Math.sqrt(err / energy) < 2 ** -(Number(r.bits) - 2), `${t.name}: relative RMS ${Math.sqrt(err / energy)}`);
    }
    await Promise.all([packed.close(), source.close()]);
    if (r.to !== "lmpack") {
      const config = JSON.parse(await readFile(join(out, "config.json"), "utf8")) as { quantization_config: Record<string, unknown> };
      assert.is(config.quantization_config["bits"], Number(r.bits));
    }
  });
}

test("gptq without --hessians is refused with a usage error", () => {
  const r = lmpack("quantize", FIXTURE_MODEL, "--method", "gptq", "--to", "lmpack", "--out", join(work.path, "no.lmpack"));
  assert.is(r.status, 1);
  assert.match(r.stderr, /BAD_ARGUMENT/);
});

test.run();
