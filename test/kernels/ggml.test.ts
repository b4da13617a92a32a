import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { ggmlCodecByName } from "../../formats/ggml/registry.js";
import type { GgmlTypeCodec } from "../../formats/ggml/types.js";
import type { VerifyStats } from "../../kernels/cuda/verify.js";
import type { GpuEngine } from "../../kernels/engine.js";
import { dequantGgmlGpu, GGML_KERNEL_TYPES, ggmlKernelName, type GgmlKernelType } from "../../kernels/ggml/launch.js";
import { goldenArray } from "../helpers/golden.js";
import { REPO_ROOT, SHARED_DIR } from "../helpers/paths.js";
import { mulberry32, shuffle, type Rng } from "../helpers/prng.js";
import { readAllArrays } from "../helpers/safetensors-arrays.js";
import { assertSameBits, assertSameHalves, expectCode, toF16 } from "../helpers/gpu-assert.js";
import { gpuSuite } from "../helpers/gpu-suite.js";

/**
 * The ggml CUDA kernels (kernels/ggml) against the codecs of formats/ggml: the GPU weights must be
 * the codec's `dequantize` bit for bit (float32 bit patterns, −0 ≠ +0, NaN payloads of F16/BF16
 * included), and their fp16 output the codec's values rounded by f32BitsToF16Bits, for every type
 * with a kernel: on seeded random blocks (random bytes, fp16 scale fields set to random finite
 * values; for F16 and BF16 every one of the 65,536 patterns), on every golden file of
 * ../shared/vectors/gguf of those types, and on 4096×11008 Q4_K and Q8_0 layers. The verify
 * statistics must equal the CPU's sums. Without a GPU the GPU suite skips with the reason; the
 * layout and the host's refusals are checked everywhere.
 */

const KERNELS = join(REPO_ROOT, "kernels", "ggml");
const HEADERS = ["ggml-legacy.cuh", "ggml-k.cuh"].map((f) => readFileSync(join(KERNELS, f), "utf8")).join("\n");
const SOURCE = readFileSync(join(KERNELS, "ggml.cu"), "utf8");

/** A type's spelling in ggml.cu (q4_K, tq1_0, bf16): its kernel name without lq_ggml_ and _dequant_verify. */
const spelling = (type: GgmlKernelType) => ggmlKernelName(type).slice("lq_ggml_".length, -"_dequant_verify".length);
const codecOf = (type: string): GgmlTypeCodec => {
  const codec = ggmlCodecByName(type);
  if (codec === undefined) throw new Error(`no codec for ${type}`);
  return codec;
};

/** Byte offsets of the fp16 fields (d, and m or dmin) in a block: the structs of formats/ggml/<type>.ts. */
const FP16_FIELDS: Record<GgmlKernelType, readonly number[]> = {
  F16: [], BF16: [], Q8_0: [0], Q4_0: [0], Q4_1: [0, 2], Q5_0: [0], Q5_1: [0, 2],
  Q2_K: [80, 82], Q3_K: [108], Q4_K: [0, 2], Q5_K: [0, 2], Q6_K: [208], TQ1_0: [52], TQ2_0: [64],
};

const layout = suite("kernels/ggml: layout and host checks");
layout("each kernel type's block struct has the codec's typeSize (static_assert) and its kernel the codec's blockSize", () => {
  // static_assert(sizeof(lq_block_q4_K) == 2 + 2 + 12 + 128, ...): the sum of the field sizes.
  const sizes = new Map([...HEADERS.matchAll(/static_assert\(sizeof\(lq_block_(\w+)\) == ([\d +]+),/g)].map((m) => [m[1]!, m[2]!.split("+").reduce((sum, term) => sum + Number(term), 0)]));
  // LQ_GGML_KERNEL(q4_K, QK_K): the block size, a literal or one of the headers' #defines.
  const defines = new Map([...HEADERS.matchAll(/^#define (\w+) (\d+)$/gm)].map((m) => [m[1]!, Number(m[2])]));
  const kernels = new Map([...SOURCE.matchAll(/^LQ_GGML_KERNEL\((\w+), (\w+)\)$/gm)].map((m) => [m[1]!, /^\d+$/.test(m[2]!) ? Number(m[2]) : defines.get(m[2]!)]));
  const expected = GGML_KERNEL_TYPES.map(spelling).sort();
  assert.equal([...kernels.keys()].sort(), expected, "the kernels of ggml.cu are GGML_KERNEL_TYPES");
  assert.equal([...sizes.keys()].sort(), expected, "the block structs of the headers are GGML_KERNEL_TYPES");
  for (const type of GGML_KERNEL_TYPES) {
    const codec = codecOf(type);
    assert.is(sizes.get(spelling(type)), codec.typeSize, `${type}: sizeof(lq_block_${spelling(type)})`);
    assert.is(kernels.get(spelling(type)), codec.blockSize, `${type}: block size of ${ggmlKernelName(type)}`);
  }
});

/** An engine any use of which throws: the refusals must come before the GPU is touched. */
const untouchable = new Proxy({}, { get: (_, key) => { throw new Error(`the host checks used engine.${String(key)}`); } }) as GpuEngine;
layout("refusals before the launch (LAUNCH_REFUSED): wrong byte length, partial or no blocks, a type without a kernel, a reference of the wrong length", () => {
  const q4k = codecOf("Q4_K");
  for (const nBytes of [2 * q4k.typeSize - 1, 2 * q4k.typeSize + 1, 3 * q4k.typeSize]) expectCode(() => dequantGgmlGpu(untouchable, "Q4_K", new Uint8Array(nBytes), 512), "LAUNCH_REFUSED");
  expectCode(() => dequantGgmlGpu(untouchable, "Q8_0", new Uint8Array(34), 33), "LAUNCH_REFUSED");
  expectCode(() => dequantGgmlGpu(untouchable, "Q8_0", new Uint8Array(0), 0), "LAUNCH_REFUSED");
  for (const type of ["IQ2_XXS", "IQ4_NL", "F32", "Q9_9"]) expectCode(() => dequantGgmlGpu(untouchable, type, new Uint8Array(256), 64), "LAUNCH_REFUSED");
  expectCode(() => dequantGgmlGpu(untouchable, "Q4_0", new Uint8Array(18), 32, { reference: new Float32Array(31) }), "LAUNCH_REFUSED");
});
layout.run();

const { gpu, available } = await gpuSuite("kernels/ggml: GPU = CPU codecs", { describeDevice: true });
if (available) {
  for (const [i, type] of GGML_KERNEL_TYPES.entries()) {
    const every = FP16_FIELDS[type].length === 0;
    gpu(`${type}: random blocks${every ? " (every bit pattern)" : ""}: GPU = codec bit for bit, float32 and fp16${every ? "" : "; verify statistics equal the CPU's"}`, ({ engine }) => {
      const codec = codecOf(type);
      // An odd block count, 2^18 weights or fewer; F16 and BF16 take all 65,536 patterns.
      const bytes = randomBlocks(mulberry32(700 + i), type, every ? 65536 : (1 << 18) / codec.blockSize - 1);
      // Random F16/BF16 bits include infinities and NaNs, whose statistics are not comparable.
      checkType(engine, codec, bytes, { stats: !every });
    });
  }
  const VECTORS = join(SHARED_DIR, "vectors", "gguf");
  const kernelTypes: readonly string[] = GGML_KERNEL_TYPES;
  // q4_k_deq_0.safetensors → Q4_K, as test/ggml/vectors.test.ts names them.
  const cases = readdirSync(VECTORS)
    .filter((f) => f.endsWith(".safetensors"))
    .sort()
    .map((file) => ({ file, type: /^(.*?)(_deq)?_\d+\.safetensors$/.exec(file)?.[1]?.toUpperCase() ?? "" }))
    .filter((c): c is { file: string; type: GgmlKernelType } => kernelTypes.includes(c.type));
  for (const { file, type } of cases) {
    gpu(`${file}: GPU = codec = deq bit for bit, float32 and fp16`, async ({ engine }) => {
      const { arrays } = await readAllArrays(join(VECTORS, file));
      const q = goldenArray(arrays, "q").bytes.slice();
      // F16/BF16 cases hold infinities and NaNs (row 3 of *_0), whose statistics are not comparable.
      const weights = checkType(engine, codecOf(type), q, { stats: FP16_FIELDS[type].length > 0 });
      assertSameBits(weights, new Float32Array(goldenArray(arrays, "deq").bytes.slice().buffer), `${file} vs deq`);
    });
  }
  for (const [i, type] of (["Q4_K", "Q8_0"] as const).entries()) {
    gpu(`${type} 4096×11008: GPU = codec bit for bit, float32 and fp16; verify statistics equal the CPU's, with and without the weights`, ({ engine }) => {
      const codec = codecOf(type);
      const bytes = randomBlocks(mulberry32(900 + i), type, (4096 * 11008) / codec.blockSize);
      checkType(engine, codec, bytes, { stats: true });
    });
  }
}
gpu.run();

/**
 * Dequantizes `bytes` on the GPU (float32, then fp16) and compares with the codec; with `stats`,
 * also the verify statistics against a source, with the weights and without. Returns the CPU's
 * weights.
 */
function checkType(engine: GpuEngine, codec: GgmlTypeCodec, bytes: Uint8Array, options: { stats: boolean }): Float32Array {
  const nBlocks = bytes.length / codec.typeSize;
  const nElements = nBlocks * codec.blockSize;
  const cpu = new Float32Array(nElements);
  codec.dequantize(bytes, nBlocks, cpu);
  const what = `${codec.name} × ${nBlocks} blocks`;
  const source = options.stats ? sourceWeights(nElements) : undefined;
  const result = dequantGgmlGpu(engine, codec.name, bytes, nElements, source === undefined ? {} : { reference: source });
  assertSameBits(result.weights as Float32Array, cpu, what);
  assertSameHalves(dequantGgmlGpu(engine, codec.name, bytes, nElements, { output: "f16" }).weights as Uint16Array, toF16(cpu), `${what}, fp16 output`);
  if (source !== undefined) {
    assertStats(result.stats!, cpu, source);
    const verifyOnly = dequantGgmlGpu(engine, codec.name, bytes, nElements, { reference: source, weights: false });
    assert.is(verifyOnly.weights, undefined, "weights: false returns none");
    assert.equal(verifyOnly.stats, result.stats, "the same statistics without the weights");
  }
  return cpu;
}

/**
 * `nBlocks` blocks of random bytes (so every bit pattern of the codes and sub-block scales occurs),
 * with each fp16 field a random finite value (zeros and subnormals included): a NaN scale gives
 * NaNs whose payloads the CPU and the GPU need not agree on. F16/BF16 (nBlocks 65,536): every
 * 16-bit pattern once, shuffled.
 */
function randomBlocks(rng: Rng, type: GgmlKernelType, nBlocks: number): Uint8Array {
  const { typeSize } = codecOf(type);
  if (FP16_FIELDS[type].length === 0) {
    const all = shuffle(rng, Uint16Array.from({ length: nBlocks }, (_, j) => j & 0xffff));
    return new Uint8Array(all.buffer);
  }
  const words = new Uint32Array(Math.ceil((nBlocks * typeSize) / 4));
  for (let j = 0; j < words.length; j++) words[j] = Math.floor(rng() * 2 ** 32);
  const bytes = new Uint8Array(words.buffer, 0, nBlocks * typeSize);
  for (let b = 0; b < nBlocks; b++) {
    for (const at of FP16_FIELDS[type]) {
      let h = Math.floor(rng() * 0x10000);
      if ((h & 0x7c00) === 0x7c00) h ^= 0x4000; // exponent 31 (inf, NaN) → 15
      bytes[b * typeSize + at] = h & 0xff;
      bytes[b * typeSize + at + 1] = h >>> 8;
    }
  }
  return bytes;
}

function sourceWeights(n: number): Float32Array {
  const source = new Float32Array(n);
  for (let j = 0; j < n; j++) source[j] = Math.sin(j) * 0.05;
  return source;
}

function assertStats(stats: VerifyStats, cpu: Float32Array, source: Float32Array): void {
  let [maxAbs, sqErr, sqRef] = [0, 0, 0];
  for (let j = 0; j < cpu.length; j++) {
    const e = cpu[j]! - source[j]!;
    maxAbs = Math.max(maxAbs, Math.abs(e));
    sqErr += e * e;
    sqRef += source[j]! * source[j]!;
  }
  assert.is(stats.maxAbsError, maxAbs);
  // Float64 sums of n non-negative terms in two orders differ by at most 2·(n − 1)·2⁻⁵³ relative.
  const bound = 2 * cpu.length * 2 ** -53;
  assert.ok(Math.abs(stats.sumSquaredError - sqErr) <= bound * sqErr && Math.abs(stats.sumSquaredReference - sqRef) <= bound * sqRef, JSON.stringify({ stats, sqErr, sqRef }));
}

