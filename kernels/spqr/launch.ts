import { KernelError } from "../../formats/errors.js";
import { bytesOf } from "../../formats/packed-array.js";
import { firstOrderGroups, type SpqrOutliers, type SpqrTensor } from "../../formats/spqr/types.js";
import { checkStatus } from "../cuda/status.js";
import type { DevicePointer } from "../cuda/driver.js";
import type { GpuEngine } from "../engine.js";
import { sumPartials, VERIFY_PARTIAL_BYTES, type VerifyStats } from "../cuda/verify.js";
import { runLaunches, type BatchTimes, type LaunchTimingOptions } from "../cuda/timing.js";

/**
 * Host side of kernels/spqr/spqr.cu: checks the tensor, uploads its fields, launches one of its
 * kernels (stripeLaunch), and returns the weights ([m, n] in original column order, float32
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
 * Launch (stripeLaunch): THREADS threads per block (the kernels are written for 256).
 * - `lq_spqr_stripes_<output>[_verify]_r<R>[s]` whenever n and beta2 are multiples of 8 and a batch
 *   of rows fits in shared memory (≤ SHARED_LIMIT_BYTES: the stripe's CSR offsets, (s, z) of each
 *   (row of the stripe, group), and 2n bytes per row of the batch): one block per stripe of
 *   `stripe` rows, walked in batches of R rows (spqr.cu says why). The most rows per batch first,
 *   then the longest stripe up to 8 rows (one vector load of a group's scale codes per stripe).
 *   fp16 out and neither output nor verify: R = 4, 2, 1. float32 out and verify: R = 4 with 4
 *   columns per item ("s", kernels/spqr/stripe-emit.cuh), then R = 2, 1 with 8, only where 4
 *   rows do not fit in shared memory (n above about 5.4K at 16-column groups). At n = 4096,
 *   16-column groups: R = 4, stripes of 8 (1,376 blocks on an 11008-row layer: 3.5 waves of three
 *   resident blocks per multiprocessor on the H100, LQ_SPQR_BLOCKS_PER_SM).
 *   Measured (issue 9, H100, 2026-11-23; % of a ~3000 GB/s copy in one run, fp16 / float32 /
 *   verify; all bit-exact, memcheck and racecheck clean): the chosen kernels 72.0 / 82.2 / 75.1;
 *   float32 at R = 4, 2, 1 with 8-column items 68.6, 71.2, 72.2; verify at R = 2, 1 with them
 *   74.5, 63.5, at R = 2 with 4 columns 71.1; the old main kernel 64.5 / 74.6 / 76.3. The fp16
 *   kernel, the same throughout, read 71.5 … 72.1: about a point is noise.
 * - otherwise `lq_spqr_dequant_verify`: one thread per weight over a grid-stride loop (enough
 *   blocks to fill the device, BLOCKS_PER_SM per multiprocessor), each finding its row's outliers
 *   by binary search.
 */

const THREADS = 256;
const BLOCKS_PER_SM = 16;
/** Rows per stripe of the stripe kernel, the most first. */
const STRIPE_ROWS = [8, 4, 2, 1] as const;
/** A batch: its rows R, and whether the output takes 4 columns per item (kernel name suffix "s"). */
type Batch = { rows: number; split: boolean };
/** fp16 out, and neither output nor verify: R = 4, 2, 1, 8-column items (the kernels spqr.cu instantiates). */
const BATCHES: readonly Batch[] = [4, 2, 1].map((rows) => ({ rows, split: false }));
/**
 * float32 out, and verify with any output: R = 4 with 4-column items (the fastest measured, the
 * comment at the top), then R = 2 and 1 with 8-column items where 4 rows do not fit in shared memory.
 */
const WIDE_BATCHES: readonly Batch[] = [{ rows: 4, split: true }, { rows: 2, split: false }, { rows: 1, split: false }];
/** The batches to try for an output kind and verify, the most rows first. */
function batchChoices(output: "f16" | "f32" | undefined, verify: boolean): readonly Batch[] {
  return verify || output === "f32" ? WIDE_BATCHES : BATCHES;
}
/** Dynamic shared memory a launch may ask for without cuFuncSetAttribute (which the driver binding lacks). */
const SHARED_LIMIT_BYTES = 48 * 1024;
/** The stripe's CSR offsets, LQ_SPQR_OFFSET_BYTES of spqr.cu. */
const OFFSET_BYTES = 80;
/** The verify reduction's 96 doubles, which the stripe kernel places in the same shared memory. */
const REDUCTION_BYTES = 96 * 8;
/** CUDA's limit on gridDim.x; the kernels walk further stripes or elements with a block-stride loop. */
const MAX_GRID_X = 2 ** 31 - 1;
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
  const { kernel, blocks, sharedBytes, rows } = stripeLaunch(m, n, beta2, context.info.multiprocessors, wantWeights ? (f16 ? "f16" : "f32") : undefined, options.reference !== undefined);
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
    const scaleCodes = upload(t.scaleCodes);
    const zeroCodes = upload(t.zeroCodes);
    const secondOrder = upload(bytesOf(interleaveStats(t)));
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
      { i32: withOutliers && storage === "ptcsr" ? 1 : 0 }, ...(rows === undefined ? [{ i32: f16 ? 1 : 0 }] : [{ i32: rows.stripe }, { i32: rows.batch }]), { pointer: status },
    ];
    const { launchMilliseconds, batchTimes } = runLaunches(context, status, () => module.launch(kernel, { grid: [blocks], block: [THREADS], sharedBytes }, args), options);
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

/**
 * The kernel, its grid and its dynamic shared memory (the comment at the top says why). The
 * stripe kernel's shared memory: the offsets, (s, z) as two fp16 per (row of the stripe, group)
 * rounded up to 16 bytes, and the batch's fp16 rows.
 */
function stripeLaunch(m: number, n: number, beta2: number, multiprocessors: number, output: "f16" | "f32" | undefined, verify: boolean): { kernel: string; blocks: number; sharedBytes: number; rows?: { stripe: number; batch: number } } {
  if (n % 8 === 0 && beta2 % 8 === 0) {
    const groups = n / beta2;
    for (const { rows: batch, split } of batchChoices(output, verify)) {
      for (const stripe of STRIPE_ROWS) {
        if (stripe < batch) continue;
        const sharedBytes = Math.max(REDUCTION_BYTES, OFFSET_BYTES + Math.ceil((4 * stripe * groups) / 16) * 16 + batch * 2 * n);
        if (sharedBytes > SHARED_LIMIT_BYTES) continue;
        // One kernel per output kind and verify (spqr.cu says why).
        const kernel = `${output === undefined ? (verify ? "lq_spqr_stripes_verify" : "lq_spqr_stripes_check") : `lq_spqr_stripes_${output}${verify ? "_verify" : ""}`}_r${batch}${split ? "s" : ""}`;
        return { kernel, blocks: Math.min(Math.ceil(m / stripe), MAX_GRID_X), sharedBytes, rows: { stripe, batch } };
      }
    }
  }
  return { kernel: "lq_spqr_dequant_verify", blocks: Math.max(1, Math.min(Math.ceil((m * n) / THREADS), multiprocessors * BLOCKS_PER_SM)), sharedBytes: 0 };
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

/** (s_s, z_s, s_z, z_z) per tile, the order of the HF second-order word, as the kernel's ushort4. */
function interleaveStats(t: SpqrTensor): Uint16Array {
  const tiles = t.scaleScale.length;
  const stats = new Uint16Array(4 * tiles);
  for (let k = 0; k < tiles; k++) {
    stats[4 * k] = t.scaleScale[k]!;
    stats[4 * k + 1] = t.zeroScale[k]!;
    stats[4 * k + 2] = t.scaleZero[k]!;
    stats[4 * k + 3] = t.zeroZero[k]!;
  }
  return stats;
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
