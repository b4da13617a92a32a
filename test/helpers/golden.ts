import * as assert from "uvu/assert";
import type { PackedArray } from "../../formats/packed-array.js";

/** An array of a golden file; a missing one fails the test, naming it. */
export function goldenArray(arrays: Map<string, PackedArray>, name: string): PackedArray {
  const array = arrays.get(name);
  if (array === undefined) throw new Error(`golden file lacks ${name}`);
  return array;
}

/** Raw byte equality, reporting the first differing byte. */
export function assertBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  assert.is(actual.length, expected.length, `${what}: byte length`);
  const at = actual.findIndex((b, i) => b !== expected[i]);
  assert.is(at, -1, `${what}: first differing byte at ${at}${at >= 0 ? ` (got ${actual[at]}, expected ${expected[at]})` : ""}`);
}
