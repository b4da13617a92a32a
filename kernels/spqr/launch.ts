import { KernelError } from "../../formats/errors.js";
import { bytesOf } from "../../formats/packed-array.js";
import { firstOrderGroups, type SpqrOutliers, type SpqrTensor } from "../../formats/spqr/types.js";
import { checkStatus } from "../cuda/status.js";
import type { DevicePointer } from "../cuda/driver.js";
import type { GpuEngine } from "../engine.js";
import { sumPartials, VERIFY_PARTIAL_BYTES, type VerifyStats } from "../cuda/verify.js";
import { runLaunches, type BatchTimes, type LaunchTimingOptions } from "../cuda/timing.js";
import { chooseLaunch, type SpqrKernelPath } from "./launch-shape.js";
import { interleaveStats, pipelineStatistics } from "./pipeline-layout.js";

/**
 * Host side of kernels/spqr/spqr.cu: checks the tensor, uploads its fields, launches one of its
 * kernels (launch-shape.ts), and returns the weights ([m, n] in original column order, float32
 * with the values of formats/spqr/reference.ts, whose fp16 results it widens, or those fp16 bits)
 * and, given the source weights, the verify statistics.
 *
 * Every index the kernel follows is checked here first (KernelError LAUNCH_REFUSED), so no file
 * can make it read out of bounds: array lengths (and element sizes), CSR offsets from 0 to the
 * entry count and never decreasing, outlier columns below n, the permutation a permutation. The
 * kernels bound offsets and permuted columns again and report through their status word.
 *
 * Prepared here, all O(n + nnz + tiles): the inverse permutation (the kernel walks output
 * columns), the four second-order statistics interleaved per tile (one 8-byte load), and, for
 * rows whose outlier columns are not sorted (never so in files SpQR writes), a stable sort by
 * column, which keeps the order in which equal columns add up.
 *
 * Launch: the kernel, grid, block size and shared memory come from launch-shape.ts (chooseLaunch),
 * which says which of the three kinds takes which shapes.
 */

/** The permutation (SpQR's in_perm halves) and the outlier columns are uint16. */
const MAX_COLUMNS = 65536;
/** Rows per PTCSR block (spqr_cuda.cpp init_ptcsr; LQ_SPQR_PTCSR_ROWS in spqr.cuh). */
const PTCSR_ROWS = 16;

export interface SpqrGpuOptions extends LaunchTimingOptions {
  /** Source weights float32 [m][n], in the output's column order: also compute the verify statistics. */
  reference?: Float32Array;
  /** Return the weights (default true; false for verify alone, which then writes none). */
  weights?: boolean;
  /** Element type of the returned weights: float32 (default), or their fp16 bits. */
  output?: "f32" | "f16";
  /** As formats/spqr/reference.ts: keep the stored (permuted) column order. */
  permuted?: boolean;
  /** As formats/spqr/reference.ts: leave the outliers out. */
  denseOnly?: boolean;
  tensorName?: string;
  /** Run this kind of kernel (launch-shape.ts), for tests and benches; KernelError KIND_UNAVAILABLE where it cannot take the shape. */
  path?: SpqrKernelPath;
}

export interface SpqrGpuResult {
  /** Float32Array for output "f32", Uint16Array of fp16 bits for "f16". */
  weights: Float32Array | Uint16Array | undefined;
  stats: VerifyStats | undefined;
  /** Kernel time measured with CUDA events. */
  kernelMilliseconds: number;
  /** Kernel time of every launch. */
  launchMilliseconds?: number[];
  /** With `batchTiming`: mean kernel time per launch of each batch of back-to-back launches. */
  batchTimes?: BatchTimes;
}

type Refuse = (detail: string, expected: unknown, actual: unknown) => KernelError;
type Sized = { length: number; BYTES_PER_ELEMENT?: number };

export function dequantSpqrGpu(engine: GpuEngine, t: SpqrTensor, options: SpqrGpuOptions = {}): SpqrGpuResult {
  const { outFeatures: m, inFeatures: n } = t;
  const { bits, beta1, beta2 } = t.params;
  const storage = t.outlierStorage ?? "csr";
  const shape = `${m}×${n} ${bits}-bit ${beta1}×${beta2}, ${t.outliers?.cols?.length ?? "no"} outliers (${storage})`;
  const where = { tensor: options.tensorName };
  const refuse: Refuse = (detail, expected, actual) => new KernelError("LAUNCH_REFUSED", `spqr ${shape}: ${detail}`, { ...where, expected, actual });
  checkTensor(t, refuse);
  if (options.reference !== undefined && options.reference.length !== m * n) throw refuse("reference length", m * n, options.reference.length);
  const invPerm = new Uint16Array(n);
  for (let j = 0; j < n; j++) invPerm[t.perm[j]!] = j;
  const outliers = sortedByColumn(t.outliers, m);

  const context = engine.context;
  const module = engine.module("spqr");
  const total = m * n;
  const wantWeights = options.weights ?? true;
  const f16 = options.output === "f16";
  const launch = chooseLaunch(module, context.info, { m, n, beta1, beta2, output: wantWeights ? (f16 ? "f16" : "f32") : undefined, verify: options.reference !== undefined }, options.path);
  if (launch === undefined) throw new KernelError("KIND_UNAVAILABLE", `spqr ${shape}: no ${options.path} kernel for this shape`, { ...where, expected: "a shape launch-shape.ts gives that kind", actual: options.path });
  const { kernel, blocks, threads, sharedBytes } = launch;
  const withOutliers = !(options.denseOnly ?? false);
  const allocated: DevicePointer[] = [];
  const upload = (bytes: Uint8Array) => {
    const pointer = context.upload(bytes);
    allocated.push(pointer);
    return pointer;
  };
  const alloc = (bytes: number) => {
    const pointer = context.alloc(bytes);
    allocated.push(pointer);
    return pointer;
  };
  try {
    const codes = upload(t.codes);
    // The pipelined kernels take the statistics reordered per batch (pipeline-layout.ts).
    const reordered = launch.path === "pipeline" ? pipelineStatistics(t, launch.rows!.batch, n / beta2) : undefined;
    const scaleCodes = upload(reordered?.scaleCodes ?? t.scaleCodes);
    const zeroCodes = upload(reordered?.zeroCodes ?? t.zeroCodes);
    const secondOrder = upload(bytesOf(reordered?.stats ?? interleaveStats(t)));
    const rowOffsets = withOutliers ? upload(bytesOf(outliers.rowOffsets)) : 0n;
    const cols = withOutliers ? upload(bytesOf(outliers.cols)) : 0n;
    const values = withOutliers ? upload(bytesOf(outliers.values)) : 0n;
    const inversePerm = options.permuted ? 0n : upload(bytesOf(invPerm));
    const out = wantWeights ? alloc(total * (f16 ? 2 : 4)) : 0n;
    const reference = options.reference === undefined ? 0n : upload(bytesOf(options.reference));
    const partials = options.reference === undefined ? 0n : alloc(blocks * VERIFY_PARTIAL_BYTES);
    const status = alloc(4);
    const args = [
      { pointer: codes }, { pointer: scaleCodes }, { pointer: zeroCodes }, { pointer: secondOrder },
      { pointer: rowOffsets }, { pointer: cols }, { pointer: values }, { pointer: inversePerm },
      { pointer: out }, { pointer: reference }, { pointer: partials },
      { i64: m }, { i64: n }, { i64: beta1 }, { i64: beta2 }, { i64: outliers.cols.length }, { u32: 2 ** bits - 1 },
      { i32: withOutliers && storage === "ptcsr" ? 1 : 0 },
      // The stripe kernels' stripe and batch rows, the per-element kernel's fp16 flag; the pipelined kernels have neither.
      ...(launch.path === "stripes" ? [{ i32: launch.rows!.stripe }, { i32: launch.rows!.batch }] : launch.path === "elements" ? [{ i32: f16 ? 1 : 0 }] : []),
      { pointer: status },
    ];
    const { launchMilliseconds, batchTimes } = runLaunches(context, status, () => module.launch(kernel, { grid: [blocks], block: [threads], sharedBytes }, args), options);
    const kernelMilliseconds = launchMilliseconds[0]!;
    checkStatus(context, status, { format: "spqr", ...(options.tensorName === undefined ? {} : { tensor: options.tensorName }), shape });
    const weights = !wantWeights ? undefined : f16 ? new Uint16Array(total) : new Float32Array(total);
    if (weights !== undefined) context.download(out, new Uint8Array(weights.buffer));
    const stats = options.reference === undefined ? undefined : sumPartials(context, partials, blocks);
    return { weights, stats, kernelMilliseconds, launchMilliseconds, ...(batchTimes === undefined ? {} : { batchTimes }) };
  } finally {
    for (const pointer of allocated) context.free(pointer);
  }
}

/** Every shape, length and index the kernel relies on, cheapest first. */
function checkTensor(t: SpqrTensor, refuse: Refuse): void {
  const { outFeatures: m, inFeatures: n } = t;
  const { bits, beta1, beta2 } = t.params;
  const positive = (x: number) => Number.isSafeInteger(x) && x > 0;
  if (![m, n, beta1, beta2].every(positive) || !Number.isSafeInteger(m * n)) throw refuse("empty or impossible shape", "m, n, beta1, beta2 > 0", [m, n, beta1, beta2]);
  // uint8 codes; the reference decodes 2^bits levels.
  if (!(Number.isInteger(bits) && bits >= 1 && bits <= 8)) throw refuse("code width", "1 … 8 bits", bits);
  if (m % beta1 !== 0 || n % beta2 !== 0) throw refuse("m must be a multiple of beta1 and n of beta2 (whole tiles)", `multiples of ${beta1} × ${beta2}`, [m, n]);
  if (n > MAX_COLUMNS) throw refuse("more columns than a uint16 permutation can order", `≤ ${MAX_COLUMNS}`, n);
  if ((t.outlierStorage ?? "csr") === "ptcsr" && m % PTCSR_ROWS !== 0) throw refuse("PTCSR storage needs whole 16-row blocks", `m a multiple of ${PTCSR_ROWS}`, m);
  const G = firstOrderGroups(t);
  const tiles = G * (m / beta1);
  // Lengths and element sizes: the kernel reads count × size bytes of each upload.
  const sized = (name: string, array: Sized | undefined, count: number, bytesPer: number) => {
    if (array?.length === count && array.BYTES_PER_ELEMENT === bytesPer) return;
    throw refuse(`${name} length`, `${count} × ${bytesPer} bytes`, array === undefined ? "missing" : `${array.length} × ${array.BYTES_PER_ELEMENT} bytes`);
  };
  sized("codes", t.codes, m * n, 1);
  sized("scaleCodes", t.scaleCodes, G * m, 1);
  sized("zeroCodes", t.zeroCodes, G * m, 1);
  for (const name of ["scaleScale", "scaleZero", "zeroScale", "zeroZero"] as const) sized(name, t[name], tiles, 2);
  sized("perm", t.perm, n, 2);
  sized("outliers.rowOffsets", t.outliers?.rowOffsets, m + 1, 4);
  const { rowOffsets, cols, values } = t.outliers;
  if (rowOffsets[0] !== 0) throw refuse("outliers.rowOffsets[0] must be 0", 0, rowOffsets[0]);
  for (let r = 0; r < m; r++) {
    if (rowOffsets[r + 1]! < rowOffsets[r]!) throw refuse(`outliers.rowOffsets decreases at row ${r}`, `≥ ${rowOffsets[r]}`, rowOffsets[r + 1]);
  }
  // The last offset is the entry count.
  sized("outliers.cols", cols, rowOffsets[m]!, 2);
  sized("outliers.values", values, rowOffsets[m]!, 2);
  const wide = cols.findIndex((c) => c >= n);
  if (wide >= 0) throw refuse(`outliers.cols[${wide}] is not a column`, `0 … ${n - 1}`, cols[wide]);
  const seen = new Uint8Array(n);
  for (let j = 0; j < n; j++) {
    const p = t.perm[j]!;
    if (p >= n || seen[p] === 1) throw refuse(`perm[${j}] = ${p}${p < n ? " again" : ""}: not a permutation`, `a permutation of 0 … ${n - 1}`, p);
    seen[p] = 1;
  }
}

/**
 * The outliers with each row sorted by column, as the kernels need (the stripe kernel's runs of
 * equal columns and PTCSR check at column 0, the fallback's binary search). Outliers at
 * different columns never meet in one sum, so a stable sort (ties in entry order) leaves every
 * weight as the reference's in-order adds make it. Sorted input is returned as it is.
 */
function sortedByColumn(o: SpqrOutliers, m: number): SpqrOutliers {
  const unsorted: number[] = [];
  for (let r = 0; r < m; r++) {
    for (let i = o.rowOffsets[r]! + 1; i < o.rowOffsets[r + 1]!; i++) {
      if (o.cols[i]! < o.cols[i - 1]!) {
        unsorted.push(r);
        break;
      }
    }
  }
  if (unsorted.length === 0) return o;
  const cols = o.cols.slice();
  const values = o.values.slice();
  for (const r of unsorted) {
    const lo = o.rowOffsets[r]!;
    const order = Array.from({ length: o.rowOffsets[r + 1]! - lo }, (_, k) => lo + k).sort((a, b) => o.cols[a]! - o.cols[b]! || a - b);
    order.forEach((from, k) => {
      cols[lo + k] = o.cols[from]!;
      values[lo + k] = o.values[from]!;
    });
  }
  return { rowOffsets: o.rowOffsets, cols, values };
}
