import { existsSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { REPO_ROOT } from "../helpers/paths.js";

/** The parts of node-llama-cpp 3.22.1 the GGUF tests and benches use (its own types live in .runtimes/). */
export interface NodeLlamaCpp {
  getLlama(options: { gpu: false; build: "never"; logLevel?: unknown }): Promise<{
    loadModel(options: { modelPath: string }): Promise<LlamaModelLike>;
  }>;
  LlamaLogLevel: { error: unknown };
}

export interface LlamaModelLike {
  tokenize(text: string): number[];
  detokenize(tokens: readonly number[]): string;
  createContext(options: { contextSize: number; batchSize?: number; sequences?: number }): Promise<{
    getSequence(): {
      controlledEvaluate(items: unknown[]): Promise<({ next?: { probabilities?: Map<number, number> } } | undefined)[]>;
      clearHistory(): Promise<void>;
      dispose(): void;
    };
    dispose(): Promise<void>;
  }>;
  dispose(): Promise<void>;
}

export const NODE_LLAMA_CPP_ENTRY = join(REPO_ROOT, ".runtimes", "node_modules", "node-llama-cpp", "dist", "index.js");

/** node-llama-cpp from .runtimes/ (installed by test/runtimes/install.mjs, which `npm test` runs first). */
export async function loadNodeLlamaCpp(): Promise<NodeLlamaCpp> {
  if (!existsSync(NODE_LLAMA_CPP_ENTRY)) throw new Error(`node-llama-cpp is not installed in .runtimes/: run "npm run runtimes" (${NODE_LLAMA_CPP_ENTRY})`);
  return (await import(pathToFileURL(NODE_LLAMA_CPP_ENTRY).href)) as NodeLlamaCpp;
}
