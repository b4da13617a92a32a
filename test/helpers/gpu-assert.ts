import * as assert from "uvu/assert";
import { f32BitsToF16Bits } from "../../formats/dense/float-bits.js";
import { isLmpackError } from "../../formats/errors.js";

/**
 * The comparisons the kernel suites (test/kernels) share: GPU output against lmpack's CPU
 * reference bit for bit, float32 and fp16, and typed refusals.
 */

/** Float32 bit equality (−0 ≠ +0), naming the first differing element. */
export function assertSameBits(actual: Float32Array, expected: Float32Array, what: string): void {
  assert.is(actual.length, expected.length, `${what}: length`);
  const a = new Uint32Array(actual.buffer, actual.byteOffset, actual.length);
  const b = new Uint32Array(expected.buffer, expected.byteOffset, expected.length);
  const at = a.findIndex((v, i) => v !== b[i]);
  assert.ok(at < 0, `${what}: element ${at} differs: GPU ${actual[at]} (0x${a[at]?.toString(16)}), CPU ${expected[at]} (0x${b[at]?.toString(16)})`);
}

/** fp16 bit equality, naming the first differing element. */
export function assertSameHalves(actual: Uint16Array, expected: Uint16Array, what: string): void {
  assert.is(actual.length, expected.length, `${what}: length`);
  const at = actual.findIndex((v, i) => v !== expected[i]);
  assert.ok(at < 0, `${what}: element ${at} differs: GPU 0x${actual[at]?.toString(16)}, CPU 0x${expected[at]?.toString(16)}`);
}

/** float32 values rounded to fp16 bits (nearest even): what a kernel's fp16 output must hold. */
export function toF16(values: Float32Array): Uint16Array {
  const half = new Uint16Array(values.length);
  f32BitsToF16Bits(new Uint32Array(values.buffer, values.byteOffset, values.length), half);
  return half;
}

/** `run` throws an lmpack error with `code`; `what` prefixes the messages. */
export function expectCode(run: () => unknown, code: string, what = ""): void {
  const prefix = what === "" ? "" : `${what}: `;
  try {
    run();
  } catch (error) {
    assert.ok(isLmpackError(error), `${prefix}${String(error)}`);
    assert.is(error.code, code, `${prefix}${error.message}`);
    return;
  }
  assert.unreachable(`${prefix}expected ${code}`);
}
