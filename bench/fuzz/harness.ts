import { getHeapStatistics } from "node:v8";
import type { Checkpoint } from "../../converters/checkpoint.js";
import { isLmpackError } from "../../formats/errors.js";

/**
 * What every fuzz target shares: the verdict on one input. A reader fed arbitrary bytes may
 * succeed or throw one of lmpack's typed errors (isLmpackError: FormatError, VerificationError,
 * ConversionError...); anything else (a TypeError, a RangeError from an unchecked read, a stack
 * overflow) propagates and Jazzer.js reports it as a finding, as it does a hang (its --timeout) or
 * an out-of-memory abort (libFuzzer's -rss_limit_mb, Node's --max-old-space-size).
 *
 * Memory is judged per input as well: no reader may allocate more than the input justifies.
 * Inputs are at most MAX_INPUT_BYTES, so a run whose ArrayBuffer memory grows by more than
 * MAX_RUN_EXTERNAL_BYTES allocated from a length field, not from bytes it had: that is a finding
 * too, long before the RSS limit would notice it.
 */

/** libFuzzer's -max_len for every target: seeds are smaller, and bigger inputs only slow the search. */
export const MAX_INPUT_BYTES = 64 * 1024;

/**
 * ArrayBuffer growth allowed during one input. The widest legitimate expansion is a dequantization
 * (2-bit codes to f32 weights is 16 bytes out per byte in, codebooks aside), so 64 KiB of input
 * justifies a few MiB; 64 MiB leaves a wide margin and still catches an allocation sized by a
 * hostile count long before the process's RSS limit does.
 */
export const MAX_RUN_EXTERNAL_BYTES = 64 * 1024 * 1024;

/** A reader's allocation that the input's size does not justify. */
export class AllocationFinding extends Error {
  override readonly name = "AllocationFinding";
}

/**
 * Runs `read` on one input: resolves when it succeeds or throws a typed lmpack error; rejects (a
 * finding) on any other error or when ArrayBuffer memory grew past the cap during the run. V8
 * collects garbage lazily, so buffers the run allocated are still counted when it returns.
 */
export async function typedErrorsOnly(data: Uint8Array, read: () => Promise<void>): Promise<void> {
  const before = getHeapStatistics().external_memory;
  try {
    await read();
  } catch (error) {
    if (!isLmpackError(error)) throw error;
  }
  checkGrowth(data, before);
}

/** The same verdict for synchronous parsers (their targets run under Jazzer.js's faster --sync mode). */
export function typedErrorsOnlySync(data: Uint8Array, read: () => void): void {
  const before = getHeapStatistics().external_memory;
  try {
    read();
  } catch (error) {
    if (!isLmpackError(error)) throw error;
  }
  checkGrowth(data, before);
}

function checkGrowth(data: Uint8Array, externalBytesBefore: number): void {
  const grown = getHeapStatistics().external_memory - externalBytesBefore;
  if (grown > MAX_RUN_EXTERNAL_BYTES) {
    throw new AllocationFinding(`an input of ${data.length} bytes made the reader allocate ${grown} bytes of ArrayBuffers (cap ${MAX_RUN_EXTERNAL_BYTES})`);
  }
}

/** Small chunks, so the chunked paths (element and block boundaries) are exercised too. */
const CHUNK_BYTES = 4096;

/**
 * Everything a consumer of a checkpoint would do: each tensor's packed form loaded, then its data
 * streamed. Each tensor on its own: one tensor's typed error must not hide the next tensor's bugs.
 */
export async function consumeCheckpoint(checkpoint: Checkpoint): Promise<void> {
  try {
    for (const entry of checkpoint.tensors) {
      try {
        if (entry.packed !== undefined) await entry.packed.load();
        for await (const _chunk of entry.readChunks(CHUNK_BYTES));
      } catch (error) {
        if (!isLmpackError(error)) throw error;
      }
    }
  } finally {
    await checkpoint.close();
  }
}

/** One step of a target: a typed error ends the step, not the input (later steps still run). */
export function ignoringTypedErrors(step: () => void): void {
  try {
    step();
  } catch (error) {
    if (!isLmpackError(error)) throw error;
  }
}
