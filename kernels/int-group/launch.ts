import { KernelError } from "../../formats/errors.js";
import type { DequantPrecision } from "../../formats/int-group/reference.js";
import { groupCount, maxCode, type IntGroupTensor } from "../../formats/int-group/types.js";
import { bytesOf } from "../../formats/packed-array.js";
import { checkStatus } from "../cuda/status.js";
import type { DevicePointer } from "../cuda/driver.js";
import type { GpuEngine } from "../engine.js";
import { sumPartials, VERIFY_PARTIAL_BYTES, type VerifyStats } from "../cuda/verify.js";
import { runLaunches, type BatchTimes, type LaunchTimingOptions } from "../cuda/timing.js";

/**
 * Host side of kernels/int-group/int-group.cu: checks the tensor, uploads its fields, launches
 * `lq_int_group_dequant_verify`, and returns the weights ([N][K], float32 with the same bits as
 * formats/int-group/reference.ts, or those values rounded to fp16) and, given the source
 * weights, the verify statistics.
 *
 * Launch: a plain dequant without g_idx (the shapes dequantGrid accepts) runs `lq_int_group_dequant`
 * over a grid as large as the work: a block per BLOCK_THREADS · THREAD_PIECES pieces of P weights,
 * scheduled by the hardware, which streams a write-heavy pass faster than a persistent wave
 * (bench/cuda/stream-ceiling.cu on an H100: 91-92 % of the copy against 84-85 % for fp16 output
 * of byte codes, 89-90 % against 80-84 % for float32). Verify alone without g_idx (verifyGrid)
 * runs `lq_int_group_verify`, the layer as one stream of 4-weight pieces over a persistent grid
 * (int-group-verify.cuh). Everything else (verify with weights, act-order, odd shapes) runs
 * `lq_int_group_dequant_verify` (launchShape): a persistent grid of THREADS-thread
 * blocks, at most BLOCKS_PER_SM per multiprocessor (what its __launch_bounds__ guarantees to be
 * resident together), so every block starts at once and walks its share of the layer in rounds;
 * fewer where the layer has less work than that. One verify partial per block.
 */

/** LQ_INT_GROUP_THREADS and LQ_INT_GROUP_MIN_BLOCKS in int-group.cu. */
const THREADS = 256;
const BLOCKS_PER_SM = 4;
const WARPS_PER_BLOCK = THREADS / 32;
/**
 * Pieces per lane and round of the span walk (int-group.cu lq_int_group_pieces): a span is
 * 32 · pieces · P consecutive columns of a row, P = 8 weights with fp16 output, 4 otherwise.
 */
const SPAN_PIECES = { write: 4, verifyF16: 2, verifyF32: 4 } as const;
/** Most act-order groups whose (scale, zero) pairs the kernel stages in shared memory (8 bytes each): BLOCKS_PER_SM blocks still fit. */
const MAX_STAGED_GROUPS = 2048;
/** Longest row: int-group.cu indexes columns with int32 (LQ_INT_GROUP_MAX_COLS). */
const MAX_ROW_WEIGHTS = 2 ** 30;
const ROUNDING = { F32: 0, F16: 1, BF16: 2 } as const;
/** LQ_INT_GROUP_DEQUANT_THREADS and LQ_INT_GROUP_DEQUANT_PIECES in int-group-dequant.cuh: threads per block and pieces per thread of lq_int_group_dequant. */
const BLOCK_THREADS = 256;
const THREAD_PIECES = 2;
/** lq_int_group_dequant indexes pieces and scales with uint32, and a grid has at most 2^31 − 1 blocks. */
const MAX_U32 = 2 ** 32 - 1;
/** LQ_INT_GROUP_VERIFY_THREADS and LQ_INT_GROUP_VERIFY_PIECES in int-group-verify.cuh: threads per block and pieces (of 4 weights) per thread and round of lq_int_group_verify. */
const VERIFY_THREADS = 256;
const VERIFY_PIECES = 4;
const MAX_GRID_BLOCKS = 2 ** 31 - 1;

/**
 * int-group.cuh lq_make_divider(d) for 0 < d < 2^31, as the three uint32 arguments (m, shift1,
 * shift2) of lq_int_group_dequant, which checks them exact: n / d = (t + ((n − t) >> shift1)) >>
 * shift2 with t = ⌊m·n / 2^32⌋, l = ⌈log2 d⌉, m = ⌊2^32·(2^l − d) / d⌋ + 1.
 */
function divider(d: number): [number, number, number] {
  const l = d <= 1 ? 0 : 32 - Math.clz32(d - 1);
  const m = Number((((1n << BigInt(l)) - BigInt(d)) << 32n) / BigInt(d)) + 1;
  return [m, Math.min(l, 1), Math.max(l - 1, 0)];
}

/**
 * The grid of lq_int_group_dequant, or undefined where the layer is not its shape (g_idx, K or the
 * group size not a multiple of P, more pieces or scales than uint32 indexes, or more blocks than
 * a grid holds): then lq_int_group_dequant_verify writes the weights.
 */
function dequantGrid(N: number, K: number, groupSize: number, groups: number, actOrder: boolean, f16: boolean): number | undefined {
  const P = f16 ? 8 : 4;
  if (actOrder || K % P !== 0 || groupSize % P !== 0 || groupSize > 2 ** 31 - 1) return undefined;
  const pieces = (N * K) / P;
  const blocks = Math.ceil(pieces / (BLOCK_THREADS * THREAD_PIECES));
  return pieces <= MAX_U32 && groups * N <= MAX_U32 && blocks <= MAX_GRID_BLOCKS ? blocks : undefined;
}

/**
 * The persistent grid of lq_int_group_verify (at most BLOCKS_PER_SM blocks per multiprocessor,
 * what its __launch_bounds__ keeps resident together; fewer for a small layer), or undefined where
 * the layer is not its shape (g_idx, K or the group size not a multiple of 4, more pieces or
 * scales than uint32 indexes): then lq_int_group_dequant_verify verifies it.
 */
function verifyGrid(multiprocessors: number, N: number, K: number, groupSize: number, groups: number, actOrder: boolean): number | undefined {
  if (actOrder || K % 4 !== 0 || groupSize % 4 !== 0 || groupSize > 2 ** 31 - 1) return undefined;
  const pieces = (N * K) / 4;
  if (pieces > MAX_U32 || groups * N > MAX_U32) return undefined;
  return Math.max(1, Math.min(Math.ceil(pieces / (VERIFY_THREADS * VERIFY_PIECES)), multiprocessors * BLOCKS_PER_SM));
}

/**
 * The grid and dynamic shared memory for one layer, mirroring the kernel's choice of walk:
 * without g_idx (K and group size multiples of P) warps take spans of a row, so the work is
 * counted in spans, 8 warps a block; with g_idx a block takes whole rows, with the row's
 * (scale, zero) pairs staged in shared memory when there are at most MAX_STAGED_GROUPS groups
 * (else, and for odd shapes, the per-element walk, also a block per row). The kernel gives the
 * same weights on any grid; this only sizes it.
 */
function launchShape(multiprocessors: number, N: number, K: number, groupSize: number, groups: number, actOrder: boolean, f16: boolean, verify: boolean): { blocks: number; sharedBytes: number } {
  const P = f16 ? 8 : 4;
  const maxBlocks = Math.max(1, multiprocessors * BLOCKS_PER_SM);
  if (!actOrder && K % P === 0 && groupSize % P === 0) {
    const pieces = !verify ? SPAN_PIECES.write : f16 ? SPAN_PIECES.verifyF16 : SPAN_PIECES.verifyF32;
    const spans = N * Math.ceil(K / (32 * pieces * P));
    return { blocks: Math.min(maxBlocks, Math.ceil(spans / WARPS_PER_BLOCK)), sharedBytes: 0 };
  }
  const staged = actOrder && K % P === 0 && groups <= MAX_STAGED_GROUPS;
  return { blocks: Math.min(maxBlocks, N), sharedBytes: staged ? groups * 8 : 0 };
}

export interface IntGroupGpuOptions extends LaunchTimingOptions {
  /** As formats/int-group/reference.ts (default "scale-dtype"). */
  precision?: DequantPrecision;
  negativeZero?: "positive" | "keep";
  /** Source weights float32 [N][K]: also compute the verify statistics. */
  reference?: Float32Array;
  /** Return the weights (default true; false for verify alone, which then writes none). */
  weights?: boolean;
  /** Element type of the returned weights: float32 (default), or fp16 bits rounded to nearest even. */
  output?: "f32" | "f16";
  tensorName?: string;
}

export interface IntGroupGpuResult {
  /** Float32Array for output "f32", Uint16Array of fp16 bits for "f16". */
  weights: Float32Array | Uint16Array | undefined;
  stats: VerifyStats | undefined;
  /** Kernel time of the first launch, measured with CUDA events. */
  kernelMilliseconds: number;
  /** Kernel time of every launch (with `launches`). */
  launchMilliseconds?: number[];
  /** With `batchTiming`: mean kernel time per launch of each batch of back-to-back launches. */
  batchTimes?: BatchTimes;
}

export function dequantIntGroupGpu(engine: GpuEngine, t: IntGroupTensor, options: IntGroupGpuOptions = {}): IntGroupGpuResult {
  const { outFeatures: N, inFeatures: K } = t;
  const { groupSize, bits, scaleDtype } = t.params;
  const shape = `${N}×${K} ${bits}-bit g${groupSize}`;
  const where = { tensor: options.tensorName };
  const groups = groupCount(K, groupSize);
  const refuse = (detail: string, expected: unknown, actual: unknown) => new KernelError("LAUNCH_REFUSED", `int-group ${shape}: ${detail}`, { ...where, expected, actual });
  if (!(N > 0 && K > 0 && groupSize > 0)) throw refuse("empty or impossible shape", "N, K, group size > 0", [N, K, groupSize]);
  // The kernel walks a row's columns with 32-bit indices (a span past the row's end must not wrap).
  if (K > MAX_ROW_WEIGHTS) throw refuse("row too long for the kernel's 32-bit column index", `K ≤ ${MAX_ROW_WEIGHTS}`, K);
  if (t.codes.length !== N * K) throw refuse("codes length", N * K, t.codes.length);
  if (t.scales.length !== groups * N || t.zeros.length !== groups * N) throw refuse("scales/zeros length", groups * N, [t.scales.length, t.zeros.length]);
  if (t.gIdx !== undefined) {
    if (t.gIdx.length !== K) throw refuse("g_idx length", K, t.gIdx.length);
    const at = t.gIdx.findIndex((g) => !(g >= 0 && g < groups));
    if (at >= 0) throw refuse(`g_idx[${at}] is not a group`, `0 … ${groups - 1}`, t.gIdx[at]);
  }
  if (options.reference !== undefined && options.reference.length !== N * K) throw refuse("reference length", N * K, options.reference.length);

  const context = engine.context;
  const module = engine.module("int-group");
  const total = N * K;
  const f16 = options.output === "f16";
  const wantWeights = options.weights ?? true;
  const grid = wantWeights && options.reference === undefined ? dequantGrid(N, K, groupSize, groups, t.gIdx !== undefined, f16) : undefined;
  const verifyAlone = !wantWeights && options.reference !== undefined ? verifyGrid(context.info.multiprocessors, N, K, groupSize, groups, t.gIdx !== undefined) : undefined;
  const walkLaunch = launchShape(context.info.multiprocessors, N, K, groupSize, groups, t.gIdx !== undefined, f16, options.reference !== undefined);
  // The partials: one per block of the kernel launched.
  const blocks = verifyAlone ?? walkLaunch.blocks;
  const sharedBytes = walkLaunch.sharedBytes;
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
    const scales = upload(bytesOf(t.scales));
    const zeros = upload(bytesOf(t.zeros));
    const gIdx = t.gIdx === undefined ? 0n : upload(bytesOf(t.gIdx));
    const out = wantWeights ? alloc(total * (f16 ? 2 : 4)) : 0n;
    const reference = options.reference === undefined ? 0n : upload(bytesOf(options.reference));
    const partials = options.reference === undefined ? 0n : alloc(blocks * VERIFY_PARTIAL_BYTES);
    const status = alloc(4);
    const rounding = (options.precision ?? "scale-dtype") === "f32" ? ROUNDING.F32 : ROUNDING[scaleDtype];
    const args = [
      { pointer: codes }, { pointer: scales }, { pointer: zeros }, { pointer: gIdx }, { pointer: out }, { pointer: reference }, { pointer: partials },
      { i64: N }, { i64: K }, { i64: groupSize }, { i64: groups }, { u32: maxCode(bits) }, { i32: rounding }, { i32: options.negativeZero === "keep" ? 1 : 0 }, { i32: f16 ? 1 : 0 }, { pointer: status },
    ];
    let launch = () => module.launch("lq_int_group_dequant_verify", { grid: [blocks], block: [THREADS], sharedBytes }, args);
    if (grid !== undefined) {
      // The dividers for K / P (a piece's row) and the group size (its group).
      const dividers = [...divider(K / (f16 ? 8 : 4)), ...divider(groupSize)].map((u32) => ({ u32 }));
      const dequantArgs = [
        { pointer: codes }, { pointer: scales }, { pointer: zeros }, { pointer: out },
        { i64: N }, { i64: K }, { i64: groupSize }, { i64: groups }, { u32: maxCode(bits) }, { i32: rounding }, { i32: options.negativeZero === "keep" ? 1 : 0 }, { i32: f16 ? 1 : 0 },
        ...dividers, { pointer: status },
      ];
      launch = () => module.launch("lq_int_group_dequant", { grid: [grid], block: [BLOCK_THREADS] }, dequantArgs);
    } else if (verifyAlone !== undefined) {
      // The dividers for K / 4 (a piece's row) and the group size (its group).
      const dividers = [...divider(K / 4), ...divider(groupSize)].map((u32) => ({ u32 }));
      const verifyArgs = [
        { pointer: codes }, { pointer: scales }, { pointer: zeros }, { pointer: reference }, { pointer: partials },
        { i64: N }, { i64: K }, { i64: groupSize }, { i64: groups }, { u32: maxCode(bits) }, { i32: rounding }, { i32: options.negativeZero === "keep" ? 1 : 0 },
        ...dividers, { pointer: status },
      ];
      launch = () => module.launch("lq_int_group_verify", { grid: [verifyAlone], block: [VERIFY_THREADS] }, verifyArgs);
    }
    const { launchMilliseconds, batchTimes } = runLaunches(context, status, launch, options);
    checkStatus(context, status, { format: "int-group", ...(options.tensorName === undefined ? {} : { tensor: options.tensorName }), shape });
    const weights = !wantWeights ? undefined : f16 ? new Uint16Array(total) : new Float32Array(total);
    if (weights !== undefined) context.download(out, new Uint8Array(weights.buffer));
    const stats = options.reference === undefined ? undefined : sumPartials(context, partials, blocks);
    return { weights, stats, kernelMilliseconds: launchMilliseconds[0]!, launchMilliseconds, ...(batchTimes === undefined ? {} : { batchTimes }) };
  } finally {
    for (const pointer of allocated) context.free(pointer);
  }
}
