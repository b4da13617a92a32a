import { isLmpackError } from "../formats/errors.js";

/** Exit codes: 0 ok, 1 usage, 2 invalid input (or I/O), 3 verification failed, 70 internal error (a bug). */
export const EXIT = { ok: 0, usage: 1, invalidInput: 2, verificationFailed: 3, internal: 70 } as const;

/**
 * Prints an error as one line on stderr (or as JSON on stdout with --json) and returns the
 * exit code. Stack traces appear only with LMPACK_DEBUG=1: users get the file, tensor and byte.
 */
export function reportError(error: unknown, json: boolean): number {
  if (process.env["LMPACK_DEBUG"] === "1") console.error(error);
  if (isLmpackError(error)) {
    if (json) console.log(JSON.stringify({ ok: false, error: error.toJSON() }));
    else console.error(`lmpack: error ${error.code}: ${error.message}`);
    return error.exitCode;
  }
  const message = error instanceof Error ? error.message : String(error);
  if (json) console.log(JSON.stringify({ ok: false, error: { name: "InternalError", code: "INTERNAL", message } }));
  else console.error(`lmpack: internal error: ${message} (this is a bug in lmpack; rerun with LMPACK_DEBUG=1 and report it)`);
  return EXIT.internal;
}
