import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { fpxFormat, parseFormat, type FpxFormat } from "../../formats/fpx/format.js";
import { dequantizeFpx } from "../../formats/fpx/reference.js";
import { regionTableForKernel, tcPackedBytes, unpackTc } from "../../formats/fpx/tc-layout.js";
import type { FpxTensor } from "../../formats/fpx/types.js";
import { viewAs } from "../../formats/packed-array.js";
import { checkStatus } from "../../kernels/cuda/status.js";
import type { GpuEngine } from "../../kernels/engine.js";
import { dequantFpxGpu } from "../../kernels/fpx/launch.js";
import { goldenArray as get } from "../helpers/golden.js";
import { REPO_ROOT, SHARED_DIR } from "../helpers/paths.js";
import { mulberry32 } from "../helpers/prng.js";
import { readAllArrays } from "../helpers/safetensors-arrays.js";
import { assertSameBits, assertSameHalves, expectCode, toF16 } from "../helpers/gpu-assert.js";
import { gpuSuite } from "../helpers/gpu-suite.js";

/**
 * The FPx CUDA kernel (kernels/fpx) against formats/fpx/reference.ts: the GPU weights must be the
 * CPU reference's bit for bit (float32 bit patterns, −0 ≠ +0; fp16 output = the reference
 * rounded once) on every packed layer of ../shared/vectors/fp6 and on large seeded random layers
 * (every code width 3 … 7, random layout bytes so every code occurs, random finite fp16 scales),
 * and the verify statistics must equal the CPU's sums. Without a GPU the GPU suite skips with
 * the reason; the layout and host-refusal checks run everywhere.
 */

const layout = suite("kernels/fpx: layout");
layout("fpx.cuh's INV tables give tc-layout.ts's slot shifts", () => {
  const header = readFileSync(join(REPO_ROOT, "kernels", "fpx", "fpx.cuh"), "utf8");
  for (const y of [1, 2, 4]) {
    const literal = new RegExp(`LQ_FPX_INV${y}\\[\\d+\\] = \\{([^}]*)\\}`).exec(header);
    assert.ok(literal !== null, `LQ_FPX_INV${y} in fpx.cuh`);
    const inv = literal[1]!.split(",").map(Number);
    const perWord = 32 / y;
    const { shifts } = regionTableForKernel(y);
    assert.is(inv.length, perWord);
    shifts.forEach((shift, i) => assert.is(shift, 32 - y * (inv[i % perWord]! + 1), `y ${y}, slot ${i % perWord}`));
  }
});
layout("fpx.cuh's lane order (word w of lane t, slot s → row, column) is tc-layout.ts's gather table", () => {
  for (const y of [1, 2, 4]) {
    const perWord = 32 / y;
    const { offsets } = regionTableForKernel(y);
    for (let lane = 0; lane < 32; lane++) {
      for (let p = 0; p < 32; p++) {
        const [k, g, d, h0] = [p >> 3, (p >> 2) & 1, (p >> 1) & 1, p & 1];
        const word = Math.floor(p / perWord) * 32 + lane;
        assert.is(offsets[word * perWord + (p % perWord)], (16 * k + 8 * d + (lane >> 2)) * 16 + 8 * g + 2 * (lane & 3) + h0, `y ${y}, lane ${lane}, p ${p}`);
      }
    }
  }
});
layout.run();

const refusals = suite("kernels/fpx: host refusals (LAUNCH_REFUSED before any device call)");
// Throws if touched: the checks must all come before the launch needs the device.
const noDevice = new Proxy({}, { get: (_, key) => { throw new Error(`the device was used (${String(key)}) before the checks refused`); } }) as GpuEngine;
const small = randomTensor(mulberry32(7), { M: 64, N: 128, format: "e3m2" });
const REFUSED: [string, () => unknown][] = [
  ["packed one byte short", () => dequantFpxGpu(noDevice, { ...small, packed: small.packed.subarray(1) })],
  ["packed one word long", () => dequantFpxGpu(noDevice, { ...small, packed: new Uint8Array(small.packed.length + 4) })],
  ["one scale short", () => dequantFpxGpu(noDevice, { ...small, scales: small.scales.subarray(1) })],
  ["one scale too many", () => dequantFpxGpu(noDevice, { ...small, scales: new Uint16Array(65) })],
  ["reference of the wrong length", () => dequantFpxGpu(noDevice, small, { reference: new Float32Array(64 * 128 - 1) })],
  ["64×48: columns not a multiple of 64 (packed length consistent)", () => dequantFpxGpu(noDevice, { ...small, inFeatures: 48, packed: new Uint8Array(tcPackedBytes(64, 48, 6)) })],
  ["96×64: rows not a multiple of 64", () => dequantFpxGpu(noDevice, { ...small, outFeatures: 96, inFeatures: 64, packed: new Uint8Array(tcPackedBytes(96, 64, 6)), scales: new Uint16Array(96) })],
  ["0×128", () => dequantFpxGpu(noDevice, { ...small, outFeatures: 0, packed: new Uint8Array(0), scales: new Uint16Array(0) })],
  ["an 8-bit format object", () => dequantFpxGpu(noDevice, { ...small, format: { ...small.format, ebits: 4, mbits: 3, nbits: 8 }, packed: new Uint8Array(64 * 128) })],
  ["a format whose nbits is not 1 + ebits + mbits", () => dequantFpxGpu(noDevice, { ...small, format: { ...small.format, nbits: 5 }, packed: new Uint8Array(tcPackedBytes(64, 128, 5)) })],
];
for (const [name, run] of REFUSED) refusals(name, () => expectCode(run, "LAUNCH_REFUSED"));
refusals.run();

const { gpu, available } = await gpuSuite("kernels/fpx: GPU = CPU reference", { describeDevice: true });
if (available) {
  const VECTORS = join(SHARED_DIR, "vectors", "fp6");
  const cases = readdirSync(VECTORS).filter((f) => f.endsWith(".safetensors") && !f.startsWith("codec_")).sort();
  gpu("golden set found", () => assert.ok(cases.length >= 8, `found ${cases.length} files in ${VECTORS}`));
  for (const file of cases) {
    gpu(`${file}: weights bit-identical to the reference (f32 and fp16 output)`, async ({ engine }) => {
      const { arrays, metadata } = await readAllArrays(join(VECTORS, file));
      const p = JSON.parse(metadata["params"]!) as { ebits: number; mbits: number; shape: [number, number] };
      const [M, N] = p.shape;
      const scaled = file.startsWith("scaled_");
      // pack_* files hold codes and layout only: scale 1 (fp16 0x3c00) makes W the decoded codes.
      const scales = scaled ? viewAs(get(arrays, "scale").bytes, Uint16Array) : new Uint16Array(M).fill(0x3c00);
      const t: FpxTensor = { format: fpxFormat(p.ebits, p.mbits), outFeatures: M, inFeatures: N, packed: get(arrays, "packed").bytes, scales };
      const cpu = dequantizeFpx(t);
      const weights = dequantFpxGpu(engine, t).weights as Float32Array;
      assertSameBits(weights, cpu, file);
      const half = dequantFpxGpu(engine, t, { output: "f16" }).weights as Uint16Array;
      assertSameHalves(half, toF16(cpu), `${file} fp16 output`);
      if (scaled) {
        assertSameBits(weights, viewAs(get(arrays, "dequant").bytes, Float32Array), `${file} vs dequant (torchao)`);
        assertSameHalves(half, viewAs(get(arrays, "dequant_f16").bytes, Uint16Array), `${file} vs dequant_f16 (FP6-LLM)`);
      }
    });
  }
  // Every code width (regions 1+2, 4, 1+4, 2+4, 1+2+4) and the extreme biases (e1m5: 0, e6m0: 31).
  const SHAPES = [
    { M: 4096, N: 11008, format: "e3m2" },
    { M: 64 * 7, N: 64 * 13, format: "e2m3" },
    { M: 64 * 11, N: 64 * 5, format: "e3m1" },
    { M: 64 * 3, N: 64 * 17, format: "e2m2" },
    { M: 64 * 5, N: 64 * 9, format: "e1m1" },
    { M: 64 * 9, N: 64 * 3, format: "e2m1" },
    { M: 64 * 13, N: 64 * 7, format: "e3m3" },
    { M: 64 * 2, N: 64 * 11, format: "e6m0" },
    { M: 64 * 3, N: 64 * 2, format: "e1m5" },
  ] as const;
  for (const [i, s] of SHAPES.entries()) {
    gpu(`random ${s.M}×${s.N} ${s.format}: every code occurs; GPU = CPU bit for bit, verify statistics equal the CPU's`, ({ engine }) => {
      const t = randomTensor(mulberry32(1700 + i), s);
      const seen = new Uint8Array(1 << t.format.nbits);
      for (const code of unpackTc(t.packed, s.M, s.N, t.format.nbits)) seen[code] = 1;
      assert.is(seen.indexOf(0), -1, "a code that never occurs");
      const source = Float32Array.from({ length: s.M * s.N }, (_, j) => Math.fround(Math.sin(j) * 0.05));
      const cpu = dequantizeFpx(t);
      const { weights, stats } = dequantFpxGpu(engine, t, { reference: source });
      assertSameBits(weights as Float32Array, cpu, "weights");
      assertSameHalves(dequantFpxGpu(engine, t, { output: "f16" }).weights as Uint16Array, toF16(cpu), "fp16 output");
      assert.is(dequantFpxGpu(engine, t, { reference: source, weights: false }).weights, undefined, "verify alone returns no weights");
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
      const alone = dequantFpxGpu(engine, t, { reference: source, weights: false }).stats;
      for (const [what, got] of [["verify with weights", stats], ["verify alone", alone]] as const) {
        assert.is(got!.maxAbsError, maxAbs, what);
        assert.ok(Math.abs(got!.sumSquaredError - sqErr) <= bound * sqErr && Math.abs(got!.sumSquaredReference - sqRef) <= bound * sqRef, `${what}: ${JSON.stringify({ got, sqErr, sqRef })}`);
      }
    });
  }
  gpu("the kernel's own shape check: a launch past the host checks (48 rows) sets the status word (KERNEL_STATUS)", ({ engine }) => {
    const { context } = engine;
    const status = context.alloc(4);
    try {
      context.zero(status, 4);
      engine.module("fpx").launch("lq_fpx_dequant_verify", { grid: [1], block: [256] }, [
        { pointer: 0n }, { pointer: 0n }, { pointer: 0n }, { pointer: 0n }, { pointer: 0n },
        { i64: 48 }, { i64: 64 }, { i32: 3 }, { i32: 2 }, { i32: 0 }, { pointer: status },
      ]);
      expectCode(() => checkStatus(context, status, { format: "fpx", shape: "48×64 e3m2" }), "KERNEL_STATUS");
    } finally {
      context.free(status);
    }
  });
}
gpu.run();

/** Random layout bytes (every code occurs at these sizes) and random finite fp16 scales of both signs, with ±0, the smallest subnormal and the largest finite among them. */
function randomTensor(rng: () => number, s: { M: number; N: number; format: string }): FpxTensor {
  const format: FpxFormat = parseFormat(s.format);
  const packed = Uint8Array.from({ length: tcPackedBytes(s.M, s.N, format.nbits) }, () => Math.floor(rng() * 256));
  const scales = Uint16Array.from({ length: s.M }, () => Math.floor(rng() * 0x7c00) | (rng() < 0.5 ? 0x8000 : 0));
  scales.set([0x0000, 0x8000, 0x0001, 0x7bff, 0xfbff].slice(0, s.M));
  return { format, outFeatures: s.M, inFeatures: s.N, packed, scales };
}

