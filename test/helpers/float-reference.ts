/**
 * Reference float codecs for the conversion tests, written from the IEEE 754 definitions and
 * implemented differently from formats/dense/float-bits.ts: decoders compute values as doubles
 * from (sign, exponent, mantissa); rounding finds the two neighbouring representable values in a
 * sorted table and compares with their midpoint (exact in double), ties to even.
 */
import * as assert from "uvu/assert";
import type { Rng } from "./prng.js";

export const u32 = (rng: Rng): number => Math.floor(rng() * 4294967296) >>> 0;

const scratch32 = new Float32Array(1);
const scratch32Bits = new Uint32Array(scratch32.buffer);
export function f32Bits(x: number): number {
  scratch32[0] = x;
  return scratch32Bits[0]!;
}
export function f32Value(bits: number): number {
  scratch32Bits[0] = bits;
  return scratch32[0]!;
}

export const hex = (n: number, digits: number): string => "0x" + (n >>> 0).toString(16).padStart(digits, "0");

// ---------------------------------------------------------------------------------------------
// Independent decoders (IEEE 754 binary16, and bfloat16 = the top half of binary32)

export interface Format {
  name: string;
  expBits: number;
  mantBits: number;
}
export const F16: Format = { name: "f16", expBits: 5, mantBits: 10 };
export const BF16: Format = { name: "bf16", expBits: 8, mantBits: 7 };

/** Value of a 16-bit pattern as a double; NaN for NaNs. */
export function decode(format: Format, h: number): number {
  const { expBits, mantBits } = format;
  const bias = 2 ** (expBits - 1) - 1;
  const sign = h >> 15 ? -1 : 1;
  const e = (h >> mantBits) & (2 ** expBits - 1);
  const m = h & (2 ** mantBits - 1);
  if (e === 2 ** expBits - 1) return m === 0 ? sign * Infinity : NaN;
  if (e === 0) return sign * m * 2 ** (1 - bias - mantBits); // subnormal (and ±0)
  return sign * (2 ** mantBits + m) * 2 ** (e - bias - mantBits);
}

/** The f32 pattern a 16-bit pattern must widen to: its exact value, or for NaN the same sign and payload in the top mantissa bits. */
export function expectedWidened(format: Format, h: number): number {
  const value = decode(format, h);
  if (!Number.isNaN(value)) return f32Bits(value);
  const m = h & (2 ** format.mantBits - 1);
  return ((h >> 15) * 2 ** 31 + 0x7f800000 + m * 2 ** (23 - format.mantBits)) >>> 0;
}

// ---------------------------------------------------------------------------------------------
// Reference rounding: neighbours in a sorted table, compared with their midpoint

export interface RoundingTable {
  format: Format;
  /** Non-negative finite values in pattern order (which is value order), then 2^(emax+1) standing for +inf. */
  values: Float64Array;
  infPattern: number;
}

export function roundingTable(format: Format): RoundingTable {
  const infPattern = (2 ** format.expBits - 1) << format.mantBits;
  const values = new Float64Array(infPattern + 1);
  for (let h = 0; h < infPattern; h++) values[h] = decode(format, h);
  // With an unbounded exponent the next value after the largest finite one is 2^(emax+1); rounding onto it overflows.
  values[infPattern] = 2 ** (2 ** (format.expBits - 1));
  return { format, values, infPattern };
}

export const F16_TABLE = roundingTable(F16);
export const BF16_TABLE = roundingTable(BF16);

/** Correct rounding (to nearest, ties to even) of any double to the table's format; NaN for NaN input. */
export function referenceRound(table: RoundingTable, x: number): number {
  if (Number.isNaN(x)) return NaN;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  const { values, infPattern } = table;
  if (a >= values[infPattern]!) return sign | infPattern;
  let lo = 0;
  let hi = infPattern; // invariant: values[lo] <= a < values[hi]
  while (hi - lo > 1) {
    const mid = (lo + hi) >>> 1;
    if (values[mid]! <= a) lo = mid;
    else hi = mid;
  }
  const midpoint = (values[lo]! + values[hi]!) / 2; // exact: neighbours differ by one ulp of a narrow format
  const pattern = a < midpoint ? lo : a > midpoint ? hi : lo % 2 === 0 ? lo : hi;
  return sign | pattern;
}

/** What a NaN must narrow to (the documented contract): sign and top payload bits kept, quiet bit if they are all zero. */
export function referenceNaN(format: Format, bits32: number): number {
  const sign = (bits32 >>> 16) & 0x8000;
  const payload = (bits32 & 0x7fffff) >>> (23 - format.mantBits);
  const infPattern = (2 ** format.expBits - 1) << format.mantBits;
  return sign | infPattern | (payload === 0 ? 1 << (format.mantBits - 1) : payload);
}

export function referenceFromF32(format: Format, bits32: number): number {
  const table = format === F16 ? F16_TABLE : BF16_TABLE;
  const x = f32Value(bits32);
  return Number.isNaN(x) ? referenceNaN(format, bits32) : referenceRound(table, x);
}

export function assertSame(actual: ArrayLike<number>, expected: ArrayLike<number>, describe: (i: number) => string): void {
  assert.is(actual.length, expected.length, "length");
  for (let i = 0; i < expected.length; i++) {
    if (actual[i] !== expected[i]) assert.unreachable(`${describe(i)}: expected ${hex(expected[i]!, 4)}, got ${hex(actual[i]!, 4)}`);
  }
}

export const ALL_16 = Uint16Array.from({ length: 65536 }, (_, i) => i);

export function bytesOf(array: ArrayBufferView): Uint8Array {
  return new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
}
