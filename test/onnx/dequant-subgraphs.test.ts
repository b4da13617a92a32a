import { readdirSync } from "node:fs";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { dequantLayer, WEIGHT_OUTPUT, type DequantLayer, type PackedLinear } from "../../converters/onnx/dequant-layer.js";
import { encodeModel } from "../../converters/onnx/model.js";
import { convertFloatBytes } from "../../formats/dense/convert.js";
import { f32BitsToF16Bit, f64ToBf16Bit, f64ToF16Bit, halfPrecisionValues } from "../../formats/dense/float-bits.js";
import { isLmpackError } from "../../formats/errors.js";
import { fpxFormat } from "../../formats/fpx/format.js";
import { dequantizeFpx } from "../../formats/fpx/reference.js";
import type { FpxTensor } from "../../formats/fpx/types.js";
import { bytesOf, viewAs, type PackedArray } from "../../formats/packed-array.js";
import { unpackHfSpqr } from "../../formats/spqr/hf-layout.js";
import { dequantizeSpqr } from "../../formats/spqr/reference.js";
import { SPQR_DEFAULTS } from "../../formats/spqr/types.js";
import { unpackVptq, VPTQ_SUFFIXES, type VptqSuffix } from "../../formats/vptq/hf-layout.js";
import { dequantizeVptq, type VptqSemantics } from "../../formats/vptq/reference.js";
import type { VptqFloat, VptqParams, VptqTensor } from "../../formats/vptq/types.js";
import { assertBytes, goldenArray as get } from "../helpers/golden.js";
import { SHARED_DIR } from "../helpers/paths.js";
import { mulberry32, shuffle, type Rng } from "../helpers/prng.js";
import { readAllArrays } from "../helpers/safetensors-arrays.js";
import { loadOnnxRuntime } from "../runtimes/onnxruntime.js";
import { vptqParamsOf, type VptqCaseParams } from "../helpers/vptq-golden.js";
import { checkOnnxModels, type ModelToCheck } from "../helpers/onnx-checker.js";

/**
 * VPTQ, SpQR and FPx linears as standard-op ONNX models (converters/onnx/dequant-*.ts), run in
 * onnxruntime-node (CPU) on every golden layer of ../shared/vectors/{vptq,spqr,fp6}, the files
 * the golden tests use:
 * (a) the graph's weight output W equals lmpack's reference dequantization bit for bit
 *     (float32 bit patterns, −0 ≠ +0): VPTQ in both semantics, and the golden arrays too;
 * (b) Y = A·Wᵀ within float32 accumulation: |Y − Σₖ aₖwₖ| ≤ (K + 2)·u·Σₖ|aₖwₖ|, u = 2⁻²⁴, the
 *     exact sum taken in float64 over the same float32 values (a K-term dot product in float32,
 *     FMA or not, stays within γ_K·Σ|aₖwₖ| ≤ (K + 2)·u·Σ|aₖwₖ|).
 * Plus crafted VPTQ values whose c·s + b rounds to an fp16 midpoint in float32 (where a plain
 * float32 add and cast would round twice), bf16 codebooks, and refusals.
 */

const U = 2 ** -24;
const BATCH = 3;
const u8 = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
const F16_VALUES = halfPrecisionValues("F16");
const worst = new Map<string, number>();
const sizes: { format: string; name: string; stored: number; initializers: number }[] = [];
/** Every model the suites ran, for onnx.checker at the end. */
const checked: ModelToCheck[] = [];

interface Run {
  w: Float32Array;
  y: Float32Array;
  a: Float32Array;
}

/** Builds the layer's model, runs it on a seeded random A [3, in]; checks (b) and returns W. */
async function runLayer(layer: PackedLinear, name: string, seed: number): Promise<Run & { built: DequantLayer }> {
  const built = dequantLayer(layer, { tensorName: "layer", exposeWeight: true });
  const bytes = encodeModel(built.model);
  checked.push({ name: `${layer.format} ${name}`, bytes });
  const ort = loadOnnxRuntime();
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ["cpu"], logSeverityLevel: 3, intraOpNumThreads: 1 });
  const [K, N] = [built.inFeatures, built.outFeatures];
  const rng = mulberry32(seed);
  const a = Float32Array.from({ length: BATCH * K }, () => rng() * 2 - 1);
  const out = await session.run({ A: new ort.Tensor("float32", a, [BATCH, K]) });
  await session.release();
  assert.equal([out["Y"]?.dims, out[WEIGHT_OUTPUT]?.dims], [[BATCH, N], [N, K]], `${name}: output shapes`);
  const w = out[WEIGHT_OUTPUT]!.data as Float32Array;
  const y = out["Y"]!.data as Float32Array;
  for (let r = 0; r < BATCH; r++) {
    for (let n = 0; n < N; n++) {
      let [exact, magnitude] = [0, 0];
      for (let k = 0; k < K; k++) {
        const term = a[r * K + k]! * w[n * K + k]!;
        exact += term;
        magnitude += Math.abs(term);
      }
      if (!Number.isFinite(exact)) {
        // An infinite weight (the crafted overflow cases): float32 and float64 sums agree on ±∞ / NaN.
        assert.ok(Object.is(y[r * N + n], exact) || (Number.isNaN(y[r * N + n]) && Number.isNaN(exact)), `${name} row ${r} out ${n}: ${y[r * N + n]} vs ${exact}`);
        continue;
      }
      const error = Math.abs(y[r * N + n]! - exact);
      assert.ok(error <= (K + 2) * U * magnitude, `${name} seed ${seed} row ${r} out ${n}: |Δ| ${error} > ${(K + 2) * U * magnitude}`);
      if (magnitude > 0) worst.set(layer.format, Math.max(worst.get(layer.format) ?? 0, error / magnitude));
    }
  }
  return { w, y, a, built };
}

/** Float32 bit equality, naming the first differing element. */
function assertSameWeight(actual: Float32Array, expected: Uint8Array, what: string, columns: number): void {
  const got = u8(actual);
  const at = got.findIndex((b, i) => b !== expected[i]);
  const element = at >> 2;
  const detail = at < 0 ? "" : ` at [${Math.floor(element / columns)}, ${element % columns}]: got ${actual[element]}, expected ${new Float32Array(expected.slice(element * 4, element * 4 + 4).buffer)[0]}`;
  assert.is(got.length, expected.length, `${what}: byte length`);
  assert.ok(at < 0, `${what}: weight differs${detail}`);
}

const widenF16 = (bits: Uint16Array) => convertFloatBytes(u8(bits), "F16", "F32");
const initializerBytes = (built: DequantLayer, name: string) => built.model.graph?.initializer?.find((t) => t.name === `layer.${name}`)?.rawData;
const record = (format: string, name: string, built: DequantLayer) => sizes.push({ format, name, stored: built.storedBytes, initializers: built.initializerBytes });

// ---------------------------------------------------------------- VPTQ
const vptq = suite("onnx: VPTQ dequant subgraph in onnxruntime (CPU)");
const VPTQ_DIR = join(SHARED_DIR, "vectors", "vptq");
const vptqFiles = readdirSync(VPTQ_DIR).filter((f) => f.endsWith(".safetensors")).sort();

const GOLDEN_OF: Record<VptqSemantics, string> = { cuda: "deq_cuda", torch: "deq_torch" };
vptqFiles.forEach((file, i) => {
  for (const semantics of ["cuda", "torch"] as const) {
    vptq(`${file} (${semantics}): W is the reference dequant bit for bit; Y = A·Wᵀ`, async () => {
      const { arrays, metadata } = await readAllArrays(join(VPTQ_DIR, file));
      const c = JSON.parse(metadata["params"]!) as VptqCaseParams;
      const stored = new Map<VptqSuffix, PackedArray>();
      for (const suffix of VPTQ_SUFFIXES) if (arrays.has(suffix)) stored.set(suffix, get(arrays, suffix));
      const t = unpackVptq(stored, vptqParamsOf(c), c.out_features, c.in_features, file);
      const { w, built } = await runLayer({ format: "vptq", tensor: t, semantics }, file, 100 + i);
      const reference = widenF16(dequantizeVptq(t, semantics));
      assertSameWeight(w, reference, `${file} vs reference (${semantics})`, c.in_features);
      assertBytes(reference, convertFloatBytes(get(arrays, GOLDEN_OF[semantics]).bytes, "F16", "F32"), `reference vs golden ${GOLDEN_OF[semantics]}`);
      for (const [suffix, array] of stored) assertBytes(initializerBytes(built, suffix) ?? new Uint8Array(0), array.bytes, `initialiser ${suffix} is the stored array`);
      if (semantics === "cuda") record("vptq", file, built);
    });
  }
});

vptq("golden set found", () => assert.ok(vptqFiles.length >= 9, `found ${vptqFiles.length} files in ${VPTQ_DIR}`));

const isF16 = (v: number) => F16_VALUES[f64ToF16Bit(v)] === v;

/**
 * (c, s, b) with c·s an fp16 midpoint m = M·2^E (M odd, 12 bits, so m is exact in float32)
 * and b = ±2^(E−13−j) at most half a float32 ulp of m: float32's c·s + b rounds to m itself and
 * the cast alone would break the tie to even, while the one rounding goes to b's side. The first
 * three are the overflow midpoint 65520 = 1008·65 (below: 65504; above: ∞).
 */
function midpointTriples(rng: Rng, count: number): [number, number, number][] {
  const triples: [number, number, number][] = [[1008, 65, -(2 ** -12)], [1008, 65, 2 ** -12], [-1008, 65, 2 ** -12]];
  while (triples.length < count) {
    const E = -11 + Math.floor(rng() * 16);
    const M = 2049 + 2 * Math.floor(rng() * 1024);
    const factor = Array.from({ length: 1023 }, (_, i) => 2 * i + 3).find((f) => M % f === 0 && M / f <= 2047 && f <= 2047);
    if (factor === undefined) continue;
    const p = Math.floor(rng() * 9) - 4;
    const [c, s] = [factor * 2 ** p * (rng() < 0.5 ? -1 : 1), (M / factor) * 2 ** (E - p)];
    const tailExponent = E - 13 - Math.floor(rng() * 3);
    if (!isF16(c) || !isF16(s) || tailExponent < -24) continue;
    triples.push([c, s, 2 ** tailExponent * (rng() < 0.5 ? -1 : 1)]);
  }
  return triples;
}

/**
 * A one-group VPTQ layer (vector length 1, 2 rows) whose row 0 is W[0][j] = c_j·s_j + b_j for
 * the given triples; row 1 takes random centroids. Columns permuted at random.
 */
function tripleLayer(rng: Rng, triples: [number, number, number][]): VptqTensor {
  const n = triples.length;
  const k = 2 ** Math.ceil(Math.log2(n));
  const perm = shuffle(rng, Uint16Array.from({ length: n }, (_, i) => i));
  const centroids = new Uint16Array(k);
  triples.forEach(([c], j) => (centroids[j] = f64ToF16Bit(c)));
  const mainIndices = new Uint32Array(2 * n);
  for (let q = 0; q < n; q++) {
    mainIndices[q] = perm[q]!; // row 0 of Q column q, which is original column perm[q]
    mainIndices[n + q] = Math.floor(rng() * n);
  }
  const params: VptqParams = { vectorLen: 1, numCentroids: k, numResCentroids: 0, groupNum: 1, groupSize: n, outlierSize: 0, outlierVectorLen: 0, outlierNumCentroids: 0, enableNorm: true, enablePerm: true };
  return {
    params,
    outFeatures: 2,
    inFeatures: n,
    dtype: "F16",
    centroids,
    resCentroids: undefined,
    mainIndices,
    resIndices: undefined,
    outlierCentroids: undefined,
    outlierIndices: undefined,
    perm,
    weightScale: Uint16Array.from(triples, ([, s]) => f64ToF16Bit(s)),
    weightBias: Uint16Array.from(triples, ([, , b]) => f64ToF16Bit(b)),
  };
}

vptq("cuda rounding at fp16 midpoints (incl. 65520 → 65504 / ∞): one rounding where float32 add + cast would round twice", async () => {
  const rng = mulberry32(4242);
  const triples = midpointTriples(rng, 256);
  const t = tripleLayer(rng, triples);
  const { w } = await runLayer({ format: "vptq", tensor: t, semantics: "cuda" }, "midpoints", 77);
  const reference = dequantizeVptq(t, "cuda");
  assertSameWeight(w, widenF16(reference), "midpoint layer vs reference (cuda)", t.inFeatures);
  // How many of these a plain float32 add and cast would get wrong: about half.
  const f32 = new Float32Array(1);
  const twice = triples.filter(([c, s, b], j) => {
    f32[0] = c * s + b; // float32 rounding of the exact sum (f64 first is innocuous: 53 ≥ 2·24 + 1)
    return f32BitsToF16Bit(new Uint32Array(f32.buffer)[0]!) !== reference[j];
  }).length;
  assert.ok(twice >= triples.length / 4, `only ${twice} of ${triples.length} crafted sums round twice`);
  assert.is(w[0 * t.inFeatures + 0], 65504, "65520 − 2⁻¹² rounds once to 65504");
  assert.is(w[1], Infinity, "65520 + 2⁻¹² rounds to ∞");
  console.log(`  midpoint layer: ${twice} of ${triples.length} entries would differ with float32 add + cast (double rounding)`);
});

/** A random layer with every feature: residual, two groups, outliers, padding rows, perm, norm. */
function randomVptq(rng: Rng, dtype: VptqFloat): VptqTensor {
  const params: VptqParams = { vectorLen: 4, numCentroids: 16, numResCentroids: 4, groupNum: 2, groupSize: 8, outlierSize: 4, outlierVectorLen: 2, outlierNumCentroids: 8, enableNorm: true, enablePerm: true };
  const [out, inFeatures] = [10, 20];
  const round = dtype === "F16" ? f64ToF16Bit : f64ToBf16Bit;
  const floats = (n: number, spread: number) => Uint16Array.from({ length: n }, () => round((rng() * 2 - 1) * spread));
  const ints = (n: number, k: number) => Uint32Array.from({ length: n }, () => Math.floor(rng() * k));
  const perm = Uint16Array.from({ length: inFeatures }, (_, i) => i).sort(() => rng() - 0.5);
  return {
    params,
    outFeatures: out,
    inFeatures,
    dtype,
    centroids: floats(2 * 16 * 4, 1),
    resCentroids: floats(2 * 4 * 4, 0.1),
    mainIndices: ints(2 * 3 * 8, 16),
    resIndices: ints(2 * 3 * 8, 4),
    outlierCentroids: floats(8 * 2, 4),
    outlierIndices: Uint16Array.from(ints(5 * 4, 8)),
    perm,
    weightScale: floats(inFeatures, 0.05),
    weightBias: floats(inFeatures, 0.01),
  };
}

for (const dtype of ["F16", "BF16"] as const) {
  for (const semantics of ["cuda", "torch"] as const) {
    vptq(`random ${dtype} layer, residual + 2 groups + outliers + padding (${semantics}): W bit for bit`, async () => {
      const t = randomVptq(mulberry32(dtype === "F16" ? 11 : 12), dtype);
      const { w } = await runLayer({ format: "vptq", tensor: t, semantics }, `random ${dtype}`, 13);
      assertSameWeight(w, convertFloatBytes(u8(dequantizeVptq(t, semantics)), dtype, "F32"), `random ${dtype} (${semantics})`, t.inFeatures);
    });
  }
}

// ---------------------------------------------------------------- SpQR
const spqr = suite("onnx: SpQR dequant subgraph in onnxruntime (CPU)");
const SPQR_DIR = join(SHARED_DIR, "vectors", "spqr");
const spqrFiles = readdirSync(SPQR_DIR).filter((f) => f.endsWith(".safetensors")).sort();
const SPQR_STORED = { denseWeights: "dense_weights", rowOffsets: "row_offsets", colVals: "col_vals", inPerm: "in_perm" } as const;

spqrFiles.forEach((file, i) => {
  spqr(`${file}: W is the reference dequant bit for bit (−0 kept, PTCSR quirk); Y = A·Wᵀ`, async () => {
    const { arrays } = await readAllArrays(join(SPQR_DIR, file));
    const [m, n] = get(arrays, "W").shape as [number, number];
    const t = unpackHfSpqr({ denseWeights: get(arrays, "dense_weights"), rowOffsets: get(arrays, "row_offsets"), colVals: get(arrays, "col_vals"), inPerm: get(arrays, "in_perm") }, m, n);
    const { w, built } = await runLayer({ format: "spqr", tensor: t }, file, 200 + i);
    const reference = widenF16(dequantizeSpqr(t));
    assertSameWeight(w, reference, `${file} vs reference`, n);
    assertBytes(reference, get(arrays, "W_f32").bytes, "reference vs golden W_f32");
    // Without outliers there is nothing to scatter: row_offsets and col_vals are left out.
    const outliers = get(arrays, "col_vals").bytes.length > 0;
    for (const name of Object.values(SPQR_STORED)) {
      const used = outliers || (name !== "row_offsets" && name !== "col_vals");
      if (used) assertBytes(initializerBytes(built, name) ?? new Uint8Array(0), get(arrays, name).bytes, `initialiser ${name} is the stored array`);
      else assert.is(initializerBytes(built, name), undefined, `no ${name} initialiser without outliers`);
    }
    record("spqr", file, built);
  });
});

spqr("golden set found", () => assert.ok(spqrFiles.length >= 8, `found ${spqrFiles.length} files in ${SPQR_DIR}`));

// ---------------------------------------------------------------- FPx
const fpx = suite("onnx: FPx dequant subgraph in onnxruntime (CPU)");
const FPX_DIR = join(SHARED_DIR, "vectors", "fp6");
const fpxFiles = readdirSync(FPX_DIR).filter((f) => f.endsWith(".safetensors") && !f.startsWith("codec_")).sort();

fpxFiles.forEach((file, i) => {
  const scaled = file.startsWith("scaled_");
  fpx(`${file}${scaled ? "" : " (unit scales)"}: W is the reference dequant bit for bit; Y = A·Wᵀ`, async () => {
    const { arrays, metadata } = await readAllArrays(join(FPX_DIR, file));
    const p = JSON.parse(metadata["params"]!) as { ebits: number; mbits: number; shape: [number, number] };
    const [M, N] = p.shape;
    // pack_* files hold codes and layout only: scale 1 (fp16 0x3c00) makes W the decoded codes.
    const scales = scaled ? viewAs(get(arrays, "scale").bytes, Uint16Array) : new Uint16Array(M).fill(0x3c00);
    const t: FpxTensor = { format: fpxFormat(p.ebits, p.mbits), outFeatures: M, inFeatures: N, packed: get(arrays, "packed").bytes, scales };
    const { w, built } = await runLayer({ format: "fpx", tensor: t }, file, 300 + i);
    const reference = bytesOf(dequantizeFpx(t));
    assertSameWeight(w, reference, `${file} vs reference`, N);
    if (scaled) assertBytes(reference, get(arrays, "dequant").bytes, "reference vs golden dequant");
    assertBytes(initializerBytes(built, "packed") ?? new Uint8Array(0), get(arrays, "packed").bytes, "initialiser packed is the stored layout");
    record("fpx", file, built);
  });
});

fpx("golden set found", () => assert.ok(fpxFiles.length >= 8, `found ${fpxFiles.length} files in ${FPX_DIR}`));

// ---------------------------------------------------------------- refusals
const refuse = suite("onnx: dequant subgraph refusals");
function expectCode(run: () => unknown, name: string, code: string): void {
  try {
    run();
  } catch (error) {
    assert.ok(isLmpackError(error), `not an lmpack error: ${String(error)}`);
    assert.is(`${error.name}/${error.code}`, `${name}/${code}`, error.message);
    return;
  }
  assert.unreachable(`expected ${name} ${code}`);
}
refuse("FPx 64x48 (not a multiple of 64 columns): FormatError PACKED_SHAPE_MISMATCH", () => {
  const t: FpxTensor = { format: fpxFormat(3, 2), outFeatures: 64, inFeatures: 48, packed: new Uint8Array((64 * 48 * 6) / 8), scales: new Uint16Array(64) };
  expectCode(() => dequantLayer({ format: "fpx", tensor: t }), "FormatError", "PACKED_SHAPE_MISMATCH");
});
refuse("SpQR with 8-column groups (the HF layout holds 16x16 tiles): UsageError BAD_ARGUMENT", () => {
  const t = { params: { ...SPQR_DEFAULTS, beta2: 8 }, outFeatures: 16, inFeatures: 16 } as Parameters<typeof dequantizeSpqr>[0];
  expectCode(() => dequantLayer({ format: "spqr", tensor: t }), "UsageError", "BAD_ARGUMENT");
});

// ---------------------------------------------------------------- report
fpx.after(() => {
  console.log(`  worst |ΔY|/Σ|a·w|: ${[...worst].map(([f, e]) => `${f} ${e.toExponential(2)}`).join(", ")}`);
  console.log("  initialisers vs lmpack's stored arrays (bytes; the rest is constants and layout tables):");
  for (const s of sizes) console.log(`    ${s.format.padEnd(5)} ${s.name.padEnd(42)} stored ${String(s.stored).padStart(7)}  initialisers ${String(s.initializers).padStart(7)}  (+${s.initializers - s.stored})`);
});

// ---------------------------------------------------------------- onnx.checker
const checker = suite("onnx: dequant subgraph models pass onnx.checker (full check)");
checker("every model the suites above ran is valid ONNX (IR 8, opset 17)", async () => {
  assert.ok(checked.length >= 30, `${checked.length} models collected`);
  const outcome = await checkOnnxModels(checked);
  if (outcome.skipped !== undefined) console.log(`  note: onnx.checker not run: ${outcome.skipped}`);
  else console.log(`  onnx.checker (full check) accepted ${outcome.checked - outcome.failures.length} of ${outcome.checked} models`);
  assert.equal(outcome.failures, [], outcome.failures.join("\n"));
});

vptq.run();
spqr.run();
fpx.run();
refuse.run();
checker.run();
