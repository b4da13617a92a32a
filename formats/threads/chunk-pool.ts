import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";

/**
 * Work split into numbered chunks, computed synchronously by the calling thread and by helper
 * threads together: the quantizers are plain functions, so the caller takes chunks too and then
 * blocks in Atomics.wait until the others are in. Chunks are taken from a shared counter, so a
 * slow thread takes fewer. Used by the VPTQ codebook refit (formats/vptq/refit-pool.ts) and the
 * SpQR statistic search (formats/spqr/stats-search-pool.ts), each with its own worker script that
 * calls serveChunks.
 *
 * Never a hang: a chunk a helper failed on (it reports the failure in the chunk's state), or one
 * still unfinished when the caller has waited STALL_MS without any progress, is computed again by
 * the caller, and the helper's result for it (if it ever comes) is not used.
 */

/** Chunk states in the control array, after the two counters (0: not taken yet). */
const CHUNK_TAKEN = 1;
const CHUNK_DONE = 2;
const CHUNK_FAILED = 3;
/** control[NEXT]: next chunk to take; control[FINISHED]: chunks done or failed; control[STATES + c]: chunk c's state. */
const NEXT = 0;
const FINISHED = 1;
const STATES = 2;
const STALL_MS = 30_000;

/** What every task posted to a helper carries: the control array's buffer and the chunk count. */
export interface ChunkTask {
  control: SharedArrayBuffer;
  chunkCount: number;
}

/** A new control array for `chunkCount` chunks, shared with the helpers through a ChunkTask. */
export function chunkControl(chunkCount: number): SharedArrayBuffer {
  return new SharedArrayBuffer(4 * (STATES + chunkCount));
}

/** The arrays' bytes one after the other, in a new shared buffer: how a task hands its inputs to the helpers. */
export function sharedCopy(...arrays: ArrayBufferView[]): SharedArrayBuffer {
  const buffer = new SharedArrayBuffer(arrays.reduce((n, a) => n + a.byteLength, 0));
  const target = new Uint8Array(buffer);
  let at = 0;
  for (const a of arrays) {
    target.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), at);
    at += a.byteLength;
  }
  return buffer;
}

const pools = new Map<string, Worker[]>();

/** Threads besides the caller: the cores less one, at most 15; none on one core. */
export function helperCount(): number {
  return Math.max(0, Math.min(15, availableParallelism() - 1));
}

/** The helper threads running `script` (started on first use, kept for the process). */
export function helpers(script: URL): Worker[] {
  let workers = pools.get(script.href);
  if (workers === undefined) {
    workers = Array.from({ length: helperCount() }, () => {
      const worker = new Worker(script);
      // Idle helpers must not keep the process alive; a dead one is simply not replaced.
      worker.unref();
      worker.on("error", () => pools.set(script.href, (pools.get(script.href) ?? []).filter((w) => w !== worker)));
      return worker;
    });
    pools.set(script.href, workers);
  }
  return workers;
}

/**
 * Posts `task` to `workers` and computes chunks with `own` until none is left, then waits for the
 * rest. Returns, per chunk, true where a helper's result stands, false where `own` computed it
 * (taken by the caller, or failed or stalled in a helper).
 */
export function runChunks(workers: Worker[], task: ChunkTask, own: (chunk: number) => void): boolean[] {
  const control = new Int32Array(task.control);
  const count = task.chunkCount;
  for (const worker of workers) worker.postMessage(task);
  const mine = new Array<boolean>(count).fill(false);
  for (let c = Atomics.add(control, NEXT, 1); c < count; c = Atomics.add(control, NEXT, 1)) {
    Atomics.store(control, STATES + c, CHUNK_TAKEN);
    own(c);
    mine[c] = true;
    Atomics.store(control, STATES + c, CHUNK_DONE);
    Atomics.add(control, FINISHED, 1);
  }
  let seen = Atomics.load(control, FINISHED);
  let since = Date.now();
  while (seen < count) {
    Atomics.wait(control, FINISHED, seen, 100);
    const now = Atomics.load(control, FINISHED);
    if (now !== seen) {
      seen = now;
      since = Date.now();
    } else if (Date.now() - since > STALL_MS) {
      break;
    }
  }
  return mine.map((byCaller, c) => {
    if (byCaller) return false;
    if (Atomics.load(control, STATES + c) === CHUNK_DONE) return true;
    own(c);
    return false;
  });
}

/** A helper's side of runChunks: takes chunks until none is left, reporting each done or failed. */
export function serveChunks(task: ChunkTask, compute: (chunk: number) => void): void {
  const control = new Int32Array(task.control);
  for (let c = Atomics.add(control, NEXT, 1); c < task.chunkCount; c = Atomics.add(control, NEXT, 1)) {
    Atomics.store(control, STATES + c, CHUNK_TAKEN);
    let state = CHUNK_DONE;
    try {
      compute(c);
    } catch {
      state = CHUNK_FAILED;
    }
    Atomics.store(control, STATES + c, state);
    Atomics.add(control, FINISHED, 1);
    Atomics.notify(control, FINISHED);
  }
}
