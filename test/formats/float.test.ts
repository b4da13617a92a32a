import { suite } from "uvu";
import * as assert from "uvu/assert";
import { convertFloatBytes } from "../../formats/dense/convert.js";
import { bf16BitsToF32Bits, f16BitsToF32Bits, f32BitsToBf16Bits, f32BitsToF16Bit, f32BitsToF16Bits } from "../../formats/dense/float-bits.js";
import { mulberry32 } from "../helpers/prng.js";
import { u32, f32Bits, f32Value, hex, F16, BF16, decode, expectedWidened, F16_TABLE, BF16_TABLE, referenceFromF32, assertSame, ALL_16, bytesOf } from "../helpers/float-reference.js";

/**
 * Exactness of the float conversions, against references written here from the IEEE 754
 * definitions and implemented differently from the library: decoders compute values as
 * doubles from (sign, exponent, mantissa); rounding finds the two neighbouring representable
 * values in a sorted table and compares with their midpoint (exact in double), ties to even.
 */

const SEED = Number(process.env["LMPACK_FLOAT_SEED"] ?? 0xf10a7) >>> 0;

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
