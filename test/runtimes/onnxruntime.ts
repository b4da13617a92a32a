import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { REPO_ROOT } from "../helpers/paths.js";

/**
 * The parts of onnxruntime-node 1.30.0 the ONNX tests use (its own types live in .runtimes/).
 * Sessions run on the bundled CPU execution provider; install.mjs installs the package with
 * ONNXRUNTIME_NODE_INSTALL=skip, so no GPU provider is present to be picked.
 */
export interface OnnxRuntime {
  InferenceSession: {
    create(model: string | Uint8Array, options?: OrtSessionOptions): Promise<OrtSession>;
  };
  Tensor: new (type: "float32", data: Float32Array, dims: readonly number[]) => OrtTensor;
}

export interface OrtSessionOptions {
  executionProviders?: string[];
  /** 0 verbose … 4 fatal; 3 keeps test output free of onnxruntime's warnings. */
  logSeverityLevel?: 0 | 1 | 2 | 3 | 4;
  intraOpNumThreads?: number;
}

export interface OrtTensor {
  type: string;
  dims: readonly number[];
  data: unknown;
}

export interface OrtSession {
  inputNames: readonly string[];
  outputNames: readonly string[];
  run(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>;
  release(): Promise<void>;
}

export const ONNXRUNTIME_NODE_ENTRY = join(REPO_ROOT, ".runtimes", "node_modules", "onnxruntime-node", "dist", "index.js");

/** onnxruntime-node from .runtimes/ (installed by test/runtimes/install.mjs, which `npm test` runs first). */
export function loadOnnxRuntime(): OnnxRuntime {
  if (!existsSync(ONNXRUNTIME_NODE_ENTRY)) throw new Error(`onnxruntime-node is not installed in .runtimes/: run "npm run runtimes" (${ONNXRUNTIME_NODE_ENTRY})`);
  // A CommonJS package: require() gives its exports object as is.
  return createRequire(import.meta.url)(ONNXRUNTIME_NODE_ENTRY) as OnnxRuntime;
}
