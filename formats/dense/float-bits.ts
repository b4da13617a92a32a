/**
 * Exact conversions between IEEE binary32 and the 16-bit float formats, on raw bit patterns.
 *
 * All narrowing conversions round to nearest, ties to even, handle subnormals, and map
 * overflow to infinity. NaNs keep their sign and top payload bits (a NaN whose kept payload
 * would be zero gets the quiet bit, so it stays a NaN); this makes f16→f32→f16 and
 * bf16→f32→bf16 bit-exact for every one of the 65,536 patterns, NaNs included.
 *
 * Widening (f16/bf16 → f32) is always exact. f64 sources are first narrowed to f32 with
 * round-to-odd, which makes the second rounding to f16/bf16 correct (binary32 has
 * 24 ≥ 2·11 + 2 significand bits; Boldo & Melquiond, "When double rounding is odd").
 *
 * Loops run over whole typed arrays so V8 compiles them to tight integer code.
 */

/** f32 bit patterns → bf16 bit patterns (round to nearest even). */
export function f32BitsToBf16Bits(src: Uint32Array, dst: Uint16Array): void {
  const n = src.length;
  for (let i = 0; i < n; i++) {
    const u = src[i]!;
    if ((u & 0x7fffffff) > 0x7f800000) {
      const h = u >>> 16;
      dst[i] = (h & 0x7f) === 0 ? h | 0x40 : h;
    } else {
      // Adding 0x7fff plus the lowest kept bit rounds ties to even; carries roll into the
      // exponent, and the largest finite values round to infinity, as they should.
      dst[i] = (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
    }
  }
}

/** bf16 bit patterns → f32 bit patterns (exact). */
export function bf16BitsToF32Bits(src: Uint16Array, dst: Uint32Array): void {
  const n = src.length;
  for (let i = 0; i < n; i++) dst[i] = src[i]! << 16;
}

/** f32 bit patterns → f16 bit patterns (round to nearest even, subnormals, overflow to ±inf). */
export function f32BitsToF16Bits(src: Uint32Array, dst: Uint16Array): void {
  const n = src.length;
  for (let i = 0; i < n; i++) dst[i] = f32BitsToF16Bit(src[i]!);
}

/** One f32 bit pattern → f16 bit pattern. Exported for tests and scalar callers. */
export function f32BitsToF16Bit(u: number): number {
  const sign = (u >>> 16) & 0x8000;
  const a = u & 0x7fffffff;
  let h: number;
  if (a >= 0x7f800000) {
    if (a === 0x7f800000) {
      h = 0x7c00;
    } else {
      const payload = (a >>> 13) & 0x3ff;
      h = 0x7c00 | (payload === 0 ? 0x200 : payload);
    }
  } else if (a >= 0x477ff000) {
    // ≥ 65520 = halfway between 65504 (max f16) and 65536: ties to even → infinity.
    h = 0x7c00;
  } else if (a >= 0x38800000) {
    // Normal f16 range (≥ 2^-14): rebias the exponent by 127-15 and round the 13 dropped bits.
    h = (a - 0x38000000 + 0xfff + ((a >>> 13) & 1)) >>> 13;
  } else if (a >= 0x33000000) {
    // f16 subnormal result: value = m·2^(e-150), in units of 2^-24 that is m >> (126-e).
    const e = a >>> 23;
    const m = (a & 0x7fffff) | 0x800000;
    const shift = 126 - e;
    const q = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    h = q + (rem > half || (rem === half && (q & 1) === 1) ? 1 : 0);
  } else {
    h = 0; // below 2^-25 (or exactly it: ties to even) rounds to zero
  }
  return h | sign;
}

let f16ToF32Table: Uint32Array | undefined;

/** 65,536-entry table of exact f16 → f32 bit patterns, built once on first use (256 KiB). */
function f16Table(): Uint32Array {
  if (f16ToF32Table !== undefined) return f16ToF32Table;
  const table = new Uint32Array(65536);
  const f = new Float32Array(1);
  const fu = new Uint32Array(f.buffer);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    if (e === 0) {
      f[0] = m * 2 ** -24; // exact: m < 2^10
      table[h] = (fu[0]! | sign) >>> 0;
    } else if (e === 31) {
      table[h] = (sign | 0x7f800000 | (m << 13)) >>> 0;
    } else {
      table[h] = (sign | ((e + 112) << 23) | (m << 13)) >>> 0;
    }
  }
  f16ToF32Table = table;
  return table;
}

/** f16 bit patterns → f32 bit patterns (exact). */
export function f16BitsToF32Bits(src: Uint16Array, dst: Uint32Array): void {
  const table = f16Table();
  const n = src.length;
  for (let i = 0; i < n; i++) dst[i] = table[src[i]!]!;
}

const oddScratch = new Float32Array(1);
const oddScratchBits = new Uint32Array(oddScratch.buffer);

/** One f64 → its f32 bit pattern rounded to odd (see f64ToF32BitsRoundToOdd). */
export function f64ToF32BitRoundToOdd(x: number): number {
  oddScratch[0] = x;
  let bits = oddScratchBits[0]!;
  const rounded = oddScratch[0]!;
  if (rounded !== x && !Number.isNaN(x) && (bits & 1) === 0) bits = Math.abs(rounded) > Math.abs(x) ? bits - 1 : bits + 1;
  return bits;
}

/** One f64 → f16 bit pattern, correctly rounded (nearest even) through round-to-odd f32. */
export function f64ToF16Bit(x: number): number {
  return f32BitsToF16Bit(f64ToF32BitRoundToOdd(x));
}

/** One f64 → bf16 bit pattern, correctly rounded (nearest even) through round-to-odd f32. */
export function f64ToBf16Bit(x: number): number {
  const bits = f64ToF32BitRoundToOdd(x);
  if ((bits & 0x7fffffff) > 0x7f800000) return (bits >>> 16) | 0x40;
  return (bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
}

/**
 * f64 values → f32 bit patterns rounded to odd: an inexact result gets its last significand
 * bit forced to 1 by stepping one ulp toward the true value when it came out even.
 * Only for feeding a second, narrower rounding; use a plain Float32Array store for f64 → f32.
 */
export function f64ToF32BitsRoundToOdd(src: Float64Array, dst: Uint32Array): void {
  const scratch = new Float32Array(1);
  const scratchBits = new Uint32Array(scratch.buffer);
  const n = src.length;
  for (let i = 0; i < n; i++) {
    const x = src[i]!;
    scratch[0] = x;
    let bits = scratchBits[0]!;
    const r = scratch[0]!;
    if (r !== x && !Number.isNaN(x) && (bits & 1) === 0) {
      bits = Math.abs(r) > Math.abs(x) ? bits - 1 : bits + 1;
    }
    dst[i] = bits;
  }
}

const valueTables = new Map<"F16" | "BF16", Float32Array>();

/** The value of every 16-bit float bit pattern (65,536 entries, built once per dtype). */
export function halfPrecisionValues(dtype: "F16" | "BF16"): Float32Array {
  let table = valueTables.get(dtype);
  if (table === undefined) {
    const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
    table = new Float32Array(65536);
    (dtype === "F16" ? f16BitsToF32Bits : bf16BitsToF32Bits)(all, new Uint32Array(table.buffer));
    valueTables.set(dtype, table);
  }
  return table;
}
