import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { encodeMatMulNBitsLayer, matMulNBitsLayerModel, writeMatMulNBitsLayer } from "../../converters/onnx/export-layer.js";
import { importMatMulNBits, readMatMulNBitsModel } from "../../converters/onnx/import.js";
import { toMatMulNBits } from "../../converters/onnx/matmul-nbits.js";
import { decodeModel, encodeModel, initializer, int64, intAttribute, modelProto, MS_DOMAIN, tensorValueInfo, type ModelInit } from "../../converters/onnx/model.js";
import { f64ToBf16Bit, f64ToF16Bit, halfPrecisionValues } from "../../formats/dense/float-bits.js";
import { isLmpackError } from "../../formats/errors.js";
import { dequantize } from "../../formats/int-group/reference.js";
import { groupCount, groupOf, symmetricZero, type IntBits, type IntGroupTensor, type ScaleDType } from "../../formats/int-group/types.js";
import { mulberry32, shuffle, type Rng } from "../helpers/prng.js";
import { tempDir } from "../helpers/paths.js";
import { checkOnnxModels, type ModelToCheck } from "../helpers/onnx-checker.js";
import { loadOnnxRuntime, type OrtSession } from "../runtimes/onnxruntime.js";

/**
 * Integer groups → com.microsoft.MatMulNBits and back (converters/onnx): exact round trips, the
 * byte layout on hand-made values, refusals, hostile models, and the acceptance check: the
 * exported one-node models run in onnxruntime-node (CPU, accuracy_level absent = 0) and give
 * x·dequant(W)ᵀ within fp32 rounding.
 */

const [F16_VALUES, BF16_VALUES] = [halfPrecisionValues("F16"), halfPrecisionValues("BF16")];

interface Shape { bits: IntBits; groupSize: number; sym: boolean; K: number; N: number; scaleDtype?: ScaleDType }

/** Random codes, signed scales (auto-round's sym scales are signed) and zeros 0 … 2^bits − 1. */
function randomTensor(rng: Rng, { bits, groupSize, sym, K, N, scaleDtype = "F32" }: Shape): IntGroupTensor {
  const levels = 1 << bits;
  const groups = groupCount(K, groupSize);
  const scales = Float32Array.from({ length: groups * N }, () => {
    const s = (rng() * 2 - 1) * 0.05;
    return scaleDtype === "F16" ? F16_VALUES[f64ToF16Bit(s)]! : scaleDtype === "BF16" ? BF16_VALUES[f64ToBf16Bit(s)]! : Math.fround(s);
  });
  return {
    params: { bits, groupSize, sym, scaleDtype },
    outFeatures: N,
    inFeatures: K,
    codes: Uint8Array.from({ length: N * K }, () => Math.floor(rng() * levels)),
    scales,
    zeros: Uint16Array.from({ length: groups * N }, () => (sym ? symmetricZero(bits) : Math.floor(rng() * levels))),
    gIdx: undefined,
  };
}

/**
 * `t` as an act-order layer: a seeded random column permutation P, g_idx[P[j]] = ⌊j / group⌋,
 * GPTQ's desc_act form (every group keeps group-size columns).
 */
function withActOrder(t: IntGroupTensor, rng: Rng): IntGroupTensor {
  const K = t.inFeatures;
  const perm = shuffle(rng, Int32Array.from({ length: K }, (_, k) => k));
  const gIdx = new Int32Array(K);
  for (let j = 0; j < K; j++) gIdx[perm[j]!] = Math.floor(j / t.params.groupSize);
  return { ...t, gIdx };
}

const sameBits = (a: Float32Array, b: Float32Array) => a.length === b.length && new Uint32Array(a.buffer, a.byteOffset, a.length).every((v, i) => v === new Uint32Array(b.buffer, b.byteOffset, b.length)[i]);

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

const GRID = [2, 3, 4, 8].flatMap((bits) => [true, false].flatMap((sym) => [32, 64, 128].map((groupSize) => ({ bits: bits as IntBits, sym, groupSize }))));

// ---------------------------------------------------------------- exact round trips and layout
const roundTrip = suite("onnx: MatMulNBits round trip");
GRID.forEach(({ bits, sym, groupSize }, i) => {
  for (const K of [256, 96]) {
    const scaleDtype = (["F32", "F16", "BF16"] as const)[i % 3]!;
    roundTrip(`${bits}-bit ${sym ? "sym" : "asym"} g${groupSize} K=${K} ${scaleDtype} scales: encode → bytes → decode is exact`, () => {
      const seed = 1000 + i * 2 + K;
      const t = randomTensor(mulberry32(seed), { bits, groupSize, sym, K, N: 24, scaleDtype });
      const [back] = importMatMulNBits(encodeMatMulNBitsLayer(t, { tensorName: "layers.0.mlp.up_proj" }), "mem.onnx");
      assert.is(back?.name, "layers.0.mlp.up_proj");
      const u = back!.tensor;
      assert.equal(u.params, t.params, `seed ${seed}`);
      assert.equal([u.outFeatures, u.inFeatures, u.gIdx], [t.outFeatures, t.inFeatures, undefined]);
      assert.ok(u.codes.every((c, j) => c === t.codes[j]) && u.codes.length === t.codes.length, `codes differ (seed ${seed})`);
      assert.ok(sameBits(u.scales, t.scales), `scales differ (seed ${seed})`);
      assert.equal([...u.zeros], [...t.zeros], `zeros differ (seed ${seed})`);
    });
  }
});

for (const bits of [3, 4] as const) {
  roundTrip(`${bits}-bit act-order g32 K=96: columns regrouped behind a Gather; import gives back the same g_idx, codes, scales, zeros`, () => {
    const t = withActOrder(randomTensor(mulberry32(40 + bits), { bits, groupSize: 32, sym: bits === 3, K: 96, N: 16 }), mulberry32(50 + bits));
    const bytes = encodeMatMulNBitsLayer(t, { tensorName: "q" });
    const nodes = decodeModel(bytes).graph?.node ?? [];
    assert.equal(nodes.map((n) => n.opType), ["Gather", "MatMulNBits"]);
    const u = importMatMulNBits(bytes)[0]!.tensor;
    assert.equal(u.params, t.params);
    assert.equal([...u.gIdx!], [...t.gIdx!]);
    assert.ok(u.codes.every((c, j) => c === t.codes[j]), "codes differ");
    assert.ok(sameBits(u.scales, t.scales) && u.zeros.every((z, j) => z === t.zeros[j]), "scales or zeros differ");
  });
}

roundTrip("3-bit codes travel in 4-bit fields: bits=4 on the node, zero points explicit (3-bit sym zero 4 ≠ 4-bit default 8), lmpack.bits = 3", () => {
  const t = randomTensor(mulberry32(9), { bits: 3, groupSize: 32, sym: true, K: 64, N: 4 });
  const node = decodeModel(encodeMatMulNBitsLayer(t)).graph!.node![0]!;
  assert.is(node.attribute?.find((a) => a.name === "bits")?.i?.toString(), "4");
  assert.is(node.input?.length, 4);
  assert.is(node.metadataProps?.find((m) => m.key === "lmpack.bits")?.value, "3");
});

roundTrip("asym layer whose zeros are all 2^(bits−1): zero_points omitted, sym=false kept", () => {
  const t = { ...randomTensor(mulberry32(7), { bits: 4, groupSize: 32, sym: true, K: 64, N: 4 }), params: { bits: 4 as const, groupSize: 32, sym: false, scaleDtype: "F32" as const } };
  const model = decodeModel(encodeMatMulNBitsLayer(t));
  assert.is(model.graph?.node?.[0]?.input?.length, 3);
  assert.is(importMatMulNBits(encodeModel(model))[0]?.tensor.params.sym, false);
});

const layout = suite("onnx: MatMulNBits byte layout");
/** A 1-row tensor with given codes and per-block zeros (F32 scales 1). */
const oneRow = (bits: IntBits, groupSize: number, codes: number[], zeros: number[]): IntGroupTensor => ({
  params: { bits, groupSize, sym: false, scaleDtype: "F32" },
  outFeatures: 1,
  inFeatures: codes.length,
  codes: Uint8Array.from(codes),
  scales: new Float32Array(zeros.length).fill(1),
  zeros: Uint16Array.from(zeros),
  gIdx: undefined,
});
const ramp = (n: number, mod: number) => Array.from({ length: n }, (_, i) => i % mod);

layout("codes pack LSB-first: 4-bit 0,1,2,3 → 0x10 0x32; 2-bit 0,1,2,3 → 0xe4; 8-bit as is", () => {
  assert.equal([...toMatMulNBits(oneRow(4, 16, ramp(16, 16), [8]), "t").b.subarray(0, 2)], [0x10, 0x32]);
  assert.equal([...toMatMulNBits(oneRow(2, 16, ramp(16, 4), [1]), "t").b.subarray(0, 1)], [0xe4]);
  assert.equal([...toMatMulNBits(oneRow(8, 16, ramp(16, 256), [1]), "t").b], ramp(16, 256));
});

layout("zero points pack along k_blocks per row, the last byte padded with 0: 4-bit zeros 1,2,3 → 0x21 0x03", () => {
  const w = toMatMulNBits(oneRow(4, 16, ramp(48, 16), [1, 2, 3]), "t");
  assert.equal([...(w.zeroPoints ?? [])], [0x21, 0x03]);
});

layout("K = 96, block 64: B is [N, 2, 32] and the padded half-block holds the block's zero point", () => {
  const w = toMatMulNBits(oneRow(4, 64, ramp(96, 16), [3, 5]), "t");
  assert.is(w.b.length, 2 * 32);
  assert.ok(w.b.subarray(32 + 16).every((byte) => byte === 0x55), "padding is zp 5 in both nibbles");
  assert.equal([...w.scales], [1, 1]);
});

// ---------------------------------------------------------------- refusals
const refuse = suite("onnx: MatMulNBits export refusals");
const base = (change: Partial<IntGroupTensor["params"]>, extra: Partial<IntGroupTensor> = {}): IntGroupTensor => {
  const t = randomTensor(mulberry32(3), { bits: 4, groupSize: 32, sym: false, K: 64, N: 4, ...change } as Shape);
  return { ...t, ...extra };
};
for (const groupSize of [8, 48]) refuse(`group ${groupSize}: UNSUPPORTED_TARGET (block_size must be a power of two ≥ 16)`, () => expectCode(() => matMulNBitsLayerModel(base({ groupSize })), "ConversionError", "UNSUPPORTED_TARGET"));
refuse("g_idx whose groups are not group-size columns each: NOT_REPRESENTABLE; a trivial g_idx is accepted and omitted", () => {
  const trivial = Int32Array.from({ length: 64 }, (_, k) => Math.floor(k / 32));
  expectCode(() => matMulNBitsLayerModel(base({}, { gIdx: trivial.map((g, k) => (k === 0 ? 1 : g)) })), "ConversionError", "NOT_REPRESENTABLE");
  expectCode(() => matMulNBitsLayerModel(base({}, { gIdx: trivial.map((g, k) => (k === 0 ? 7 : g)) })), "FormatError", "PACKED_VALUE_INVALID");
  const nodes = decodeModel(encodeMatMulNBitsLayer(base({}, { gIdx: trivial }))).graph?.node ?? [];
  assert.equal([nodes.length, nodes[0]?.input?.length], [1, 4]);
});
refuse("effective zero 2^bits (overflowed GPTQ v1): NOT_REPRESENTABLE", () => expectCode(() => matMulNBitsLayerModel(base({}, { zeros: new Uint16Array(8).fill(16) })), "ConversionError", "NOT_REPRESENTABLE"));
refuse("code wider than bits: PACKED_VALUE_INVALID", () => expectCode(() => matMulNBitsLayerModel(base({}, { codes: new Uint8Array(256).fill(16) })), "FormatError", "PACKED_VALUE_INVALID"));

// ---------------------------------------------------------------- hostile models
const hostile = suite("onnx: MatMulNBits import of malformed models");
const good = () => matMulNBitsLayerModel(randomTensor(mulberry32(11), { bits: 4, groupSize: 32, sym: false, K: 64, N: 4 }), { tensorName: "w" });
const graphOf = (m: ModelInit) => m.graph!;
const cases: [string, (m: ModelInit) => void, string][] = [
  ["no MatMulNBits node", (m) => void (graphOf(m).node = []), "LAYOUT_UNKNOWN"],
  ["B is not an initializer", (m) => void (graphOf(m).initializer = graphOf(m).initializer!.filter((t) => t.name !== "w.B")), "TENSOR_MISSING"],
  ["two initializers named w.B", (m) => void graphOf(m).initializer!.push(graphOf(m).initializer![0]!), "TENSOR_DUPLICATE"],
  ["B dims wrong", (m) => void (graphOf(m).initializer![0]!.dims = [4, 1, 32]), "PACKED_SHAPE_MISMATCH"],
  ["B raw_data shorter than its dims", (m) => void (graphOf(m).initializer![0]!.rawData = new Uint8Array(10)), "SHAPE_SIZE_MISMATCH"],
  ["bits attribute 3", (m) => void (graphOf(m).node![0]!.attribute![2] = intAttribute("bits", 3)), "QUANT_CONFIG_INVALID"],
  ["block_size attribute missing", (m) => void graphOf(m).node![0]!.attribute!.pop(), "QUANT_CONFIG_INVALID"],
  ["g_idx input", (m) => void graphOf(m).node![0]!.input!.push("w.g_idx"), "LAYOUT_UNKNOWN"],
  ["recorded F16 scales that are not fp16 values", (m) => void (graphOf(m).node![0]!.metadataProps![0]!.value = "F16"), "PACKED_VALUE_INVALID"],
];
for (const [name, mutate, code] of cases) {
  hostile(`${name}: FormatError ${code}`, () => {
    const m = good();
    mutate(m);
    expectCode(() => importMatMulNBits(encodeModel(m), "bad.onnx"), "FormatError", code);
  });
}
hostile("fuzz: truncated and bit-flipped models throw lmpack errors or import, nothing else", () => {
  const bytes = encodeModel(good());
  const rng = mulberry32(99);
  for (let i = 0; i < 400; i++) {
    const mutated = i % 2 === 0 ? bytes.subarray(0, Math.floor(rng() * bytes.length)) : bytes.slice();
    if (i % 2 === 1) for (let f = 0; f < 4; f++) mutated[Math.floor(rng() * mutated.length)]! ^= 1 << Math.floor(rng() * 8);
    try {
      importMatMulNBits(mutated, "fuzz.onnx");
    } catch (error) {
      assert.ok(isLmpackError(error), `iteration ${i}: ${String(error)}`);
    }
  }
});

// ---------------------------------------------------------------- onnxruntime (the acceptance)
const ort = suite("onnx: MatMulNBits in onnxruntime-node (CPU)");
const U = 2 ** -24;
const worst = new Map<number, number>();
const createSession = (model: string | Uint8Array, logSeverityLevel: 3 | 4 = 3): Promise<OrtSession> => loadOnnxRuntime().InferenceSession.create(model, { executionProviders: ["cpu"], logSeverityLevel, intraOpNumThreads: 1 });

/**
 * Tolerance. onnxruntime dequantizes in fp32 (as (q − zp)·s, or q·s + (−zp·s) on its fallback
 * path: at most two roundings of terms bounded by |s|·q and |s|·zp) and accumulates K fp32
 * products. First-order rounding analysis bounds the difference from the exact float64 dot
 * product of the same float32 inputs by (K + 4)·u·Σₖ |xₖ|·|sₖ|·(qₖ + zpₖ), u = 2⁻²⁴. We assert
 * that bound per output and report the observed error relative to Σₖ |xₖ·wₖ|.
 */
const ORT_CASES = [
  ...GRID.map((c) => ({ ...c, K: 256, actOrder: false })),
  ...[2, 3, 4, 8].flatMap((bits) => [32, 64].map((groupSize) => ({ bits: bits as IntBits, sym: false, groupSize, K: 96, actOrder: false }))),
  ...[3, 4].flatMap((bits) => [true, false].map((sym) => ({ bits: bits as IntBits, sym, groupSize: 32, K: 96, actOrder: true }))),
];
/** Every model run in onnxruntime below, for onnx.checker at the end. */
const ranModels: ModelToCheck[] = [];
ORT_CASES.forEach(({ bits, sym, groupSize, K, actOrder }, i) => {
  ort(`${bits}-bit ${sym ? "sym" : "asym"} g${groupSize} K=${K}${actOrder ? " act-order" : ""} N=48 batch 3: Y = x·dequant(W)ᵀ within fp32 rounding`, async () => {
    const [N, batch, seed] = [48, 3, 5000 + i];
    const rng = mulberry32(seed);
    const plain = randomTensor(rng, { bits, groupSize, sym, K, N });
    const t = actOrder ? withActOrder(plain, rng) : plain;
    const x = Float32Array.from({ length: batch * K }, () => rng() * 2 - 1);
    const bytes = encodeMatMulNBitsLayer(t);
    ranModels.push({ name: `${bits}-bit ${sym ? "sym" : "asym"} g${groupSize} K=${K}${actOrder ? " act-order" : ""}`, bytes });
    const session = await createSession(bytes);
    const { Tensor } = loadOnnxRuntime();
    const out = await session.run({ A: new Tensor("float32", x, [batch, K]) });
    await session.release();
    assert.equal(out["Y"]?.dims, [batch, N]);
    const y = out["Y"]!.data as Float32Array;
    const w = dequantize(t, { precision: "f32" });
    for (let r = 0; r < batch; r++) {
      for (let n = 0; n < N; n++) {
        let [exact, sumXW, sumBound] = [0, 0, 0];
        for (let k = 0; k < K; k++) {
          const g = groupOf(t, k) * N + n;
          const xk = x[r * K + k]!;
          exact += xk * w[n * K + k]!;
          sumXW += Math.abs(xk * w[n * K + k]!);
          sumBound += Math.abs(xk * t.scales[g]!) * (t.codes[n * K + k]! + t.zeros[g]!);
        }
        const error = Math.abs(y[r * N + n]! - exact);
        assert.ok(error <= (K + 4) * U * sumBound, `seed ${seed} row ${r} out ${n}: |Δ| ${error} > bound ${(K + 4) * U * sumBound}`);
        if (sumXW > 0) worst.set(bits, Math.max(worst.get(bits) ?? 0, error / sumXW));
      }
    }
  });
});
ort.after(() => console.log(`  worst |Δ|/Σ|x·w| by bits: ${[...worst].map(([b, e]) => `${b}-bit ${e.toExponential(2)}`).join(", ")}`));

ort("onnxruntime refuses bits=3 when the session is created (why 3-bit codes travel in 4-bit fields)", async () => {
  const [K, N, block] = [64, 4, 32];
  const model = modelProto({
    name: "three",
    node: [{ name: "w", opType: "MatMulNBits", domain: MS_DOMAIN, input: ["A", "B", "s"], output: ["Y"], attribute: [intAttribute("K", K), intAttribute("N", N), intAttribute("bits", 3), intAttribute("block_size", block)] }],
    initializer: [initializer("B", "U8", [N, 2, 12], new Uint8Array(N * 24)), initializer("s", "F32", [N, 2], new Uint8Array(N * 8))],
    input: [tensorValueInfo("A", "F32", ["batch", K])],
    output: [tensorValueInfo("Y", "F32", ["batch", N])],
  });
  // Severity 4 (fatal only): onnxruntime logs the refusal as an error before throwing it.
  const refusal = await createSession(encodeModel(model), 4).then(() => "accepted", (error: Error) => error.message);
  assert.match(refusal, /Only 2b, 4b and 8b quantization is supported/);
});

ort("the models are valid ONNX: IR 8, opsets ai.onnx 17 + com.microsoft 1, typed named I/O; onnx.checker (full check) accepts every model run above", async () => {
  const dir = await tempDir();
  try {
    const path = join(dir.path, "layer.onnx");
    await writeMatMulNBitsLayer(path, randomTensor(mulberry32(1), { bits: 4, groupSize: 32, sym: false, K: 96, N: 8 }), { tensorName: "w" });
    assert.is((await readMatMulNBitsModel(path)).length, 1);
    const m = decodeModel(await readFile(path));
    assert.is(int64(m.irVersion), 8);
    assert.equal(m.opsetImport.map((o) => [o.domain, int64(o.version)]), [["", 17], [MS_DOMAIN, 1]]);
    const io = [...(m.graph?.input ?? []), ...(m.graph?.output ?? [])].map((v) => [v.name, v.type?.tensorType?.elemType, v.type?.tensorType?.shape?.dim?.map((d) => d.value === "dimParam" ? d.dimParam : int64(d.dimValue))]);
    assert.equal(io, [["A", 1, ["batch", 96]], ["Y", 1, ["batch", 8]]]);
    const session = await createSession(path);
    assert.equal([session.inputNames, session.outputNames], [["A"], ["Y"]]);
    await session.release();
    ranModels.push({ name: "layer.onnx written by writeMatMulNBitsLayer", path });
    const outcome = await checkOnnxModels(ranModels);
    if (outcome.skipped !== undefined) console.log(`  note: onnx.checker not run: ${outcome.skipped}`);
    else {
      console.log(`  onnx.checker (full check) accepted ${outcome.checked - outcome.failures.length} of ${outcome.checked} models`);
      assert.is(outcome.checked, ORT_CASES.length + 1);
    }
    assert.equal(outcome.failures, [], outcome.failures.join("\n"));
  } finally {
    await dir.cleanup();
  }
});

roundTrip.run();
layout.run();
refuse.run();
hostile.run();
ort.run();
