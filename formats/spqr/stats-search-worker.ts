import { parentPort } from "node:worker_threads";
import { serveChunks } from "../threads/chunk-pool.js";
import { searchChunk, type SearchTask } from "./stats-search-pool.js";

/** A statistic-search helper thread (stats-search-pool.ts): each chunk it takes is searched into the shared outputs. */
parentPort?.on("message", (task: SearchTask) => serveChunks(task, (c) => searchChunk(task, c)));
