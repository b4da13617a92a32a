import { chunkControl, helpers, runChunks, sharedCopy, type ChunkTask } from "../threads/chunk-pool.js";
import { accumulateSystems, partialLength, refitScratch, type RefitData } from "./refit-systems.js";

/**
 * The refit's chunks (refit-systems.ts planChunks) computed on helper threads too
 * (formats/threads/chunk-pool.ts): every chunk writes its own slot and the caller adds the slots
 * in chunk order, so the result is the one-thread result bit for bit. A chunk the caller computed
 * (its own, or one a helper failed on or stalled in) comes from the caller's own buffer.
 */

/** Below this much work (additions), threads cost more than they save. */
export const PARALLEL_MIN_WORK = 2 ** 22;

/** What a worker receives: shared buffers and the shapes. */
export interface RefitTask extends ChunkTask {
  h: SharedArrayBuffer;
  y: SharedArrayBuffer;
  variables: SharedArrayBuffer;
  partials: SharedArrayBuffer;
  chunks: Array<[number, number]>;
  shape: Omit<RefitData, "h" | "y" | "variables">;
}

/**
 * Each chunk's partial systems ([chunk][partialLength]), computed by the caller and, when the work
 * is large enough and cores are free, by helper threads.
 */
export function computeChunks(data: RefitData, chunks: Array<[number, number]>, options: { threads?: boolean } = {}): Float64Array[] {
  const length = partialLength(data);
  const work = chunks.reduce((n, [from, to]) => n + (to - from), 0) * data.size * data.size;
  const workers = options.threads === false || work < PARALLEL_MIN_WORK || chunks.length < 2 ? [] : helpers(new URL("./refit-worker.js", import.meta.url)).slice(0, chunks.length - 1);
  const scratch = refitScratch(data);
  const own = new Map<number, Float64Array>();
  const computeOwn = (c: number): void => {
    const out = new Float64Array(length);
    accumulateSystems(data, chunks[c]![0], chunks[c]![1], data.vectorLen, out, scratch);
    own.set(c, out);
  };
  if (workers.length === 0) {
    chunks.forEach((_, c) => computeOwn(c));
    return chunks.map((_, c) => own.get(c)!);
  }
  const partialsBuffer = new SharedArrayBuffer(8 * length * chunks.length);
  const task: RefitTask = {
    control: chunkControl(chunks.length),
    chunkCount: chunks.length,
    h: sharedCopy(data.h),
    y: sharedCopy(data.y),
    variables: sharedCopy(data.variables),
    partials: partialsBuffer,
    chunks,
    shape: { rows: data.rows, size: data.size, vectorLen: data.vectorLen, unknowns: data.unknowns, outlierSize: data.outlierSize, hasResidual: data.hasResidual },
  };
  const byHelper = runChunks(workers, task, computeOwn);
  return chunks.map((_, c) => (byHelper[c] ? new Float64Array(partialsBuffer, 8 * length * c, length) : own.get(c)!));
}
