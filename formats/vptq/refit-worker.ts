import { parentPort } from "node:worker_threads";
import { serveChunks } from "../threads/chunk-pool.js";
import type { RefitTask } from "./refit-pool.js";
import { accumulateSystems, partialLength, refitScratch, type RefitData } from "./refit-systems.js";

/** A refit helper thread (refit-pool.ts): each chunk it takes goes into that chunk's slot. */
parentPort?.on("message", (task: RefitTask) => {
  const data: RefitData = { ...task.shape, h: new Float64Array(task.h), y: new Float64Array(task.y), variables: new Int32Array(task.variables) };
  const length = partialLength(data);
  const scratch = refitScratch(data);
  serveChunks(task, (c) => {
    const [from, to] = task.chunks[c]!;
    accumulateSystems(data, from, to, data.vectorLen, new Float64Array(task.partials, 8 * length * c, length), scratch);
  });
});
