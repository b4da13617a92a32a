import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { decodeScales } from "../../formats/int-group/scales.js";
import { dequantize } from "../../formats/int-group/reference.js";
import { unpackAwq } from "../../formats/int-group/awq-layout.js";
import { unpackGptq } from "../../formats/int-group/gptq-layout.js";
import { groupCount, type IntBits, type IntGroupTensor } from "../../formats/int-group/types.js";
import { bytesOf } from "../../formats/packed-array.js";
import { dequantIntGroupGpu } from "../../kernels/int-group/launch.js";
import { VERIFY_PARTIAL_BYTES } from "../../kernels/cuda/verify.js";
import { goldenArray as get } from "../helpers/golden.js";
import { REPO_ROOT, SHARED_DIR } from "../helpers/paths.js";
import { mulberry32, shuffle } from "../helpers/prng.js";
import { readAllArrays } from "../helpers/safetensors-arrays.js";
import { assertSameBits, assertSameHalves, expectCode, toF16 } from "../helpers/gpu-assert.js";
import { gpuSuite } from "../helpers/gpu-suite.js";

/**
 * The int-group CUDA kernel (kernels/int-group) against formats/int-group/reference.ts: the GPU
 * weights must be the CPU reference's bit for bit (float32 bit patterns, −0 ≠ +0) on every
 * golden case of ../shared/vectors/gptq and on large seeded random layers (odd sizes, act-order),
 * and the verify statistics must equal the CPU's sums. Without a GPU the GPU suite skips with the
 * reason; the layout check runs everywhere.
 */

const layout = suite("kernels/int-group: layout");
layout("lq_verify_partial is 24 bytes in verify.cuh and in cuda/verify.ts", () => {
  const header = readFileSync(join(REPO_ROOT, "kernels", "common", "verify.cuh"), "utf8");
  assert.match(header, new RegExp(`sizeof\\(lq_verify_partial\\) == ${VERIFY_PARTIAL_BYTES}`));
});
layout.run();

const { gpu, available } = await gpuSuite("kernels/int-group: GPU = CPU reference", { describeDevice: true });
if (available) {
  const VECTORS = join(SHARED_DIR, "vectors", "gptq");
  const cases = readdirSync(VECTORS).filter((f) => f.endsWith(".safetensors")).sort();
  for (const file of cases) {
    gpu(`${file}: weights bit-identical to the reference and to deq`, async ({ engine }) => {
      const { arrays, metadata } = await readAllArrays(join(VECTORS, file));
      const p = JSON.parse(metadata["params"]!) as { format: string; bits: IntBits; group_size: number; sym: boolean; v1_zero_overflow?: boolean };
      const packed = { qweight: get(arrays, "qweight"), qzeros: get(arrays, "qzeros"), scales: get(arrays, "scales") };
      const t = p.format === "awq" ? unpackAwq(packed, { groupSize: p.group_size, sym: p.sym }) : unpackGptq({ ...packed, gIdx: arrays.get("g_idx") }, { bits: p.bits, groupSize: p.group_size, sym: p.sym, zeros: p.format === "gptq_v1" ? "v1" : "v2" });
      const negativeZero = p.format === "awq" ? "keep" : "positive";
      for (const precision of ["scale-dtype", "f32"] as const) {
        const cpu = dequantize(t, { negativeZero, precision });
        const { weights } = dequantIntGroupGpu(engine, t, { negativeZero, precision });
        assertSameBits(weights as Float32Array, cpu, `${file} ${precision}`);
        const half = dequantIntGroupGpu(engine, t, { negativeZero, precision, output: "f16" }).weights as Uint16Array;
        assertSameHalves(half, toF16(cpu), `${file} ${precision} fp16 output`);
        if (precision === "scale-dtype") assertSameBits(weights as Float32Array, new Float32Array(get(arrays, "deq").bytes.slice().buffer), `${file} vs deq`);
      }
    });
  }
  const SHAPES = [
    { N: 4096, K: 11008, bits: 4, groupSize: 128, actOrder: false },
    { N: 11008, K: 4096, bits: 3, groupSize: 128, actOrder: true },
    { N: 1001, K: 999, bits: 2, groupSize: 32, actOrder: true },
    { N: 777, K: 4099, bits: 8, groupSize: 64, actOrder: false },
  ] as const;
  for (const [i, s] of SHAPES.entries()) {
    gpu(`random ${s.N}×${s.K} ${s.bits}-bit g${s.groupSize}${s.actOrder ? " act-order" : ""}: GPU = CPU bit for bit, verify statistics equal the CPU's`, ({ engine }) => {
      const t = randomTensor(mulberry32(900 + i), s);
      const source = Float32Array.from({ length: s.N * s.K }, (_, j) => Math.fround(Math.sin(j) * 0.05));
      const cpu = dequantize(t);
      const { weights, stats } = dequantIntGroupGpu(engine, t, { reference: source });
      assertSameBits(weights as Float32Array, cpu, "weights");
      assertSameHalves(dequantIntGroupGpu(engine, t, { output: "f16" }).weights as Uint16Array, toF16(cpu), "fp16 output");
      let [maxAbs, sqErr, sqRef] = [0, 0, 0];
      for (let j = 0; j < cpu.length; j++) {
        const e = cpu[j]! - source[j]!;
        maxAbs = Math.max(maxAbs, Math.abs(e));
        sqErr += e * e;
        sqRef += source[j]! * source[j]!;
      }
      // Float64 sums of n non-negative terms in two orders differ by at most 2·(n − 1)·2⁻⁵³ relative.
      const bound = 2 * cpu.length * 2 ** -53;
      // Verify with the weights and verify alone run different kernels: both must give the CPU's statistics.
      const alone = dequantIntGroupGpu(engine, t, { reference: source, weights: false }).stats;
      for (const [what, got] of [["verify with weights", stats], ["verify alone", alone]] as const) {
        assert.is(got!.maxAbsError, maxAbs, what);
        assert.ok(Math.abs(got!.sumSquaredError - sqErr) <= bound * sqErr && Math.abs(got!.sumSquaredReference - sqRef) <= bound * sqRef, `${what}: ${JSON.stringify({ got, sqErr, sqRef })}`);
      }
    });
  }
  gpu("refusals: a g_idx out of range never reaches the kernel (LAUNCH_REFUSED); a code wider than bits is reported by the kernel (KERNEL_STATUS)", ({ engine }) => {
    const t = randomTensor(mulberry32(5), { N: 64, K: 128, bits: 4, groupSize: 32, actOrder: true });
    expectCode(() => dequantIntGroupGpu(engine, { ...t, gIdx: t.gIdx!.map((g, k) => (k === 7 ? 4 : g)) }), "LAUNCH_REFUSED");
    expectCode(() => dequantIntGroupGpu(engine, { ...t, codes: t.codes.map((c, j) => (j === 99 ? 16 : c)) }), "KERNEL_STATUS");
  });
}
gpu.run();

function randomTensor(rng: () => number, s: { N: number; K: number; bits: number; groupSize: number; actOrder: boolean }): IntGroupTensor {
  const groups = groupCount(s.K, s.groupSize);
  const levels = 1 << s.bits;
  let gIdx: Int32Array | undefined;
  if (s.actOrder) {
    const perm = shuffle(rng, Int32Array.from({ length: s.K }, (_, k) => k));
    gIdx = new Int32Array(s.K);
    for (let j = 0; j < s.K; j++) gIdx[perm[j]!] = Math.floor(j / s.groupSize);
  }
  const f16 = decodeScales({ name: "s", dtype: "F16", shape: [groups, s.N], bytes: bytesOf(Uint16Array.from({ length: groups * s.N }, () => 0x2000 + Math.floor(rng() * 0x1800) + (rng() < 0.5 ? 0x8000 : 0))) }, [groups, s.N]).values;
  return {
    params: { bits: s.bits as IntBits, groupSize: s.groupSize, sym: false, scaleDtype: "F16" },
    outFeatures: s.N,
    inFeatures: s.K,
    codes: Uint8Array.from({ length: s.N * s.K }, () => Math.floor(rng() * levels)),
    scales: f16,
    zeros: Uint16Array.from({ length: groups * s.N }, () => Math.floor(rng() * levels)),
    gIdx,
  };
}

