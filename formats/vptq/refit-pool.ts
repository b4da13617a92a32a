import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { accumulateSystems, partialLength, refitScratch, type RefitData } from "./refit-systems.js";

/**
 * The refit's chunks (refit-systems.ts planChunks) computed on worker threads, synchronously:
 * quantizeVptq is a plain function, so the calling thread takes chunks too and then blocks in
 * Atomics.wait until the others are in. Every chunk writes its own slot and the caller adds the
 * slots in chunk order, so the result is the one-thread result bit for bit.
 *
 * Never a hang: a chunk a worker failed on (it reports the failure in the chunk's state), or one
 * still unfinished when the caller has waited STALL_MS without any progress, is computed again by
 * the caller into its own buffer, whose result is used instead of the slot.
 */

/** Chunk states in the control array, after the two counters (0: not taken yet). */
export const CHUNK_TAKEN = 1;
export const CHUNK_DONE = 2;
export const CHUNK_FAILED = 3;
/** control[NEXT]: next chunk to take; control[FINISHED]: chunks done or failed; control[STATES + c]: chunk c's state. */
export const NEXT = 0;
export const FINISHED = 1;
export const STATES = 2;
const STALL_MS = 30_000;

/** Below this much work (additions), threads cost more than they save. */
export const PARALLEL_MIN_WORK = 2 ** 22;

/** What a worker receives: shared buffers and the shapes. */
export interface RefitTask {
  control: SharedArrayBuffer;
  h: SharedArrayBuffer;
  y: SharedArrayBuffer;
  variables: SharedArrayBuffer;
  partials: SharedArrayBuffer;
  chunks: Array<[number, number]>;
  shape: Omit<RefitData, "h" | "y" | "variables">;
}

let workers: Worker[] | undefined;

/** Threads besides the caller: the cores less one, at most 15 (there are at most 16 chunks); none on one core. */
function helperCount(): number {
  return Math.max(0, Math.min(15, availableParallelism() - 1));
}

function pool(): Worker[] {
  if (workers === undefined) {
    workers = Array.from({ length: helperCount() }, () => {
      const worker = new Worker(new URL("./refit-worker.js", import.meta.url));
      // Idle helpers must not keep the process alive; a dead one is simply not replaced.
      worker.unref();
      worker.on("error", () => {
        workers = workers?.filter((w) => w !== worker);
      });
      return worker;
    });
  }
  return workers;
}

function shared<T extends Float64Array | Int32Array>(array: T): SharedArrayBuffer {
  const buffer = new SharedArrayBuffer(array.byteLength);
  new Uint8Array(buffer).set(new Uint8Array(array.buffer, array.byteOffset, array.byteLength));
  return buffer;
}

/**
 * Each chunk's partial systems ([chunk][partialLength]), computed by the caller and, when the work
 * is large enough and cores are free, by helper threads.
 */
export function computeChunks(data: RefitData, chunks: Array<[number, number]>, options: { threads?: boolean } = {}): Float64Array[] {
  const length = partialLength(data);
  const work = chunks.reduce((n, [from, to]) => n + (to - from), 0) * data.size * data.size;
  const helpers = options.threads === false || work < PARALLEL_MIN_WORK || chunks.length < 2 ? [] : pool().slice(0, chunks.length - 1);
  if (helpers.length === 0) {
    const scratch = refitScratch(data);
    return chunks.map(([from, to]) => {
      const out = new Float64Array(length);
      accumulateSystems(data, from, to, data.vectorLen, out, scratch);
      return out;
    });
  }
  const control = new Int32Array(new SharedArrayBuffer(4 * (STATES + chunks.length)));
  const partialsBuffer = new SharedArrayBuffer(8 * length * chunks.length);
  const task: RefitTask = {
    control: control.buffer as SharedArrayBuffer,
    h: shared(data.h),
    y: shared(data.y),
    variables: shared(data.variables),
    partials: partialsBuffer,
    chunks,
    shape: { rows: data.rows, size: data.size, vectorLen: data.vectorLen, unknowns: data.unknowns, outlierSize: data.outlierSize, hasResidual: data.hasResidual },
  };
  for (const worker of helpers) worker.postMessage(task);
  const slots = chunks.map((_, c) => new Float64Array(partialsBuffer, 8 * length * c, length));
  const scratch = refitScratch(data);
  const own = new Map<number, Float64Array>();
  const computeOwn = (c: number): void => {
    const out = new Float64Array(length);
    accumulateSystems(data, chunks[c]![0], chunks[c]![1], data.vectorLen, out, scratch);
    own.set(c, out);
  };
  for (let c = Atomics.add(control, NEXT, 1); c < chunks.length; c = Atomics.add(control, NEXT, 1)) {
    Atomics.store(control, STATES + c, CHUNK_TAKEN);
    computeOwn(c);
    Atomics.store(control, STATES + c, CHUNK_DONE);
    Atomics.add(control, FINISHED, 1);
  }
  let seen = Atomics.load(control, FINISHED);
  let since = Date.now();
  while (seen < chunks.length) {
    Atomics.wait(control, FINISHED, seen, 100);
    const now = Atomics.load(control, FINISHED);
    if (now !== seen) {
      seen = now;
      since = Date.now();
    } else if (Date.now() - since > STALL_MS) {
      break;
    }
  }
  return slots.map((slot, c) => {
    const mine = own.get(c);
    if (mine !== undefined) return mine;
    if (Atomics.load(control, STATES + c) === CHUNK_DONE) return slot;
    // Failed, or stalled: computed here, and the helper's slot (if it ever finishes) ignored.
    computeOwn(c);
    return own.get(c)!;
  });
}
