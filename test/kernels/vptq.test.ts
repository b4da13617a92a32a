import { readdirSync } from "node:fs";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { convertFloatBytes } from "../../formats/dense/convert.js";
import { f64ToBf16Bit, f64ToF16Bit } from "../../formats/dense/float-bits.js";
import type { PackedArray } from "../../formats/packed-array.js";
import { unpackVptq, VPTQ_SUFFIXES, type VptqSuffix } from "../../formats/vptq/hf-layout.js";
import { dequantizeVptq, type VptqSemantics } from "../../formats/vptq/reference.js";
import { vectorRows, type VptqFloat, type VptqTensor } from "../../formats/vptq/types.js";
import type { GpuEngine } from "../../kernels/engine.js";
import { dequantVptqGpu, launchVptqKernel, prepareVptqLaunch } from "../../kernels/vptq/launch.js";
import { goldenArray as get } from "../helpers/golden.js";
import { SHARED_DIR } from "../helpers/paths.js";
import { mulberry32, shuffle, type Rng } from "../helpers/prng.js";
import { readAllArrays } from "../helpers/safetensors-arrays.js";
import { vptqParamsOf, type VptqCaseParams } from "../helpers/vptq-golden.js";
import { assertSameBits, assertSameHalves, expectCode, toF16 } from "../helpers/gpu-assert.js";
import { gpuSuite } from "../helpers/gpu-suite.js";

/**
 * The VPTQ CUDA kernel (kernels/vptq) against formats/vptq/reference.ts, in both semantics
 * ("cuda": one rounding of c·s + b; "torch": two): the GPU weights must be the reference's bit
 * for bit, as float32 (the 16-bit values widened, −0 ≠ +0) and as fp16 (the reference's bits for
 * fp16 codebooks, its bf16 values rounded to nearest even otherwise), on every golden layer of
 * ../shared/vectors/vptq, on 4096×11008 seeded random layers (v8, k 65536, residual 256; with
 * outliers; with bf16 codebooks) and on small layers of random 16-bit patterns (subnormals,
 * signed zeros, overflow to ∞). The verify statistics must equal the CPU's sums. Without a GPU
 * the GPU suite skips with the reason; the host checks run everywhere.
 */

interface Shape {
  out: number;
  in: number;
  vl: number;
  k: number;
  kRes: number;
  groups: number;
  outliers: number;
  ovl: number;
  kOutlier: number;
  dtype: VptqFloat;
  perm: boolean;
  norm: boolean;
  /** Every 16-bit value a random bit pattern (randomBits), not a realistic value. */
  bitPatterns?: boolean;
}

const SMALL: Shape = { out: 61, in: 200, vl: 4, k: 256, kRes: 16, groups: 2, outliers: 8, ovl: 2, kOutlier: 64, dtype: "F16", perm: true, norm: true };
const LARGE: Shape = { out: 4096, in: 11008, vl: 8, k: 65536, kRes: 256, groups: 1, outliers: 0, ovl: 0, kOutlier: 0, dtype: "F16", perm: true, norm: true };

/** An engine whose every use fails the test: the refusals must come before the first device call. */
const NO_ENGINE = new Proxy({}, { get: (_, key) => assert.unreachable(`engine.${String(key)} used before the host checks refused`) }) as GpuEngine;

const host = suite("kernels/vptq: host checks before any device call");
host("refusals (LAUNCH_REFUSED): an index past its codebook, a bad permutation, inconsistent outlier columns, a wrong length", () => {
  const t = randomTensor(mulberry32(5), SMALL);
  const p = t.params;
  const cases: [string, VptqTensor][] = [
    ["main index = k", { ...t, mainIndices: t.mainIndices.map((q, i) => (i === 7 ? p.numCentroids : q)) }],
    ["residual index = k_res", { ...t, resIndices: t.resIndices!.map((q, i) => (i === 70 ? p.numResCentroids : q)) }],
    ["outlier index = k_o", { ...t, outlierIndices: t.outlierIndices!.map((q, i) => (i === 3 ? p.outlierNumCentroids : q)) }],
    ["perm repeats a column", { ...t, perm: t.perm!.map((j, k) => (k === 1 ? t.perm![0]! : j)) }],
    ["perm names column in", { ...t, perm: t.perm!.map((j, k) => (k === 2 ? t.inFeatures : j)) }],
    ["outlier columns + groups ≠ in", { ...t, params: { ...p, outlierSize: p.outlierSize + 1 } }],
    ["outlier indices one row short", { ...t, outlierIndices: t.outlierIndices!.subarray(p.outlierSize) }],
    ["centroids one short", { ...t, centroids: t.centroids.subarray(1) }],
    ["residual indices missing", { ...t, resIndices: undefined }],
    ["weight_bias missing", { ...t, weightBias: undefined }],
  ];
  for (const [what, bad] of cases) expectCode(() => dequantVptqGpu(NO_ENGINE, bad), "LAUNCH_REFUSED", what);
  expectCode(() => dequantVptqGpu(NO_ENGINE, t, { semantics: "fused" as VptqSemantics }), "LAUNCH_REFUSED", "unknown semantics");
  const fields = prepareVptqLaunch(t);
  assert.ok(fields.invPerm!.every((k, j) => t.perm![k] === j), "invPerm inverts perm");
  assert.equal(Array.from(fields.mainIndices), Array.from(t.mainIndices), "indices narrowed to uint16 unchanged");
});
host.run();

const { gpu, available } = await gpuSuite("kernels/vptq: GPU = CPU reference", { describeDevice: true });
if (available) {
  const VECTORS = join(SHARED_DIR, "vectors", "vptq");
  const GOLDEN_OF: Record<VptqSemantics, string> = { cuda: "deq_cuda", torch: "deq_torch" };
  const files = readdirSync(VECTORS).filter((f) => f.endsWith(".safetensors")).sort();
  gpu("golden set found", () => assert.ok(files.length >= 9, `found ${files.length} files in ${VECTORS}`));
  gpu("the launch constants the host reads from the module: tile 2048 columns, slab 256, 2 blocks, stash 128 / 256 bytes a thread; 256 threads a block", ({ engine }) => {
    const module = engine.module("vptq");
    assert.equal([...module.constantWords("lq_vptq_launch_constants")], [2048, 256, 2, 2 * 4 * 16, 2 * 8 * 16]);
    for (const name of ["lq_vptq_columns_v8_f16", "lq_vptq_columns_v4_bf16", "lq_vptq_dequant_verify_f16"]) assert.is(module.maxThreadsPerBlock(name), 256, name);
  });
  for (const file of files) {
    gpu(`${file}: weights bit-identical to the reference and to the golden fp16, both semantics, float32 and fp16 output`, async ({ engine }) => {
      const { arrays, metadata } = await readAllArrays(join(VECTORS, file));
      const c = JSON.parse(metadata["params"]!) as VptqCaseParams;
      const stored = new Map<VptqSuffix, PackedArray>();
      for (const suffix of VPTQ_SUFFIXES) if (arrays.has(suffix)) stored.set(suffix, get(arrays, suffix));
      const t = unpackVptq(stored, vptqParamsOf(c), c.out_features, c.in_features, file);
      for (const semantics of ["cuda", "torch"] as const) {
        const half = assertGpuIsReference(engine, t, semantics, `${file} ${semantics}`);
        assertSameHalves(half, new Uint16Array(get(arrays, GOLDEN_OF[semantics]).bytes.slice().buffer), `${file} vs ${GOLDEN_OF[semantics]}`);
      }
    });
  }
  const RANDOM: [string, Shape][] = [
    ["4096×11008 v8 k65536-256 f16", LARGE],
    ["4096×11008 v8 k65536-256 f16, 2 groups + 64 outlier columns (ovl 4, k 4096)", { ...LARGE, groups: 2, outliers: 64, ovl: 4, kOutlier: 4096 }],
    ["4096×11008 v8 k65536-256 bf16", { ...LARGE, dtype: "BF16" }],
    ["61×200 bit patterns f16, residual + 2 groups + outliers + padding", { ...SMALL, bitPatterns: true }],
    ["61×200 bit patterns bf16, residual + 2 groups + outliers + padding", { ...SMALL, dtype: "BF16", bitPatterns: true }],
    ["61×200 bit patterns f16, no residual, outliers, perm or norm", { ...SMALL, kRes: 0, outliers: 0, groups: 1, perm: false, norm: false, bitPatterns: true }],
  ];
  for (const [i, [name, shape]] of RANDOM.entries()) {
    gpu(`random ${name}: GPU = CPU bit for bit, both semantics, float32 and fp16 output`, ({ engine }) => {
      const t = randomTensor(mulberry32(700 + i), shape);
      for (const semantics of ["cuda", "torch"] as const) assertGpuIsReference(engine, t, semantics, `${name} ${semantics}`);
    });
  }
  gpu("verify statistics equal the CPU's sums (with and without weights written)", ({ engine }) => {
    const t = randomTensor(mulberry32(800), { ...LARGE, groups: 2, outliers: 64, ovl: 4, kOutlier: 4096 });
    const source = Float32Array.from({ length: t.outFeatures * t.inFeatures }, (_, j) => Math.fround(Math.sin(j) * 0.05));
    const cpu = widen(dequantizeVptq(t), t.dtype);
    let [maxAbs, sqErr, sqRef] = [0, 0, 0];
    for (let j = 0; j < cpu.length; j++) {
      const e = cpu[j]! - source[j]!;
      maxAbs = Math.max(maxAbs, Math.abs(e));
      sqErr += e * e;
      sqRef += source[j]! * source[j]!;
    }
    for (const weights of [true, false]) {
      const result = dequantVptqGpu(engine, t, { reference: source, weights });
      if (weights) assertSameBits(result.weights as Float32Array, cpu, "weights");
      else assert.is(result.weights, undefined);
      const stats = result.stats!;
      assert.is(stats.maxAbsError, maxAbs);
      // Float64 sums of n non-negative terms in two orders differ by at most 2·(n − 1)·2⁻⁵³ relative.
      const bound = 2 * cpu.length * 2 ** -53;
      assert.ok(Math.abs(stats.sumSquaredError - sqErr) <= bound * sqErr && Math.abs(stats.sumSquaredReference - sqRef) <= bound * sqRef, JSON.stringify({ stats, sqErr, sqRef }));
    }
  });
  gpu("the kernel's own checks: indices corrupted after the host checks are reported (KERNEL_STATUS), not read", ({ engine }) => {
    const t = randomTensor(mulberry32(6), SMALL);
    const p = t.params;
    const fields = prepareVptqLaunch(t);
    assert.is(launchVptqKernel(engine, fields).weights?.length, t.outFeatures * t.inFeatures, "the prepared fields as they are");
    expectCode(() => launchVptqKernel(engine, { ...fields, mainIndices: fields.mainIndices.map((q, i) => (i === 5 ? p.numCentroids : q)) }), "KERNEL_STATUS", "main index");
    expectCode(() => launchVptqKernel(engine, { ...fields, resIndices: fields.resIndices!.map((q, i) => (i === 9 ? p.numResCentroids : q)) }), "KERNEL_STATUS", "residual index");
    expectCode(() => launchVptqKernel(engine, { ...fields, invPerm: fields.invPerm!.map((k, j) => (j === 3 ? t.inFeatures : k)) }), "KERNEL_STATUS", "inverse permutation");
    expectCode(() => launchVptqKernel(engine, { ...fields, tensor: { ...t, outlierIndices: t.outlierIndices!.map((q, i) => (i === 2 ? p.outlierNumCentroids : q)) } }), "KERNEL_STATUS", "outlier index");
  });
}
gpu.run();

/** GPU = reference in float32 and in fp16 output; returns the GPU's fp16 bits. */
function assertGpuIsReference(engine: GpuEngine, t: VptqTensor, semantics: VptqSemantics, what: string): Uint16Array {
  const cpu = dequantizeVptq(t, semantics);
  const widened = widen(cpu, t.dtype);
  assertSameBits(dequantVptqGpu(engine, t, { semantics }).weights as Float32Array, widened, `${what}, float32`);
  const half = dequantVptqGpu(engine, t, { semantics, output: "f16" }).weights as Uint16Array;
  assertSameHalves(half, t.dtype === "F16" ? cpu : toF16(widened), `${what}, fp16`);
  return half;
}

/**
 * A seeded random layer, built directly as a VptqTensor. Realistic values mimic VPTQ's norm:
 * centroids of normalized weights in [0, 1), small residuals, scale = a column range, bias = a
 * column minimum, so that c·s and b nearly cancel and the two semantics often differ.
 */
function randomTensor(rng: Rng, s: Shape): VptqTensor {
  const round = s.dtype === "F16" ? f64ToF16Bit : f64ToBf16Bit;
  const floats = (n: number, low: number, high: number, kind: keyof typeof BIT_LIMITS.F16) => Uint16Array.from({ length: n }, () => (s.bitPatterns ? randomBits(rng, s.dtype, kind) : round(low + rng() * (high - low))));
  const ints = (n: number, k: number) => Uint32Array.from({ length: n }, () => Math.floor(rng() * k));
  const groupSize = (s.in - s.outliers) / s.groups;
  const indexCount = s.groups * vectorRows(s.out, s.vl) * groupSize;
  let perm: Uint16Array | undefined;
  if (s.perm) {
    perm = shuffle(rng, Uint16Array.from({ length: s.in }, (_, k) => k));
  }
  return {
    params: { vectorLen: s.vl, numCentroids: s.k, numResCentroids: s.kRes, groupNum: s.groups, groupSize, outlierSize: s.outliers, outlierVectorLen: s.ovl, outlierNumCentroids: s.kOutlier, enableNorm: s.norm, enablePerm: s.perm },
    outFeatures: s.out,
    inFeatures: s.in,
    dtype: s.dtype,
    centroids: floats(s.groups * s.k * s.vl, 0, 1, "centroid"),
    resCentroids: s.kRes > 0 ? floats(s.groups * s.kRes * s.vl, -0.05, 0.05, "centroid") : undefined,
    mainIndices: ints(indexCount, s.k),
    resIndices: s.kRes > 0 ? ints(indexCount, s.kRes) : undefined,
    outlierCentroids: s.outliers > 0 ? floats(s.kOutlier * s.ovl, -4, 4, "centroid") : undefined,
    outlierIndices: s.outliers > 0 ? Uint16Array.from(ints(vectorRows(s.out, s.ovl) * s.outliers, s.kOutlier)) : undefined,
    perm,
    weightScale: s.norm ? floats(s.in, 0.01, 0.2, "scale") : undefined,
    weightBias: s.norm ? floats(s.in, -0.1, 0, "bias") : undefined,
  };
}

/**
 * Largest biased exponent of the random bit patterns, per role. They keep every intermediate
 * finite: |centroid| < 2¹⁴ (f16) or 2¹²⁶ (bf16), so main + res cannot overflow, and |scale| < 2
 * or 1, so neither can torch's h(c·s) (reference.ts's roundSum turns a −∞ operand into NaN
 * where the runtimes give −∞: vptq.cuh). Results still overflow to ±∞ through a large bias, and
 * go subnormal through small scales.
 */
const BIT_LIMITS = { F16: { centroid: 28, scale: 15, bias: 30 }, BF16: { centroid: 252, scale: 126, bias: 254 } } as const;

/** A random finite bit pattern within the role's limit: ±0 one time in 16 (never for a scale: ∞·0), else uniform. */
function randomBits(rng: Rng, dtype: VptqFloat, kind: keyof typeof BIT_LIMITS.F16): number {
  const mantissaBits = dtype === "F16" ? 10 : 7;
  if (kind !== "scale" && rng() < 1 / 16) return rng() < 0.5 ? 0 : 0x8000;
  for (;;) {
    const h = Math.floor(rng() * 65536);
    if ((h & 0x7fff) >> mantissaBits <= BIT_LIMITS[dtype][kind] && (h & 0x7fff) !== 0) return h;
  }
}

/** 16-bit values widened exactly to float32. */
function widen(bits: Uint16Array, dtype: VptqFloat): Float32Array {
  const bytes = convertFloatBytes(new Uint8Array(bits.buffer, bits.byteOffset, bits.byteLength), dtype, "F32");
  return new Float32Array(bytes.buffer, bytes.byteOffset, bits.length);
}

