import { suite } from "uvu";
import * as assert from "uvu/assert";
import type { FloatDType } from "../../formats/dtype.js";
import { convertFloatBytes } from "../../formats/dense/convert.js";
import { f32BitsToBf16Bits, f32BitsToF16Bits } from "../../formats/dense/float-bits.js";
import { mulberry32 } from "../helpers/prng.js";
import { u32, hex, type Format, F16, BF16, decode, F16_TABLE, BF16_TABLE, referenceRound, bytesOf } from "../helpers/float-reference.js";

/**
 * Exactness of the float conversions, against references written here from the IEEE 754
 * definitions and implemented differently from the library: decoders compute values as
 * doubles from (sign, exponent, mantissa); rounding finds the two neighbouring representable
 * values in a sorted table and compares with their midpoint (exact in double), ties to even.
 */

const SEED = Number(process.env["LMPACK_FLOAT_SEED"] ?? 0xf10a7) >>> 0;

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
