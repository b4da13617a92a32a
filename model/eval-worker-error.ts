import { isLmpackError, LmpackError, type ErrorContext } from "../formats/errors.js";

export type EvalWorkerErrorCode =
  // the worker thread threw (an uncaught error in the forward or scoring)
  | "WORKER_FAILED"
  // the worker ran out of its heap (ERR_WORKER_OUT_OF_MEMORY)
  | "WORKER_OUT_OF_MEMORY"
  // the worker stopped on its own (process.exit, a fatal error) while the evaluation still needed it
  | "WORKER_EXITED";

/**
 * An evaluation worker of model/perplexity-parallel.ts died before the evaluation finished. Names
 * the worker and the window it held, so a crash on one window can be reproduced with --threads 1.
 * The exit code follows the cause: a typed lmpack error raised inside the worker keeps its own;
 * running out of memory is the machine's limit (2, like KernelError's OUT_OF_MEMORY); anything
 * else is a bug in lmpack (70, the CLI's internal-error code).
 */
export class EvalWorkerError extends LmpackError {
  override readonly name = "EvalWorkerError";
  readonly exitCode: number;
  constructor(
    readonly code: EvalWorkerErrorCode,
    /** Index of the worker thread (0-based) in the evaluation's pool. */
    readonly worker: number,
    /** Index of the window the worker was scoring, or undefined when it held none. */
    readonly window: number | undefined,
    detail: string,
    context: ErrorContext = {},
  ) {
    super(`evaluation worker ${worker} (${window === undefined ? "holding no window" : `scoring window ${window}`}): ${detail}`, context);
    this.exitCode = code === "WORKER_OUT_OF_MEMORY" ? 2 : isLmpackError(context.cause) ? context.cause.exitCode : 70;
  }
}
