#!/usr/bin/env node
/**
 * One 7B-shaped linear (default 4096 out × 4096 in) exported to ONNX in each packed format and
 * run by onnxruntime-node (CPU EP): fp32 and fp16 weights, MatMulNBits (4-bit g128, 2-bit g64,
 * asym), and the standard-op dequantization subgraphs of VPTQ (v8 k4096 + residual k256; v4
 * k256), SpQR (3-bit 16×16, ~1 % outliers) and FP6 e3m2, all from seeded random data. For each
 * model: its bytes and bits per weight, the session creation time and the median `session.run`
 * latency for batch 1 and 128, once with onnxruntime's default optimizations (which fold the
 * dequant subgraph into a float32 initializer at load, every input being an initializer) and
 * once with `graphOptimizationLevel: "disabled"` (the subgraph then runs on every call: the cost
 * of dequantizing per call). Also the ops left after optimization (a separate session writes
 * the optimized model) and Y for batch 1 against x·Wᵀ computed here, W being the format's
 * reference dequantization.
 *
 * Why: the issue asks to "measure their runtime against MatMulNBits and fp16": whether a
 * VPTQ / SpQR / FP6 export costs anything at inference beyond the load, and what it costs when
 * the dequantization is not folded.
 *
 *   npm run runtimes     # once: onnxruntime-node into .runtimes/ (test/runtimes/install.mjs)
 *   node dist/bench/onnx-layer-runtime.js [--out 4096] [--in 4096] [--threads 2] [--only fp32,vptq]
 *                                         [--warmup 2] [--min-runs 10] [--min-seconds 3] [--seed 1]
 *
 * --only keeps the rows whose name contains one of the words (case-insensitive). A latency is
 * the median of at least --min-runs calls and at least --min-seconds of calls, after --warmup
 * calls. The table goes to stdout, progress to stderr. On a shared 2-core VM, medians moved by 2–3×
 * between runs when other jobs were busy: compare rows of one run, on an idle machine.
 */
import { readFileSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { dequantLayer } from "../converters/onnx/dequant-layer.js";
import { encodeMatMulNBitsLayer } from "../converters/onnx/export-layer.js";
import { decodeModel, encodeModel, initializer, intAttribute, modelProto, onnxDataType, tensorValueInfo, type NodeInit, type TensorInit } from "../converters/onnx/model.js";
import { convertFloatBytes } from "../formats/dense/convert.js";
import { f64ToF16Bit, halfPrecisionValues } from "../formats/dense/float-bits.js";
import { fpxFormat } from "../formats/fpx/format.js";
import { quantizeFpx } from "../formats/fpx/quantize.js";
import { dequantizeFpx } from "../formats/fpx/reference.js";
import { dequantize } from "../formats/int-group/reference.js";
import { groupCount, type IntBits, type IntGroupTensor } from "../formats/int-group/types.js";
import { dequantizeSpqr } from "../formats/spqr/reference.js";
import { SPQR_DEFAULTS, type SpqrTensor } from "../formats/spqr/types.js";
import { dequantizeVptq } from "../formats/vptq/reference.js";
import { vectorRows, type VptqTensor } from "../formats/vptq/types.js";
import { REPO_ROOT } from "../test/helpers/paths.js";
import { mulberry32, shuffle, type Rng } from "../test/helpers/prng.js";
import { loadOnnxRuntime, type OrtSession, type OrtSessionOptions, type OrtTensor } from "../test/runtimes/onnxruntime.js";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}
const N = Number(arg("out", "4096"));
const K = Number(arg("in", "4096"));
const threads = Number(arg("threads", "2"));
const only = arg("only", "").split(",").filter((s) => s !== "");
const warmupRuns = Number(arg("warmup", "2"));
const minRuns = Number(arg("min-runs", "10"));
const minSeconds = Number(arg("min-seconds", "3"));
const seed = Number(arg("seed", "1"));
const BATCHES = [1, 128] as const;
/** Largest |Y − x·Wᵀ| / max |Y| accepted for batch 1 (fp16 outputs: their own rounding, 2⁻¹¹, dominates). */
const BOUND = 1e-4;
const BOUND_F16_OUTPUT = 1e-2;

type SessionOptions = OrtSessionOptions & { graphOptimizationLevel?: "disabled" | "basic" | "extended" | "all"; optimizedModelFilePath?: string };
type TensorCtor = new (type: string, data: Float32Array | Uint16Array, dims: readonly number[]) => OrtTensor;
const ort = loadOnnxRuntime();
const Tensor = ort.Tensor as unknown as TensorCtor;
const F16_VALUES = halfPrecisionValues("F16");
const u8 = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
const widenF16 = (bits: Uint16Array) => { const b = convertFloatBytes(u8(bits), "F16", "F32"); return new Float32Array(b.buffer, b.byteOffset, b.length / 4); };
const f16 = (x: number) => f64ToF16Bit(x);
const uniform = (rng: Rng, n: number, spread: number) => Float32Array.from({ length: n }, () => (rng() * 2 - 1) * spread);
const ints = (rng: Rng, n: number, k: number) => Uint32Array.from({ length: n }, () => Math.floor(rng() * k));
const halves = (rng: Rng, n: number, lo: number, hi: number) => Uint16Array.from({ length: n }, () => f16(lo + rng() * (hi - lo)));
const permutation = (rng: Rng, n: number) => shuffle(rng, Uint16Array.from({ length: n }, (_, i) => i));

/** A model to measure: its bytes, its weight W [N, K] as float32 (the reference) and its element type. */
interface Built { bytes: Uint8Array; weight: Float32Array; io: "float32" | "float16"; note?: string }

/** Y = MatMul(A, B), B [K, N] an initializer of `dtype` (cast to float32 first with `cast`). */
function denseModel(weight: Float32Array, dtype: "F32" | "F16", io: "F32" | "F16", cast: boolean): Uint8Array {
  const transposed = new Float32Array(K * N);
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) transposed[k * N + n] = weight[n * K + k]!;
  const data = dtype === "F32" ? u8(transposed) : u8(Uint16Array.from(transposed, f16));
  const nodes: NodeInit[] = cast ? [{ name: "linear/Cast", opType: "Cast", input: ["linear.B"], output: ["linear/B_f32"], attribute: [intAttribute("to", onnxDataType("F32"))] }] : [];
  nodes.push({ name: "linear", opType: "MatMul", input: ["A", cast ? "linear/B_f32" : "linear.B"], output: ["Y"] });
  const inits: TensorInit[] = [initializer("linear.B", dtype, [K, N], data)];
  return encodeModel(modelProto({ name: "linear", node: nodes, initializer: inits, input: [tensorValueInfo("A", io, ["batch", K])], output: [tensorValueInfo("Y", io, ["batch", N])] }, `dense ${dtype} linear (bench)`));
}

function randomIntGroup(rng: Rng, bits: IntBits, groupSize: number): IntGroupTensor {
  const groups = groupCount(K, groupSize) * N;
  const levels = 1 << bits;
  return {
    params: { bits, groupSize, sym: false, scaleDtype: "F16" },
    outFeatures: N, inFeatures: K,
    codes: Uint8Array.from({ length: N * K }, () => Math.floor(rng() * levels)),
    scales: Float32Array.from({ length: groups }, () => F16_VALUES[f16(0.002 + rng() * 0.01)]!),
    zeros: Uint16Array.from({ length: groups }, () => Math.floor(rng() * levels)),
    gIdx: undefined,
  };
}

/** A one-group VPTQ layer with perm and norm (as the VPTQ-community models), random codebooks and indices. */
function randomVptq(rng: Rng, vectorLen: number, numCentroids: number, numResCentroids: number): VptqTensor {
  const rows = vectorRows(N, vectorLen) * K;
  return {
    params: { vectorLen, numCentroids, numResCentroids, groupNum: 1, groupSize: K, outlierSize: 0, outlierVectorLen: 0, outlierNumCentroids: 0, enableNorm: true, enablePerm: true },
    outFeatures: N, inFeatures: K, dtype: "F16",
    centroids: halves(rng, numCentroids * vectorLen, -1, 1),
    resCentroids: numResCentroids > 0 ? halves(rng, numResCentroids * vectorLen, -0.1, 0.1) : undefined,
    mainIndices: ints(rng, rows, numCentroids),
    resIndices: numResCentroids > 0 ? ints(rng, rows, numResCentroids) : undefined,
    outlierCentroids: undefined, outlierIndices: undefined,
    perm: permutation(rng, K),
    weightScale: halves(rng, K, 0.005, 0.02),
    weightBias: halves(rng, K, -0.001, 0.001),
  };
}

/** A random SpQR layer (3-bit, 16×16), each weight an outlier with probability `outlierShare`. */
function randomSpqr(rng: Rng, outlierShare: number): SpqrTensor {
  const G = K / SPQR_DEFAULTS.beta2;
  const stats = (G * N) / SPQR_DEFAULTS.beta1;
  const rowOffsets = new Int32Array(N + 1);
  const cols: number[] = [];
  for (let r = 0; r < N; r++) {
    for (let c = 0; c < K; c++) if (rng() < outlierShare) cols.push(c);
    rowOffsets[r + 1] = cols.length;
  }
  return {
    params: SPQR_DEFAULTS, outFeatures: N, inFeatures: K,
    perm: permutation(rng, K),
    codes: Uint8Array.from({ length: N * K }, () => Math.floor(rng() * 8)),
    scaleCodes: Uint8Array.from({ length: G * N }, () => Math.floor(rng() * 8)),
    zeroCodes: Uint8Array.from({ length: G * N }, () => Math.floor(rng() * 8)),
    scaleScale: halves(rng, stats, 0.0005, 0.002), scaleZero: halves(rng, stats, -1.5, -0.5),
    zeroScale: halves(rng, stats, 0.8, 1.2), zeroZero: halves(rng, stats, 0, 0.5),
    outliers: { rowOffsets, cols: Uint16Array.from(cols), values: halves(rng, cols.length, -0.1, 0.1) },
    outlierStorage: "csr",
  };
}

const VARIANTS: Record<string, (rng: Rng) => Built> = {
  fp32: (rng) => { const w = uniform(rng, N * K, 0.05); return { bytes: denseModel(w, "F32", "F32", false), weight: w, io: "float32" }; },
  "fp16 weights (Cast → fp32 MatMul)": (rng) => { const w = widenF16(Uint16Array.from(uniform(rng, N * K, 0.05), f16)); return { bytes: denseModel(w, "F16", "F32", true), weight: w, io: "float32" }; },
  "fp16 MatMul (fp16 in/out)": (rng) => { const w = widenF16(Uint16Array.from(uniform(rng, N * K, 0.05), f16)); return { bytes: denseModel(w, "F16", "F16", false), weight: w, io: "float16" }; },
  "MatMulNBits 4-bit g128 asym": (rng) => { const t = randomIntGroup(rng, 4, 128); return { bytes: encodeMatMulNBitsLayer(t), weight: dequantize(t, { precision: "f32" }), io: "float32" }; },
  "MatMulNBits 2-bit g64 asym": (rng) => { const t = randomIntGroup(rng, 2, 64); return { bytes: encodeMatMulNBitsLayer(t), weight: dequantize(t, { precision: "f32" }), io: "float32" }; },
  "VPTQ v8 k4096 + res k256": (rng) => packed({ format: "vptq", tensor: randomVptq(rng, 8, 4096, 256) }),
  "VPTQ v4 k256": (rng) => packed({ format: "vptq", tensor: randomVptq(rng, 4, 256, 0) }),
  "SpQR 3-bit 16×16, 1 % outliers": (rng) => packed({ format: "spqr", tensor: randomSpqr(rng, 0.01) }),
  "FP6 e3m2": (rng) => { const t = quantizeFpx(uniform(rng, N * K, 0.05), N, K, { format: fpxFormat(3, 2), codesFrom: "stored-scale" }); return packed({ format: "fpx", tensor: t }); },
};

function packed(layer: Parameters<typeof dequantLayer>[0]): Built {
  const built = dequantLayer(layer);
  const weight = layer.format === "vptq" ? widenF16(dequantizeVptq(layer.tensor, "cuda")) : layer.format === "spqr" ? widenF16(dequantizeSpqr(layer.tensor)) : dequantizeFpx(layer.tensor);
  return { bytes: encodeModel(built.model), weight, io: "float32", note: `stored arrays ${(8 * built.storedBytes / (N * K)).toFixed(3)} bits/weight` };
}

/** Batch rows of x as the model's input tensor (fp16 inputs: x rounded to fp16, which the reference then uses too). */
function inputOf(x: Float32Array, batch: number, io: Built["io"]): OrtTensor {
  const rows = x.subarray(0, batch * K);
  return io === "float32" ? new Tensor("float32", rows, [batch, K]) : new Tensor("float16", Uint16Array.from(rows, f16), [batch, K]);
}

/** max |Y − x·Wᵀ| / max |Y| for batch 1, the reference summed in float64. */
function relativeError(y: Float32Array, x: Float32Array, w: Float32Array): number {
  let [maxError, maxY] = [0, 0];
  for (let n = 0; n < N; n++) {
    let sum = 0;
    for (let k = 0; k < K; k++) sum += x[k]! * w[n * K + k]!;
    maxError = Math.max(maxError, Math.abs(y[n]! - sum));
    maxY = Math.max(maxY, Math.abs(sum));
  }
  return maxError / maxY;
}

async function createSession(bytes: Uint8Array, options: SessionOptions): Promise<{ session: OrtSession; sessionSeconds: number }> {
  const started = performance.now();
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ["cpu"], logSeverityLevel: 3, intraOpNumThreads: threads, ...options });
  return { session, sessionSeconds: (performance.now() - started) / 1000 };
}

/** Median latency of `session.run` in ms (see the doc comment for the repetitions). */
async function medianLatencyMs(session: OrtSession, feeds: Record<string, OrtTensor>): Promise<{ latencyMs: number; runs: number }> {
  for (let i = 0; i < warmupRuns; i++) await session.run(feeds);
  const times: number[] = [];
  const started = performance.now();
  while (times.length < minRuns || performance.now() - started < minSeconds * 1000) {
    const t0 = performance.now();
    await session.run(feeds);
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  const mid = times.length >> 1;
  return { latencyMs: times.length % 2 === 1 ? times[mid]! : (times[mid - 1]! + times[mid]!) / 2, runs: times.length };
}

/** The op types of the optimized graph (written by a separate session), "MatMul" when folded. */
async function opsAfterOptimization(bytes: Uint8Array, work: string): Promise<string> {
  const file = join(work, "optimized.onnx");
  const { session } = await createSession(bytes, { optimizedModelFilePath: file });
  await session.release();
  const nodes = decodeModel(await readFile(file), file).graph?.node ?? [];
  await rm(file, { force: true });
  const counts = new Map<string, number>();
  for (const node of nodes) counts.set(node.opType ?? "?", (counts.get(node.opType ?? "?") ?? 0) + 1);
  return [...counts].map(([op, count]) => (count > 1 ? `${count}×${op}` : op)).join(", ");
}

const ortVersion = (JSON.parse(readFileSync(join(REPO_ROOT, ".runtimes", "node_modules", "onnxruntime-node", "package.json"), "utf8")) as { version: string }).version;
const x = uniform(mulberry32(seed + 1000), Math.max(...BATCHES) * K, 1);
const work = await mkdtemp(join(tmpdir(), "lmpack-onnx-layer-"));
const rows: string[] = [];
const problems: string[] = [];
const benchStarted = performance.now();
const loadAtStart = loadavg();
try {
  for (const [i, [name, build]] of Object.entries(VARIANTS).entries()) {
    if (only.length > 0 && !only.some((o) => name.toLowerCase().includes(o.toLowerCase()))) continue;
    let started = performance.now();
    const built = build(mulberry32(seed + i));
    console.error(`${name}: built in ${((performance.now() - started) / 1000).toFixed(1)} s, ${(built.bytes.length / 2 ** 20).toFixed(2)} MiB${built.note === undefined ? "" : `, ${built.note}`}`);
    const bitsPerWeight = (8 * built.bytes.length) / (N * K);
    const cells: string[] = [name, (built.bytes.length / 2 ** 20).toFixed(2), bitsPerWeight.toFixed(3)];
    try {
      const latency: string[] = [];
      let check = "";
      let ops = "";
      for (const level of ["all", "disabled"] as const) {
        const { session, sessionSeconds } = await createSession(built.bytes, level === "all" ? {} : { graphOptimizationLevel: "disabled" });
        latency.push(sessionSeconds.toFixed(2));
        for (const batch of BATCHES) {
          const feeds = { A: inputOf(x, batch, built.io) };
          if (batch === 1 && level === "all") {
            const out = (await session.run(feeds))["Y"]!;
            const y = built.io === "float32" ? (out.data as Float32Array) : widenF16(out.data as Uint16Array);
            const xs = built.io === "float32" ? x : widenF16(Uint16Array.from(x.subarray(0, K), f16));
            const error = relativeError(y, xs, built.weight);
            const bound = built.io === "float32" ? BOUND : BOUND_F16_OUTPUT;
            check = `${error.toExponential(1)} ${error < bound ? "ok" : `FAIL (> ${bound})`}`;
            if (!(error < bound)) problems.push(`${name}: batch-1 error ${error} above ${bound}`);
          }
          const { latencyMs, runs } = await medianLatencyMs(session, feeds);
          latency.push(latencyMs.toFixed(latencyMs < 10 ? 2 : 1));
          console.error(`${name}: optimization ${level}, batch ${batch}: ${latencyMs.toFixed(2)} ms (median of ${runs}), session ${sessionSeconds.toFixed(2)} s`);
        }
        await session.release();
        if (level === "all") ops = await opsAfterOptimization(built.bytes, work);
        if (level === "all" && built.io === "float16" && ops.includes("Cast")) problems.push(`${name}: no fp16 MatMul kernel on this CPU EP; onnxruntime inserted Casts (${ops}) and ran the MatMul in float32`);
      }
      cells.push(...latency.slice(0, 3), ops, ...latency.slice(3), check);
    } catch (error) {
      const message = (error as Error).message.split("\n")[0]!;
      const verdict = /implementation|NOT_IMPLEMENTED/i.test(message) ? "not implemented on this CPU provider" : `error: ${message}`;
      console.error(`${name}: ${message}`);
      problems.push(`${name}: ${message}`);
      cells.push(verdict, "", "", "", "", "", "", "");
    }
    rows.push(`| ${cells.join(" | ")} |`);
    console.error(rows[rows.length - 1]);
  }
} finally {
  await rm(work, { recursive: true, force: true });
}
const cpu = cpus();
console.log(`# One ${N}×${K} linear (out × in) in onnxruntime-node ${ortVersion} (CPU EP, ${threads} intra-op threads)`);
console.log(`\n${cpu[0]?.model ?? "unknown CPU"}, ${cpu.length} cores, Node ${process.version}, load average ${loadAtStart.map((l) => l.toFixed(2)).join(" ")} at the start and ${loadavg().map((l) => l.toFixed(2)).join(" ")} at the end; medians of ≥ ${minRuns} runs and ≥ ${minSeconds} s after ${warmupRuns} warm-up runs; seed ${seed}; ${((performance.now() - benchStarted) / 1000).toFixed(0)} s in all.\n`);
console.log("| model | MiB | bits/weight | session s (default opt.) | batch 1 ms | batch 128 ms | ops after optimization | session s (opt. disabled) | batch 1 ms (disabled) | batch 128 ms (disabled) | batch-1 max \\|ΔY\\| / max \\|Y\\| |");
console.log("|---|---|---|---|---|---|---|---|---|---|---|");
for (const row of rows) console.log(row);
if (problems.length > 0) console.log(`\nNotes and problems:\n${problems.map((p) => `- ${p}`).join("\n")}`);
