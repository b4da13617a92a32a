#!/usr/bin/env node
/**
 * GPU dequant and dequant-verify throughput per format on 7B-shaped layers, as a percentage of
 * the device-to-device copy bandwidth measured in the same run (bytes read + written, both
 * counted for the copy and for the kernels). Kernel time only; the uploads of each call are not
 * timed. Also prints the CPU reference's time for the same layer, for scale.
 *
 *   node dist/bench/gpu-dequant.js [--rows 11008] [--cols 4096] [--batches 5] [--per-batch 20] [--only vptq,fp6,...] [--spqr-paths pipeline,stripes] [--spqr-outlier-share 0.01] [--spqr-perm shuffle|stride|identity] [--output-verify]
 *
 * Timing (kernels/cuda/timing.ts), the same for the kernels and for the copy: one event, PER_BATCH
 * launches enqueued back to back, a second event, the time between divided by PER_BATCH; the
 * median of BATCHES such batches. An event pair around each single launch would count the host's
 * launch latency through koffi (tens of µs) in kernels of about 0.1 ms. Each kernel call first
 * launches once on its buffers, untimed here: that launch pays for the first touch of freshly
 * allocated output memory (about 15 GB/s on the H100: a cost of the allocation, not the kernel).
 * A row marked "host-bound" enqueued more slowly than the GPU ran, so it measured the host.
 *
 * Two yardsticks beside the 1 GiB copy, measured per row in the same run: a copy of the row's
 * own byte count (what a copy that short reaches: launch gaps and the ramp of one short wave),
 * and the streaming ceiling (kernels/stream/stream.cu), a kernel that only reads and writes the
 * row's bytes in the row's proportions. A format below its ceiling has work left in the kernel;
 * a ceiling below the goal says the byte mix itself cannot reach it on this GPU. VPTQ rows also
 * get a gather ceiling (gatherCeilingBandwidth): the same streams plus the codebook gathers
 * (16 bytes per 8 weights from L1/L2), the bound on what its kernels can reach.
 *
 * Bytes counted per launch:
 *   dequant   the arrays the kernel reads (lmpack's in-memory representation: int-group codes are
 *             one byte each) + the output (2 bytes per weight for fp16, 4 for float32)
 *   verify    the arrays + the float32 source weights read; no weights written
 */
import { dequantize } from "../formats/int-group/reference.js";
import { groupCount, type IntGroupTensor } from "../formats/int-group/types.js";
import { fpxFormat } from "../formats/fpx/format.js";
import { dequantizeFpx } from "../formats/fpx/reference.js";
import { ggmlCodecByName } from "../formats/ggml/registry.js";
import { median, timeBatches, type BatchTimes, type BatchTiming, type LaunchTimingOptions } from "../kernels/cuda/timing.js";
import { GpuEngine } from "../kernels/engine.js";
import { dequantFpxGpu } from "../kernels/fpx/launch.js";
import { dequantGgmlGpu } from "../kernels/ggml/launch.js";
import { dequantIntGroupGpu } from "../kernels/int-group/launch.js";
import { dequantSpqrGpu } from "../kernels/spqr/launch.js";
import type { SpqrKernelPath } from "../kernels/spqr/launch-shape.js";
import { dequantVptqGpu } from "../kernels/vptq/launch.js";
import { SPQR_DEFAULTS, type SpqrTensor } from "../formats/spqr/types.js";
import { vectorRows, type VptqTensor } from "../formats/vptq/types.js";
import { shuffle } from "../test/helpers/prng.js";

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

const N = arg("rows", 11008);
const K = arg("cols", 4096);
const BATCHES = arg("batches", 5);
const PER_BATCH = arg("per-batch", 20);
const TIMING: BatchTiming = { batches: BATCHES, launchesPerBatch: PER_BATCH };
const engine = await GpuEngine.open();
const context = engine.context;


/** Device-to-device copy bandwidth, GB/s (read + write), moving `moved` bytes in all (default: a 1 GiB buffer copied). */
function copyBandwidth(moved = 2 ** 31): number {
  const bytes = Math.max(16, Math.round(moved / 32) * 16);
  const [a, b] = [context.alloc(bytes), context.alloc(bytes)];
  try {
    context.zero(a, bytes);
    context.copy(b, a, bytes);
    const times = timeBatches(() => context.copy(b, a, bytes), TIMING);
    return (2 * bytes) / (median(times.milliseconds) / 1000) / 1e9;
  } finally {
    context.free(a);
    context.free(b);
  }
}

/**
 * The streaming ceiling (kernels/stream/stream.cu): GB/s of a kernel that only reads `readBytes`
 * and writes `writeBytes`, interleaved as a dequant kernel interleaves them, a block per 256
 * vectors.
 */
function ceilingBandwidth(readBytes: number, writeBytes: number): number {
  const module = engine.module("stream");
  const [readVectors, writeVectors] = [Math.ceil(readBytes / 16), Math.ceil(writeBytes / 16)];
  const src = context.alloc(Math.max(16, readVectors * 16));
  const dst = context.alloc(Math.max(16, writeVectors * 16));
  const sink = context.alloc(16);
  try {
    context.zero(src, Math.max(16, readVectors * 16));
    // A block per 256 vectors of the larger side: bench/cuda/stream-ceiling.cu measured this grid
    // 7–9 points of the copy above a persistent wave for write-heavy mixes on the H100.
    const grid = [Math.max(1, Math.ceil(Math.max(readVectors, writeVectors) / 256))] as [number];
    const launch = () => module.launch("lq_stream_mix", { grid, block: [256] }, [{ pointer: src }, { i64: readVectors }, { pointer: dst }, { i64: writeVectors }, { pointer: sink }]);
    launch();
    const times = timeBatches(launch, TIMING);
    return (16 * (readVectors + writeVectors)) / (median(times.milliseconds) / 1000) / 1e9;
  } finally {
    for (const pointer of [src, dst, sink]) context.free(pointer);
  }
}

/** A VPTQ row's traffic for its gather ceiling (gatherCeilingBandwidth). */
interface GatherTraffic { mode: "f16" | "f32" | "verify"; vectors: number; tableVectors: number }

interface Row { format: string; mode: string; bytes: number; milliseconds: number; hostBound?: boolean; writtenBytes?: number; gather?: GatherTraffic }
/** LQ_STREAM_GATHER_VERIFY_BLOCKS in kernels/stream/stream.cu: the verify gather kernel's resident blocks per multiprocessor. */
const GATHER_VERIFY_BLOCKS_PER_SM = 4;

/**
 * The gather ceiling of a VPTQ row (kernels/stream/stream.cu lq_stream_gather_{f16,f32,verify}):
 * a kernel with exactly the memory traffic of VPTQ dequant and no arithmetic. Per vector of 8
 * weights it reads 3 index bytes as a stream, gathers 16 bytes from a table of the main
 * codebook's size (L1/L2, 32-byte sectors) at an index that depends on them, and writes 16
 * (fp16) or 32 (float32) bytes or reads 32 of reference (verify), on the grid that streams
 * such traffic fastest (a block per 256 items when writing, a resident wave for verify). Returned as GB/s of the row's own byte count, so that it compares with the
 * row's GB/s directly: the streaming ceiling says what the bytes allow, this one what the bytes
 * and the gathers together allow; a VPTQ kernel far below it has work left in the kernel.
 */
function gatherCeilingBandwidth(g: GatherTraffic, rowBytes: number): number {
  const module = engine.module("stream");
  // Whole warps of 8-vector items: a warp's stores and reference loads cover its 32 items' span.
  const items = 32 * Math.ceil(g.vectors / 8 / 32);
  const vectors = 8 * items;
  if (!(g.tableVectors > 0 && (g.tableVectors & (g.tableVectors - 1)) === 0)) throw new Error(`gather table of ${g.tableVectors} vectors: a power of two`);
  const bytes = { indices: 3 * vectors, table: 16 * g.tableVectors, stream: 16 * vectors * (g.mode === "f16" ? 1 : 2), sink: 16 };
  const [indices, table, stream, sink] = [bytes.indices, bytes.table, bytes.stream, bytes.sink].map((n) => context.alloc(n));
  try {
    // Zeros: the gather addresses come from a hash of each vector's number (stream.cu st_gather_at).
    context.zero(indices!, bytes.indices);
    context.zero(table!, bytes.table);
    if (g.mode === "verify") context.zero(stream!, bytes.stream);
    const shape = g.mode === "verify" ? { multiprocessors: context.info.multiprocessors } : undefined;
    const launch =
      shape === undefined
        ? () => module.launch(`lq_stream_gather_${g.mode}`, { grid: [Math.max(1, Math.ceil(items / 256))], block: [256] }, [{ pointer: indices! }, { pointer: table! }, { u32: g.tableVectors - 1 }, { pointer: stream! }, { i64: vectors }])
        : () => module.launch("lq_stream_gather_verify", { grid: [shape.multiprocessors * GATHER_VERIFY_BLOCKS_PER_SM], block: [256] }, [{ pointer: indices! }, { pointer: table! }, { u32: g.tableVectors - 1 }, { pointer: stream! }, { i64: vectors }, { pointer: sink! }]);
    launch();
    const times = timeBatches(launch, TIMING);
    return rowBytes / (median(times.milliseconds) / 1000) / 1e9;
  } finally {
    for (const pointer of [indices, table, stream, sink]) context.free(pointer!);
  }
}

const rows: Row[] = [];

/**
 * One call of a format's launch with batchTiming: its first launch warms the buffers, then the
 * median per-launch time of the batches. Host-bound when the host's enqueue time per launch
 * reached the GPU's time per launch (the queue ran dry, so the GPU time is the host's pace).
 */
function timeCalls(format: string, mode: string, bytes: number, call: (timing: LaunchTimingOptions) => { batchTimes?: BatchTimes }): void {
  const times = call({ launches: 1, batchTiming: TIMING }).batchTimes!;
  const milliseconds = median(times.milliseconds);
  // The weights written (dequant modes); verify writes only its partial sums.
  const writtenBytes = mode === "dequant → fp16" ? 2 * N * K : mode === "dequant → f32" || mode === OUTPUT_VERIFY ? 4 * N * K : 0;
  rows.push({ format, mode, bytes, milliseconds, hostBound: median(times.hostMilliseconds) >= milliseconds, writtenBytes });
}

function intGroup(bits: 2 | 3 | 4 | 8, groupSize: number): void {
  let seed = 1;
  const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const groups = groupCount(K, groupSize);
  const t: IntGroupTensor = {
    params: { bits, groupSize, sym: false, scaleDtype: "F16" },
    outFeatures: N,
    inFeatures: K,
    codes: Uint8Array.from({ length: N * K }, () => Math.floor(rand() * (1 << bits))),
    scales: Float32Array.from({ length: groups * N }, () => 2 ** -8 * (1 + Math.floor(rand() * 1024) / 1024)),
    zeros: Uint16Array.from({ length: groups * N }, () => Math.floor(rand() * (1 << bits))),
    gIdx: undefined,
  };
  const reference = Float32Array.from({ length: N * K }, () => rand() - 0.5);
  const arrays = N * K + groups * N * (4 + 2);
  const name = `int-group ${bits}-bit g${groupSize}`;
  timeCalls(name, "dequant → fp16", arrays + 2 * N * K, (timing) => dequantIntGroupGpu(engine, t, { output: "f16", ...timing }));
  timeCalls(name, "dequant → f32", arrays + 4 * N * K, (timing) => dequantIntGroupGpu(engine, t, { ...timing }));
  timeCalls(name, "verify", arrays + 4 * N * K, (timing) => dequantIntGroupGpu(engine, t, { reference, weights: false, ...timing }));
  if (withOutputVerify) timeCalls(name, OUTPUT_VERIFY, arrays + 8 * N * K, (timing) => dequantIntGroupGpu(engine, t, { reference, ...timing }));
  const started = performance.now();
  dequantize(t);
  rows.push({ format: name, mode: "CPU reference (1 thread)", bytes: arrays + 4 * N * K, milliseconds: performance.now() - started });
}

let state = 7;
const random = () => ((state = (state * 1664525 + 1013904223) >>> 0) / 2 ** 32);
const randomBytes = (n: number) => Uint8Array.from({ length: n }, () => Math.floor(random() * 256));
const reference = Float32Array.from({ length: N * K }, () => random() - 0.5);

function fpx(): void {
  const format = fpxFormat(3, 2);
  const packedBytes = (N * K * format.nbits) / 8;
  // Scales 2^-6 … 2^-4 as fp16 bits: finite, so every output is a number.
  const t = { format, outFeatures: N, inFeatures: K, packed: randomBytes(packedBytes), scales: Uint16Array.from({ length: N }, () => 0x2400 + Math.floor(random() * 0x0800)) };
  const arrays = packedBytes + 2 * N;
  const name = "FP6 e3m2 (tc layout)";
  timeCalls(name, "dequant → fp16", arrays + 2 * N * K, (timing) => dequantFpxGpu(engine, t, { output: "f16", ...timing }));
  timeCalls(name, "dequant → f32", arrays + 4 * N * K, (timing) => dequantFpxGpu(engine, t, { ...timing }));
  timeCalls(name, "verify", arrays + 4 * N * K, (timing) => dequantFpxGpu(engine, t, { reference, weights: false, ...timing }));
  if (withOutputVerify) timeCalls(name, OUTPUT_VERIFY, arrays + 8 * N * K, (timing) => dequantFpxGpu(engine, t, { reference, ...timing }));
  const started = performance.now();
  dequantizeFpx(t);
  rows.push({ format: name, mode: "CPU reference (1 thread)", bytes: arrays + 4 * N * K, milliseconds: performance.now() - started });
}

function ggml(type: string): void {
  const codec = ggmlCodecByName(type)!;
  const bytes = randomBytes((N * K / codec.blockSize) * codec.typeSize);
  const name = `ggml ${type}`;
  timeCalls(name, "dequant → fp16", bytes.length + 2 * N * K, (timing) => dequantGgmlGpu(engine, type, bytes, N * K, { output: "f16", ...timing }));
  timeCalls(name, "dequant → f32", bytes.length + 4 * N * K, (timing) => dequantGgmlGpu(engine, type, bytes, N * K, { ...timing }));
  timeCalls(name, "verify", bytes.length + 4 * N * K, (timing) => dequantGgmlGpu(engine, type, bytes, N * K, { reference, weights: false, ...timing }));
  if (withOutputVerify) timeCalls(name, OUTPUT_VERIFY, bytes.length + 8 * N * K, (timing) => dequantGgmlGpu(engine, type, bytes, N * K, { reference, ...timing }));
}

/** `--spqr-outlier-share 0.01`: the share of SpQR weights with an outlier. */
const SPQR_OUTLIER_SHARE = arg("spqr-outlier-share", 0.01);
/**
 * `--spqr-perm`: SpQR's input permutation. act_order sorts the columns by diag H, an order with
 * no relation to the column numbers, so the default is a seeded shuffle. `stride` (column k·7919
 * mod n, the bench's permutation until 2026-11-24) and `identity` (no act_order) are the
 * structured cases: there a warp's shared-memory gathers fall into few banks.
 */
const SPQR_PERMS = ["shuffle", "stride", "identity"] as const;
const spqrPermAt = process.argv.indexOf("--spqr-perm");
const SPQR_PERM = spqrPermAt < 0 ? "shuffle" : SPQR_PERMS.find((p) => p === process.argv[spqrPermAt + 1]);
if (SPQR_PERM === undefined) throw new Error(`--spqr-perm: "${process.argv[spqrPermAt + 1]}" is not one of ${SPQR_PERMS.join(", ")}`);
function spqrPermutation(n: number): Uint16Array {
  const perm = Uint16Array.from({ length: n }, (_, k) => (SPQR_PERM === "stride" ? (k * 7919) % n : k));
  return SPQR_PERM === "shuffle" ? shuffle(random, perm) : perm;
}
/** A random SpQR 3-bit 16×16 layer with SPQR_OUTLIER_SHARE outliers (values only need to be finite fp16). */
function spqr(): void {
  const params = SPQR_DEFAULTS;
  const [m, n] = [N, K];
  const groups = n / params.beta2;
  const tiles = groups * (m / params.beta1);
  const int = (k: number) => Math.floor(random() * k);
  const half = (n: number, base: number, span: number) => Uint16Array.from({ length: n }, () => base + int(span));
  const rowOffsets = new Int32Array(m + 1);
  const cols: number[] = [];
  for (let r = 0; r < m; r++) {
    for (let c = 0; c < n; c++) if (random() < SPQR_OUTLIER_SHARE) cols.push(c);
    rowOffsets[r + 1] = cols.length;
  }
  const t: SpqrTensor = {
    params, outFeatures: m, inFeatures: n, perm: spqrPermutation(n),
    codes: Uint8Array.from({ length: m * n }, () => int(8)), scaleCodes: Uint8Array.from({ length: groups * m }, () => int(8)), zeroCodes: Uint8Array.from({ length: groups * m }, () => int(8)),
    scaleScale: half(tiles, 0x1c00, 0x1800), scaleZero: half(tiles, 0x3c00, 0x0800), zeroScale: half(tiles, 0x3400, 0x0c00), zeroZero: half(tiles, 0x3c00, 0x0800),
    outliers: { rowOffsets, cols: Uint16Array.from(cols), values: half(cols.length, 0x3c00, 0x0c00) },
    outlierStorage: "csr",
  };
  const arrays = m * n + 2 * groups * m + 8 * tiles + 4 * (m + 1) + 4 * cols.length + 2 * n;
  for (const path of spqrPaths) {
    const name = `SpQR 3-bit 16×16, ${+(100 * SPQR_OUTLIER_SHARE).toFixed(2)} % outliers, ${SPQR_PERM} perm${path === undefined ? "" : ` (${path})`}`;
    timeCalls(name, "dequant → fp16", arrays + 2 * m * n, (timing) => dequantSpqrGpu(engine, t, { output: "f16", path, ...timing }));
    timeCalls(name, "dequant → f32", arrays + 4 * m * n, (timing) => dequantSpqrGpu(engine, t, { path, ...timing }));
    timeCalls(name, "verify", arrays + 4 * m * n, (timing) => dequantSpqrGpu(engine, t, { reference, weights: false, path, ...timing }));
    if (withOutputVerify) timeCalls(name, OUTPUT_VERIFY, arrays + 8 * m * n, (timing) => dequantSpqrGpu(engine, t, { reference, path, ...timing }));
  }
}
/** `--spqr-paths pipeline,stripes`: time these SpQR kernel kinds (kernels/spqr/launch-shape.ts), each forced; the chosen one by default. */
const spqrPathsAt = process.argv.indexOf("--spqr-paths");
const SPQR_PATHS: readonly SpqrKernelPath[] = ["pipeline", "stripes", "elements"];
const spqrPaths: (SpqrKernelPath | undefined)[] = spqrPathsAt >= 0 ? (process.argv[spqrPathsAt + 1] ?? "").split(",").map(spqrPath) : [undefined];
function spqrPath(name: string): SpqrKernelPath {
  const path = SPQR_PATHS.find((p) => p === name);
  if (path === undefined) throw new Error(`--spqr-paths: "${name}" is not one of ${SPQR_PATHS.join(", ")}`);
  return path;
}

/** A random VPTQ layer at the paper's 7B setting: v8, 65,536 centroids, residual 256, norm, perm. */
function vptq(): void {
  const [vl, k, kRes] = [8, 65536, 256];
  const indexCount = vectorRows(N, vl) * K;
  const halves = (count: number, base: number, span: number) => Uint16Array.from({ length: count }, () => base + Math.floor(random() * span));
  const t: VptqTensor = {
    params: { vectorLen: vl, numCentroids: k, numResCentroids: kRes, groupNum: 1, groupSize: K, outlierSize: 0, outlierVectorLen: 0, outlierNumCentroids: 0, enableNorm: true, enablePerm: true },
    outFeatures: N, inFeatures: K, dtype: "F16",
    centroids: halves(k * vl, 0x3000, 0x0c00), resCentroids: halves(kRes * vl, 0x2000, 0x0800),
    mainIndices: Uint32Array.from({ length: indexCount }, () => Math.floor(random() * k)), resIndices: Uint32Array.from({ length: indexCount }, () => Math.floor(random() * kRes)),
    outlierCentroids: undefined, outlierIndices: undefined,
    perm: Uint16Array.from({ length: K }, (_, c) => (c * 7919) % K),
    weightScale: halves(K, 0x2000, 0x0800), weightBias: halves(K, 0xa000, 0x0800),
  };
  // Stored: 16-bit main and 8-bit residual indices per vector (lmpack's in-memory widths on the device), codebooks, perm, norm.
  const arrays = indexCount * (2 + 2) + 2 * vl * (k + kRes) + 2 * K * 3;
  const name = "VPTQ v8 k65536 + res 256";
  // Their gather ceiling: the codebook as a table of 16-byte vectors (k of them for v8).
  const gather = (mode: GatherTraffic["mode"]) => (rows[rows.length - 1]!.gather = { mode, vectors: indexCount, tableVectors: (k * vl * 2) / 16 });
  timeCalls(name, "dequant → fp16", arrays + 2 * N * K, (timing) => dequantVptqGpu(engine, t, { output: "f16", ...timing }));
  gather("f16");
  timeCalls(name, "dequant → f32", arrays + 4 * N * K, (timing) => dequantVptqGpu(engine, t, { ...timing }));
  gather("f32");
  timeCalls(name, "verify", arrays + 4 * N * K, (timing) => dequantVptqGpu(engine, t, { reference, weights: false, ...timing }));
  gather("verify");
  if (withOutputVerify) timeCalls(name, OUTPUT_VERIFY, arrays + 8 * N * K, (timing) => dequantVptqGpu(engine, t, { reference, ...timing }));
}

const copy = copyBandwidth();
/**
 * `--output-verify`: also time float32 output and verify in one launch, what `lmpack verify` runs (it
 * downloads the weights to compare GPU and CPU bits): the reference read and the weights written.
 */
const withOutputVerify = process.argv.includes("--output-verify");
const OUTPUT_VERIFY = "f32 out + verify";
/** `--only vptq,fp6`: the formats whose row names contain one of these words (case-insensitive); all by default. */
const onlyAt = process.argv.indexOf("--only");
const only = onlyAt >= 0 ? (process.argv[onlyAt + 1] ?? "").toLowerCase().split(",").filter((w) => w !== "") : undefined;
const selected = (name: string): boolean => only === undefined || only.some((w) => name.toLowerCase().includes(w));
if (selected("int-group")) {
  intGroup(4, 128);
  intGroup(2, 64);
  intGroup(8, 128);
}
if (selected("FP6 e3m2")) fpx();
if (selected("SpQR")) spqr();
if (selected("VPTQ")) vptq();
for (const type of ["Q8_0", "Q4_0", "Q4_K", "Q6_K"]) if (selected(`ggml ${type}`)) ggml(type);

console.log(`# GPU dequant on ${engine.describe()}: ${N}×${K} layers, median of ${BATCHES} batches of ${PER_BATCH} back-to-back launches; device-to-device copy ${copy.toFixed(0)} GB/s (read + write, 1 GiB buffer)\n`);
console.log("Columns: % of copy (the goal's yardstick); the same bytes copied by cuMemcpyDtoD; the streaming ceiling (a kernel that only moves the row's bytes, reads and writes interleaved) and the kernel as % of it; for VPTQ also the gather ceiling (the streams plus one 16-byte codebook gather per 8 weights, no arithmetic: kernels/stream/stream.cu lq_stream_gather_*) and the kernel as % of it.\n");
console.log("| format | mode | MB moved | ms | GB/s | % of copy | same-size copy GB/s | ceiling GB/s (% of copy) | % of ceiling | gather ceiling GB/s (% of copy) | % of gather ceiling |");
console.log("|---|---|---|---|---|---|---|---|---|---|---|");
for (const r of rows) {
  const rate = r.bytes / (r.milliseconds / 1000) / 1e9;
  if (r.mode.startsWith("CPU")) {
    console.log(`| ${r.format} | ${r.mode} | ${(r.bytes / 1e6).toFixed(1)} | ${r.milliseconds.toFixed(3)} | ${rate.toFixed(0)} | | | | | | |`);
    continue;
  }
  const written = r.writtenBytes ?? 0;
  const sameSize = copyBandwidth(r.bytes);
  const ceiling = ceilingBandwidth(r.bytes - written, written);
  const gatherCeiling = r.gather === undefined ? undefined : gatherCeilingBandwidth(r.gather, r.bytes);
  const gatherCells = gatherCeiling === undefined ? " | " : `${gatherCeiling.toFixed(0)} (${((100 * gatherCeiling) / copy).toFixed(1)} %) | ${((100 * rate) / gatherCeiling).toFixed(1)} %`;
  console.log(`| ${r.format} | ${r.mode} | ${(r.bytes / 1e6).toFixed(1)} | ${r.milliseconds.toFixed(3)} | ${rate.toFixed(0)} | ${((100 * rate) / copy).toFixed(1)} %${r.hostBound ? " (host-bound)" : ""} | ${sameSize.toFixed(0)} | ${ceiling.toFixed(0)} (${((100 * ceiling) / copy).toFixed(1)} %) | ${((100 * rate) / ceiling).toFixed(1)} % | ${gatherCells} |`);
}
engine.close();
