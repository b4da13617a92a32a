import { chunkControl, helpers, runChunks, sharedCopy, type ChunkTask } from "../threads/chunk-pool.js";
import type { StatisticOut } from "./stats.js";
import { searchStatisticCodes } from "./stats-search.js";

/**
 * searchStatisticCodes over a group's rows on helper threads too (formats/threads/chunk-pool.ts):
 * rows are independent, so the rows are cut into chunks of whole tiles (beta1 rows, one
 * second-order grid each) and each chunk is searched alone, which gives every row the one-thread
 * result bit for bit. A chunk starts from the rounded codes (`codesIn`, `decodedIn`), never from
 * what a failed attempt left, so the caller can search it again.
 */

/** Below this many weights a group is searched on the calling thread alone (about 1 ms of work). */
export const PARALLEL_MIN_WEIGHTS = 2 ** 11;
/** Chunks per thread, so that a thread that runs slow (or starts late) takes fewer. */
const CHUNKS_PER_THREAD = 4;

/** What a helper receives: the group's values, its statistics in and out, and the shapes. */
export interface SearchTask extends ChunkTask {
  /** The group's [rows][width] values: at byte fittedOffset of `fitted`. */
  fitted: SharedArrayBuffer;
  fittedOffset: number;
  groupDiag: SharedArrayBuffer;
  /** [2][rows]: the rounded scale and zero codes, and their decoded values. */
  codesIn: SharedArrayBuffer;
  decodedIn: SharedArrayBuffer;
  /** [4][tiles] fp16 bits: the scale's scale and zero, the zero's scale and zero. */
  gridBits: SharedArrayBuffer;
  /** [2][rows]: the searched codes and decoded values. */
  codesOut: SharedArrayBuffer;
  decodedOut: SharedArrayBuffer;
  rows: number;
  width: number;
  beta1: number;
  maxq: number;
  statBits: { scale: number; zero: number };
  fixedZero: boolean;
  /** Rows per chunk, a multiple of beta1. */
  chunkRows: number;
}

/**
 * searchStatisticCodes's contract, on threads where the group is large enough (`threads: false`:
 * never). `fitted` on a SharedArrayBuffer (as quantize.ts allocates it) is read in place, other
 * memory copied. Returns how many chunks helpers searched (0: the caller searched them all).
 */
export function searchStatisticCodesThreaded(fitted: Float64Array, width: number, groupDiag: Float64Array, beta1: number, maxq: number, statBits: { scale: number; zero: number }, scale: StatisticOut, zero: StatisticOut, fixedZero = false, options: { threads?: boolean } = {}): number {
  const rows = scale.codes.length;
  const tiles = Math.ceil(rows / beta1);
  const workers = options.threads === false || rows * width < PARALLEL_MIN_WEIGHTS || tiles < 2 ? [] : helpers(new URL("./stats-search-worker.js", import.meta.url));
  if (workers.length === 0) {
    searchStatisticCodes(fitted, width, groupDiag, beta1, maxq, statBits, scale, zero, fixedZero);
    return 0;
  }
  const inPlace = fitted.buffer instanceof SharedArrayBuffer;
  const chunkTiles = Math.ceil(tiles / Math.min(tiles, CHUNKS_PER_THREAD * (workers.length + 1)));
  const chunkCount = Math.ceil(tiles / chunkTiles);
  const used = workers.slice(0, chunkCount - 1);
  const task: SearchTask = {
    control: chunkControl(chunkCount),
    chunkCount,
    fitted: inPlace ? (fitted.buffer as SharedArrayBuffer) : sharedCopy(fitted.subarray(0, rows * width)),
    fittedOffset: inPlace ? fitted.byteOffset : 0,
    groupDiag: sharedCopy(groupDiag),
    codesIn: sharedCopy(scale.codes, zero.codes),
    decodedIn: sharedCopy(scale.decoded.subarray(0, rows), zero.decoded.subarray(0, rows)),
    gridBits: sharedCopy(scale.scaleBits.subarray(0, tiles), scale.zeroBits.subarray(0, tiles), zero.scaleBits.subarray(0, tiles), zero.zeroBits.subarray(0, tiles)),
    codesOut: new SharedArrayBuffer(2 * rows),
    decodedOut: new SharedArrayBuffer(16 * rows),
    rows,
    width,
    beta1,
    maxq,
    statBits,
    fixedZero,
    chunkRows: chunkTiles * beta1,
  };
  const byHelper = runChunks(used, task, (c) => searchChunk(task, c));
  const [codes, decoded] = [new Uint8Array(task.codesOut), new Float64Array(task.decodedOut)];
  scale.codes.set(codes.subarray(0, rows));
  zero.codes.set(codes.subarray(rows, 2 * rows));
  scale.decoded.set(decoded.subarray(0, rows));
  zero.decoded.set(decoded.subarray(rows, 2 * rows));
  return byHelper.filter(Boolean).length;
}

/** Chunk c of a task: its rows' codes and decoded values reset from the inputs, then searched in place. */
export function searchChunk(task: SearchTask, c: number): void {
  const { rows, width, beta1, chunkRows } = task;
  const [r0, r1] = [c * chunkRows, Math.min(rows, (c + 1) * chunkRows)];
  const [t0, t1] = [r0 / beta1, Math.ceil(r1 / beta1)];
  const tiles = Math.ceil(rows / beta1);
  const [codesIn, decodedIn] = [new Uint8Array(task.codesIn), new Float64Array(task.decodedIn)];
  const [codesOut, decodedOut] = [new Uint8Array(task.codesOut), new Float64Array(task.decodedOut)];
  const bits = new Uint16Array(task.gridBits);
  const view = (which: 0 | 1): StatisticOut => {
    const [from, to] = [which * rows + r0, which * rows + r1];
    codesOut.set(codesIn.subarray(from, to), from);
    decodedOut.set(decodedIn.subarray(from, to), from);
    return {
      codes: codesOut.subarray(from, to),
      scaleBits: bits.subarray(2 * which * tiles + t0, 2 * which * tiles + t1),
      zeroBits: bits.subarray((2 * which + 1) * tiles + t0, (2 * which + 1) * tiles + t1),
      decoded: decodedOut.subarray(from, to),
    };
  };
  const fitted = new Float64Array(task.fitted, task.fittedOffset + 8 * r0 * width, (r1 - r0) * width);
  searchStatisticCodes(fitted, width, new Float64Array(task.groupDiag), beta1, task.maxq, task.statBits, view(0), view(1), task.fixedZero);
}
