import { suite } from "uvu";
import * as assert from "uvu/assert";
import type { FloatDType } from "../../formats/dtype.js";
import { convertFloatBytes } from "../../formats/dense/convert.js";
import { bf16BitsToF32Bits, f16BitsToF32Bits, f32BitsToBf16Bits, f32BitsToF16Bit, f32BitsToF16Bits } from "../../formats/dense/float-bits.js";
import { mulberry32, type Rng } from "../helpers/prng.js";

/**
 * Exactness of the float conversions, against references written here from the IEEE 754
 * definitions and implemented differently from the library: decoders compute values as
 * doubles from (sign, exponent, mantissa); rounding finds the two neighbouring representable
 * values in a sorted table and compares with their midpoint (exact in double), ties to even.
 */

const SEED = Number(process.env["LMPACK_FLOAT_SEED"] ?? 0xf10a7) >>> 0;


const u32 = (rng: Rng): number => Math.floor(rng() * 4294967296) >>> 0;

const scratch32 = new Float32Array(1);
const scratch32Bits = new Uint32Array(scratch32.buffer);
function f32Bits(x: number): number {
  scratch32[0] = x;
  return scratch32Bits[0]!;
}
function f32Value(bits: number): number {
  scratch32Bits[0] = bits;
  return scratch32[0]!;
}

const hex = (n: number, digits: number): string => "0x" + (n >>> 0).toString(16).padStart(digits, "0");

// ---------------------------------------------------------------------------------------------
// Independent decoders (IEEE 754 binary16, and bfloat16 = the top half of binary32)

interface Format {
  name: string;
  expBits: number;
  mantBits: number;
}
const F16: Format = { name: "f16", expBits: 5, mantBits: 10 };
const BF16: Format = { name: "bf16", expBits: 8, mantBits: 7 };

/** Value of a 16-bit pattern as a double; NaN for NaNs. */
function decode(format: Format, h: number): number {
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
function expectedWidened(format: Format, h: number): number {
  const value = decode(format, h);
  if (!Number.isNaN(value)) return f32Bits(value);
  const m = h & (2 ** format.mantBits - 1);
  return ((h >> 15) * 2 ** 31 + 0x7f800000 + m * 2 ** (23 - format.mantBits)) >>> 0;
}

// ---------------------------------------------------------------------------------------------
// Reference rounding: neighbours in a sorted table, compared with their midpoint

interface RoundingTable {
  format: Format;
  /** Non-negative finite values in pattern order (which is value order), then 2^(emax+1) standing for +inf. */
  values: Float64Array;
  infPattern: number;
}

function roundingTable(format: Format): RoundingTable {
  const infPattern = (2 ** format.expBits - 1) << format.mantBits;
  const values = new Float64Array(infPattern + 1);
  for (let h = 0; h < infPattern; h++) values[h] = decode(format, h);
  // With an unbounded exponent the next value after the largest finite one is 2^(emax+1); rounding onto it overflows.
  values[infPattern] = 2 ** (2 ** (format.expBits - 1));
  return { format, values, infPattern };
}

const F16_TABLE = roundingTable(F16);
const BF16_TABLE = roundingTable(BF16);

/** Correct rounding (to nearest, ties to even) of any double to the table's format; NaN for NaN input. */
function referenceRound(table: RoundingTable, x: number): number {
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
function referenceNaN(format: Format, bits32: number): number {
  const sign = (bits32 >>> 16) & 0x8000;
  const payload = (bits32 & 0x7fffff) >>> (23 - format.mantBits);
  const infPattern = (2 ** format.expBits - 1) << format.mantBits;
  return sign | infPattern | (payload === 0 ? 1 << (format.mantBits - 1) : payload);
}

function referenceFromF32(format: Format, bits32: number): number {
  const table = format === F16 ? F16_TABLE : BF16_TABLE;
  const x = f32Value(bits32);
  return Number.isNaN(x) ? referenceNaN(format, bits32) : referenceRound(table, x);
}

function assertSame(actual: ArrayLike<number>, expected: ArrayLike<number>, describe: (i: number) => string): void {
  assert.is(actual.length, expected.length, "length");
  for (let i = 0; i < expected.length; i++) {
    if (actual[i] !== expected[i]) assert.unreachable(`${describe(i)}: expected ${hex(expected[i]!, 4)}, got ${hex(actual[i]!, 4)}`);
  }
}

const ALL_16 = Uint16Array.from({ length: 65536 }, (_, i) => i);

function bytesOf(array: ArrayBufferView): Uint8Array {
  return new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
}

// ---------------------------------------------------------------------------------------------

const widening = suite("float: all 65,536 f16 and bf16 patterns");

for (const [format, widen, narrow, dtype] of [
  [F16, f16BitsToF32Bits, f32BitsToF16Bits, "F16"],
  [BF16, bf16BitsToF32Bits, f32BitsToBf16Bits, "BF16"],
] as const) {
  widening(`${format.name} → f32 matches the IEEE decoder for every pattern`, () => {
    const out = new Uint32Array(65536);
    widen(ALL_16, out);
    assertSame(out, Uint32Array.from(ALL_16, (h) => expectedWidened(format, h)), (i) => `${format.name} ${hex(i, 4)}`);
  });

  widening(`${format.name} → f32 → ${format.name} is bit-identical for every pattern, NaNs included`, () => {
    const wide = new Uint32Array(65536);
    widen(ALL_16, wide);
    const back = new Uint16Array(65536);
    narrow(wide, back);
    assertSame(back, ALL_16, (i) => `${format.name} ${hex(i, 4)}`);
    const viaBytes = convertFloatBytes(convertFloatBytes(bytesOf(ALL_16), dtype, "F32"), "F32", dtype);
    assertSame(new Uint16Array(viaBytes.buffer, viaBytes.byteOffset, 65536), ALL_16, (i) => `convertFloatBytes ${format.name} ${hex(i, 4)}`);
  });

  widening(`${format.name} → f64 → ${format.name} through convertFloatBytes: exact values, NaN stays NaN`, () => {
    const wide = convertFloatBytes(bytesOf(ALL_16), dtype, "F64");
    const values = new Float64Array(wide.buffer, wide.byteOffset, 65536);
    const back = convertFloatBytes(wide, "F64", dtype);
    const narrowed = new Uint16Array(back.buffer, back.byteOffset, 65536);
    for (let h = 0; h < 65536; h++) {
      const expected = decode(format, h);
      if (Number.isNaN(expected)) {
        assert.ok(Number.isNaN(values[h]!), `${hex(h, 4)} widens to NaN`);
        assert.ok(Number.isNaN(decode(format, narrowed[h]!)), `${hex(h, 4)} comes back NaN`);
        assert.is(narrowed[h]! & 0x8000, h & 0x8000, `${hex(h, 4)} keeps its sign`);
      } else {
        assert.ok(Object.is(values[h]!, expected), `${hex(h, 4)} widens to ${expected}`);
        assert.is(narrowed[h], h, `${hex(h, 4)} comes back`);
      }
    }
  });
}

widening.run();

const narrowing = suite("float: f32 → f16 / bf16 round to nearest even");

/** Hand-picked cases with their expected patterns written out (not computed by either implementation). */
const F16_EDGES: [string, number, number][] = [
  ["65504 (max f16)", 0x477fe000, 0x7bff],
  ["65519.99 (below the overflow tie)", f32Bits(65519.99), 0x7bff],
  ["65520 (overflow tie → inf)", 0x477ff000, 0x7c00],
  ["65536", 0x47800000, 0x7c00],
  ["max f32", 0x7f7fffff, 0x7c00],
  ["-max f32", 0xff7fffff, 0xfc00],
  ["+inf", 0x7f800000, 0x7c00],
  ["-inf", 0xff800000, 0xfc00],
  ["+0", 0x00000000, 0x0000],
  ["-0", 0x80000000, 0x8000],
  ["2^-24 (smallest f16 subnormal)", 0x33800000, 0x0001],
  ["2^-25 exactly (tie → 0)", 0x33000000, 0x0000],
  ["-2^-25 exactly (tie → -0)", 0xb3000000, 0x8000],
  ["just above 2^-25", 0x33000001, 0x0001],
  ["just below 2^-25", 0x32ffffff, 0x0000],
  ["1.5 × 2^-24 (tie → 2 × 2^-24)", 0x33c00000, 0x0002],
  ["1023 × 2^-24 (largest subnormal)", f32Bits(1023 * 2 ** -24), 0x03ff],
  ["1023.5 × 2^-24 (tie → smallest normal)", f32Bits(1023.5 * 2 ** -24), 0x0400],
  ["2^-14 (smallest normal)", 0x38800000, 0x0400],
  ["1 + 2^-11 (tie → 1)", 0x3f801000, 0x3c00],
  ["1 + 3 × 2^-11 (tie → 1 + 2^-9)", 0x3f803000, 0x3c02],
  ["1 + 2^-11 + 2^-23 (above the tie)", 0x3f801001, 0x3c01],
  ["smallest f32 subnormal", 0x00000001, 0x0000],
  ["NaN, payload only in low bits", 0x7f800001, 0x7e00],
  ["-NaN, payload only in low bits", 0xff800001, 0xfe00],
  ["quiet NaN", 0x7fc00000, 0x7e00],
  ["NaN with the lowest kept payload bit", 0x7f802000, 0x7c01],
];

const BF16_EDGES: [string, number, number][] = [
  ["1 + 2^-8 (tie → 1)", 0x3f808000, 0x3f80],
  ["1 + 3 × 2^-8 (tie → 1 + 2^-6)", 0x3f818000, 0x3f82],
  ["just above a tie", 0x3f808001, 0x3f81],
  ["just below a tie", 0x3f807fff, 0x3f80],
  ["max bf16", 0x7f7f0000, 0x7f7f],
  ["below the overflow tie", 0x7f7f7fff, 0x7f7f],
  ["overflow tie → inf", 0x7f7f8000, 0x7f80],
  ["max f32", 0x7f7fffff, 0x7f80],
  ["-max f32", 0xff7fffff, 0xff80],
  ["-0", 0x80000000, 0x8000],
  ["f32 subnormal tie → 0", 0x00008000, 0x0000],
  ["f32 subnormal tie → 2", 0x00018000, 0x0002],
  ["largest subnormal rounding up to the smallest normal", 0x007fffff, 0x0080],
  ["NaN, payload only in low bits", 0x7f800001, 0x7fc0],
  ["-NaN, payload only in low bits", 0xff800001, 0xffc0],
  ["NaN with the lowest kept payload bit", 0x7f810000, 0x7f81],
];

for (const [format, edges, narrow] of [
  [F16, F16_EDGES, f32BitsToF16Bits],
  [BF16, BF16_EDGES, f32BitsToBf16Bits],
] as const) {
  narrowing(`${format.name}: hand-picked edge cases (library and reference both)`, () => {
    const out = new Uint16Array(edges.length);
    narrow(Uint32Array.from(edges, (e) => e[1]), out);
    for (const [i, [name, bits, expected]] of edges.entries()) {
      assert.is(hex(out[i]!, 4), hex(expected, 4), `library: ${name} (${hex(bits, 8)})`);
      assert.is(hex(referenceFromF32(format, bits), 4), hex(expected, 4), `reference: ${name} (${hex(bits, 8)})`);
    }
    for (const [, bits] of edges) {
      if (Number.isNaN(f32Value(bits))) assert.ok(Number.isNaN(decode(format, referenceFromF32(format, bits))), "NaN stays NaN");
    }
  });

  narrowing(`${format.name}: every tie point and its f32 neighbours`, () => {
    const table = format === F16 ? F16_TABLE : BF16_TABLE;
    const inputs: number[] = [];
    for (let h = 0; h < table.infPattern; h++) {
      const mid = f32Bits((table.values[h]! + table.values[h + 1]!) / 2);
      for (const bits of [mid - 1, mid, mid + 1]) inputs.push(bits, (bits | 0x80000000) >>> 0);
    }
    const src = Uint32Array.from(inputs);
    const out = new Uint16Array(src.length);
    narrow(src, out);
    assertSame(out, Uint16Array.from(src, (b) => referenceFromF32(format, b)), (i) => `${format.name} of f32 ${hex(src[i]!, 8)}`);
  });

  narrowing(`${format.name}: 1,000,000 random f32 patterns, plus 500,000 in the ${format.name} range`, () => {
    const rng = mulberry32(SEED ^ format.mantBits);
    const src = new Uint32Array(1_500_000);
    for (let i = 0; i < 1_000_000; i++) src[i] = u32(rng);
    // Uniform patterns mostly land far outside f16's exponent range; these stay near it.
    const [eLow, eHigh] = format === F16 ? [100, 145] : [0, 255];
    for (let i = 1_000_000; i < src.length; i++) {
      const e = eLow + Math.floor(rng() * (eHigh - eLow + 1));
      src[i] = ((u32(rng) & 0x807fffff) | (e << 23)) >>> 0;
    }
    const out = new Uint16Array(src.length);
    narrow(src, out);
    assertSame(out, Uint16Array.from(src, (b) => referenceFromF32(format, b)), (i) => `seed ${SEED}: ${format.name} of f32 ${hex(src[i]!, 8)}`);
  });
}

narrowing("f32BitsToF16Bit (scalar) agrees with the array version", () => {
  const rng = mulberry32(SEED);
  const src = Uint32Array.from({ length: 100_000 }, () => u32(rng));
  const out = new Uint16Array(src.length);
  f32BitsToF16Bits(src, out);
  assertSame(Uint16Array.from(src, f32BitsToF16Bit), out, (i) => hex(src[i]!, 8));
});

narrowing.run();

const fromF64 = suite("float: f64 → f16 / bf16 rounds once (round to odd through f32)");

function convertF64(values: Float64Array, to: "F16" | "BF16"): Uint16Array {
  const out = convertFloatBytes(bytesOf(values), "F64", to);
  return new Uint16Array(out.buffer, out.byteOffset, values.length);
}

/** The double-rounding path round to odd exists to avoid: f64 → f32 (nearest) → 16-bit (nearest). */
function naiveF64(values: Float64Array, to: "F16" | "BF16"): Uint16Array {
  const bits = new Uint32Array(new Float32Array(values).buffer);
  const out = new Uint16Array(values.length);
  (to === "F16" ? f32BitsToF16Bits : f32BitsToBf16Bits)(bits, out);
  return out;
}

function referenceF64(format: Format, values: Float64Array): Uint16Array {
  const table = format === F16 ? F16_TABLE : BF16_TABLE;
  return Uint16Array.from(values, (x) => referenceRound(table, x));
}

function checkF64(format: Format, to: "F16" | "BF16", values: Float64Array, what: string): void {
  const out = convertF64(values, to);
  const expected = referenceF64(format, values);
  for (let i = 0; i < values.length; i++) {
    const x = values[i]!;
    if (Number.isNaN(x)) {
      assert.ok(Number.isNaN(decode(format, out[i]!)), `${what}: NaN stays NaN`);
    } else if (out[i] !== expected[i]) {
      assert.unreachable(`${what}: ${format.name}(${x}) expected ${hex(expected[i]!, 4)}, got ${hex(out[i]!, 4)}`);
    }
  }
}

for (const [format, to] of [
  [F16, "F16"],
  [BF16, "BF16"],
] as const) {
  fromF64(`${format.name}: f64 values just above and below every tie point (where f32 would round onto the tie)`, () => {
    const table = format === F16 ? F16_TABLE : BF16_TABLE;
    const xs: number[] = [];
    for (let h = 0; h < table.infPattern; h++) {
      const mid = (table.values[h]! + table.values[h + 1]!) / 2;
      // mid·(1 ± 2^-40) is exact in f64 but within half an f32 ulp of mid, so f32 rounding lands on the tie.
      for (const x of [mid + mid * 2 ** -40, mid - mid * 2 ** -40]) xs.push(x, -x);
    }
    const values = Float64Array.from(xs);
    checkF64(format, to, values, "near ties");
    const naive = naiveF64(values, to);
    const expected = referenceF64(format, values);
    let naiveWrong = 0;
    for (let i = 0; i < values.length; i++) if (naive[i] !== expected[i]) naiveWrong++;
    // The cases must actually expose double rounding, or they prove nothing.
    assert.ok(naiveWrong > values.length / 8, `naive f64→f32→${format.name} is wrong on ${naiveWrong} of ${values.length}`);
  });

  fromF64(`${format.name}: random f64 values, near the ${format.name} range and anywhere`, () => {
    const rng = mulberry32(SEED ^ 0x64);
    const n = 300_000;
    const values = new Float64Array(n);
    const view = new DataView(values.buffer);
    const [eLow, eHigh] = format === F16 ? [1023 - 30, 1023 + 17] : [1023 - 140, 1023 + 130];
    for (let i = 0; i < n; i++) {
      const e = i < n / 2 ? eLow + Math.floor(rng() * (eHigh - eLow + 1)) : Math.floor(rng() * 2048);
      const hiBits = ((u32(rng) & 0x800fffff) | (e << 20)) >>> 0;
      view.setUint32(i * 8 + 4, hiBits, true);
      view.setUint32(i * 8, u32(rng), true);
    }
    checkF64(format, to, values, `seed ${SEED}`);
  });

  fromF64(`${format.name}: f64 edge values`, () => {
    const values = Float64Array.from([0, -0, 1e-300, -1e-300, 1e-50, 5e-324, 1e39, -1e39, 1e300, Infinity, -Infinity, NaN, 65504, 65519.999999, 65520, 3.3895313892515355e38, 3.3961775292304957e38, 3.4028234663852886e38, 2 ** -25, 2 ** -25 * (1 + 2 ** -50), 2 ** -133, 2 ** -134, 2 ** -134 * (1 + 2 ** -50)]);
    checkF64(format, to, values, "edges");
  });
}

fromF64("f64 → f32 through convertFloatBytes is Math.fround", () => {
  const rng = mulberry32(SEED ^ 0x32);
  const values = Float64Array.from({ length: 100_000 }, () => (rng() - 0.5) * 2 ** Math.floor(rng() * 300 - 150));
  const out = convertFloatBytes(bytesOf(values), "F64", "F32");
  const f32 = new Float32Array(out.buffer, out.byteOffset, values.length);
  for (let i = 0; i < values.length; i++) if (!Object.is(f32[i], Math.fround(values[i]!))) assert.unreachable(`f32(${values[i]})`);
});

fromF64.run();

const layout = suite("float: convertFloatBytes on unaligned chunks");

const FLOAT_DTYPES: FloatDType[] = ["F64", "F32", "F16", "BF16"];
const WIDTH: Record<FloatDType, number> = { F64: 8, F32: 4, F16: 2, BF16: 2 };

layout("every dtype pair gives the same bytes from an unaligned subarray (byteOffset 1, 3, 5) as from an aligned copy", () => {
  const rng = mulberry32(SEED ^ 0xa1);
  for (const from of FLOAT_DTYPES) {
    // Values every dtype can hold without NaN games: widen random f16 patterns to the source dtype.
    const f16 = Uint16Array.from({ length: 64 }, () => Math.floor(rng() * 0x7c00) | (rng() < 0.5 ? 0x8000 : 0));
    const aligned = from === "F16" ? bytesOf(f16) : convertFloatBytes(bytesOf(f16), "F16", from);
    for (const to of FLOAT_DTYPES) {
      if (to === from) continue;
      const expected = convertFloatBytes(aligned, from, to);
      assert.is(expected.length, (aligned.length / WIDTH[from]) * WIDTH[to]);
      for (const shift of [1, 3, 5]) {
        const backing = new Uint8Array(aligned.length + 8);
        backing.set(aligned, shift);
        const unaligned = backing.subarray(shift, shift + aligned.length);
        const before = backing.slice();
        const out = convertFloatBytes(unaligned, from, to);
        assert.ok(Buffer.compare(out, expected) === 0, `${from} → ${to} at byteOffset ${shift}`);
        assert.ok(Buffer.compare(backing, before) === 0, `${from} → ${to}: input untouched`);
        assert.ok(out.buffer !== backing.buffer, `${from} → ${to}: result does not alias the input`);
      }
    }
  }
});

layout("the same array comes back when from === to", () => {
  for (const dtype of FLOAT_DTYPES) {
    const backing = new Uint8Array(33);
    const bytes = backing.subarray(1, 1 + 4 * WIDTH[dtype]);
    assert.is(convertFloatBytes(bytes, dtype, dtype), bytes, dtype);
  }
});

layout("a byte count that is not a whole number of elements is refused", () => {
  assert.throws(() => convertFloatBytes(new Uint8Array(3), "F16", "F32"), RangeError);
  assert.throws(() => convertFloatBytes(new Uint8Array(6), "F64", "F16"), RangeError);
});

layout.run();
