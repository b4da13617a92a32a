import { parentPort } from "node:worker_threads";
import { CHUNK_DONE, CHUNK_FAILED, CHUNK_TAKEN, FINISHED, NEXT, STATES, type RefitTask } from "./refit-pool.js";
import { accumulateSystems, partialLength, refitScratch, type RefitData } from "./refit-systems.js";

/**
 * A refit helper thread (refit-pool.ts): takes chunks from the shared counter until none is
 * left, writes each into its slot, and reports it done, or failed, so the caller never waits on
 * a chunk that will not come.
 */
parentPort?.on("message", (task: RefitTask) => {
  const control = new Int32Array(task.control);
  const data: RefitData = { ...task.shape, h: new Float64Array(task.h), y: new Float64Array(task.y), variables: new Int32Array(task.variables) };
  const length = partialLength(data);
  const scratch = refitScratch(data);
  for (let c = Atomics.add(control, NEXT, 1); c < task.chunks.length; c = Atomics.add(control, NEXT, 1)) {
    Atomics.store(control, STATES + c, CHUNK_TAKEN);
    let state = CHUNK_DONE;
    try {
      const [from, to] = task.chunks[c]!;
      accumulateSystems(data, from, to, data.vectorLen, new Float64Array(task.partials, 8 * length * c, length), scratch);
    } catch {
      state = CHUNK_FAILED;
    }
    Atomics.store(control, STATES + c, state);
    Atomics.add(control, FINISHED, 1);
    Atomics.notify(control, FINISHED);
  }
});
