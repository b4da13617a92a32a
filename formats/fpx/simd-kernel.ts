import { assembleModule, I32, instantiate, op, V128, type FunctionSpec } from "../wasm/assembler.js";
import { f32Bits } from "./codec.js";
import type { FpxFormat } from "./format.js";
import { regionsOf, regionTableForKernel } from "./tc-layout.js";

/**
 * WebAssembly SIMD kernels of the FPx quantizer (V8 does not vectorise JavaScript; these run
 * 4–16 lanes per instruction), each over a whole 64-row slab so JavaScript calls them a few
 * times per slab. Exactness is by construction, not tolerance:
 *
 * - amax_f32 / amax_b16 (in, n, rows, out): per row, the largest magnitude bits in the source
 *   encoding (4 u32 lanes per row at `out`; the caller takes their maximum and catches Inf/NaN).
 * - encode_f32 / encode_f16 / encode_bf16 (in, n, rows, scales, out): per row, codes of
 *   f32(x / scale[row]). 16-bit inputs are widened on the fly (f16 by the exact magic multiply
 *   ((h & 0x7fff) << 13) · 2^112, which maps normals and subnormals alike; bf16 by a shift).
 *   f32x4.div is IEEE division, as torch's CPU kernel; then torchao's `_f32_to_floatx_unpacked`
 *   branch-free: integer round-to-nearest-even for normals, the same magic float addition
 *   torchao uses for subnormals (f32x4.add rounds like torch), saturation, sign.
 * - pack1 / pack2 / pack4 (codes, n, lowBit, out): one region of the tensor-core layout for a
 *   64-row slab. Each 16 output bytes (4 words) take a fixed set of 8/y rows of a 16-column
 *   tile: their codes are loaded as vectors, the region's bits extracted, and placed with
 *   i8x16.swizzle tables derived from the scalar packer's gather table (tc-layout.ts), so both
 *   pack the same bytes; unpack1 / unpack2 / unpack4 invert them with the inverse tables.
 * - decode (codes, n, rows, scales, out): the reference dequantization, exact (see decode()).
 */
export type Encoding = "f32" | "f16" | "bf16";

type SlabFn = (input: number, n: number, rows: number, out: number) => void;
type EncodeFn = (input: number, n: number, rows: number, scales: number, out: number) => void;
type PackFn = (codes: number, n: number, lowBit: number, out: number) => void;

export interface FpxKernel {
  memory: { buffer: ArrayBuffer; grow(pages: number): number };
  amax_f32: SlabFn;
  amax_b16: SlabFn;
  encode_f32: EncodeFn;
  encode_f16: EncodeFn;
  encode_bf16: EncodeFn;
  pack1?: PackFn;
  pack2?: PackFn;
  pack4?: PackFn;
  unpack1?: PackFn;
  unpack2?: PackFn;
  unpack4?: PackFn;
  decode: EncodeFn;
}

const kernels = new Map<string, FpxKernel | null>();

/** The kernel for `format` (cached), or undefined where WebAssembly SIMD is unavailable. */
export function fpxKernel(format: FpxFormat): FpxKernel | undefined {
  const hit = kernels.get(format.name);
  if (hit !== undefined) return hit ?? undefined;
  const exports = instantiate(assembleModule(1, kernelFunctions(format)));
  const kernel = exports === undefined ? null : (exports as unknown as FpxKernel);
  kernels.set(format.name, kernel);
  return kernel ?? undefined;
}

function kernelFunctions(format: FpxFormat): FunctionSpec[] {
  const regions = regionsOf(format.nbits);
  return [amax(false), amax(true), encode(format, "f32"), encode(format, "f16"), encode(format, "bf16"), ...regions.map(pack), ...regions.map(unpack), decode(format)];
}

/** Runs `perRow` once per row: the `rows` local counts down to 0 (callers pass rows ≥ 1). */
function rowLoop(rowsLocal: number, perRow: number[]): number[] {
  return [...op.loop(), ...perRow, ...op.get(rowsLocal), ...op.i32(1), ...op.raw("i32.sub"), ...op.tee(rowsLocal), ...op.brIf(0), ...op.end()];
}

/** (in, n, rows, out): per row, 4 u32 lanes whose maximum is the largest magnitude bits. */
function amax(sixteenBit: boolean): FunctionSpec {
  const [IN, N, ROWS, OUT, END, MAX, V, MASK] = [0, 1, 2, 3, 4, 5, 6, 7];
  const body: number[] = [...op.splat32(sixteenBit ? 0x7fff : 0x7fffffff), ...op.set(MASK)];
  const perRow = [...op.splat32(0), ...op.set(MAX), ...op.get(IN), ...op.get(N), ...op.i32(sixteenBit ? 1 : 2), ...op.raw("i32.shl"), ...op.raw("i32.add"), ...op.set(END), ...op.loop()];
  perRow.push(...op.get(IN), ...op.load(), ...op.set(V));
  const lanes = sixteenBit ? (["i32x4.extend_low_i16x8_u", "i32x4.extend_high_i16x8_u"] as const) : [undefined];
  for (const extend of lanes) {
    perRow.push(...op.get(MAX), ...op.get(V));
    if (extend !== undefined) perRow.push(...op.simd(extend));
    perRow.push(...op.get(MASK), ...op.simd("v128.and"), ...op.simd("i32x4.max_u"), ...op.set(MAX));
  }
  perRow.push(...op.get(IN), ...op.i32(16), ...op.raw("i32.add"), ...op.tee(IN), ...op.get(END), ...op.raw("i32.lt_u"), ...op.brIf(0), ...op.end());
  perRow.push(...op.get(OUT), ...op.get(MAX), ...op.store(), ...op.get(OUT), ...op.i32(16), ...op.raw("i32.add"), ...op.set(OUT));
  body.push(...rowLoop(ROWS, perRow));
  return { name: sixteenBit ? "amax_b16" : "amax_f32", params: [I32, I32, I32, I32], results: [], locals: [I32, V128, V128, V128], body };
}

/** (in, n, rows, scales, out): codes of f32(x / scales[row]) for `rows` rows of n values (n % 16 = 0). */
function encode(format: FpxFormat, encoding: Encoding): FunctionSpec {
  const { ebits, mbits, bias } = format;
  const drop = 23 - mbits;
  const [IN, N, ROWS, SCALES, OUT] = [0, 1, 2, 3, 4];
  const [END, S, Q, A, DEN, SUM, V] = [5, 6, 7, 8, 9, 10, 11];
  const CODE = 12; // 4 locals
  // Constants live in locals, set once: V8 would otherwise rematerialise every v128.const.
  const constants = {
    abs: 0x7fffffff,
    minNormal: f32Bits(format.minNormal),
    maxNormal: f32Bits(format.maxNormal),
    // f32 whose ulp is the subnormal step 2^(1 − bias − mbits): adding it rounds like torchao
    magic: (127 - bias + drop + 1) << 23,
    maxCode: (1 << (ebits + mbits)) - 1,
    // normal path: exponent rebias (bias − 127) plus the round-half-down adder
    rebias: ((bias - 127) << 23) + ((1 << (drop - 1)) - 1),
    one: 1,
    signMask: format.signMask,
    half: 0x7fff,
    halfSign: 0x8000,
    two112: 0x77800000,
  };
  type Name = keyof typeof constants;
  const C = Object.fromEntries(Object.keys(constants).map((name, i) => [name, CODE + 4 + i])) as Record<Name, number>;
  const body: number[] = [];
  for (const [name, value] of Object.entries(constants)) body.push(...op.splat32(value), ...op.set(C[name as Name]));
  const perRow: number[] = [...op.get(SCALES), ...op.simd("v128.load32_splat", 2, 0), ...op.set(S)];
  perRow.push(...op.get(OUT), ...op.get(N), ...op.raw("i32.add"), ...op.set(END), ...op.loop());
  for (let k = 0; k < 4; k++) {
    // x as f32 lanes on the stack
    if (encoding === "f32") perRow.push(...op.get(IN), ...op.load(16 * k));
    else {
      if (k % 2 === 0) perRow.push(...op.get(IN), ...op.load(8 * k), ...op.set(V));
      perRow.push(...op.get(V), ...op.simd(k % 2 === 0 ? "i32x4.extend_low_i16x8_u" : "i32x4.extend_high_i16x8_u"), ...op.set(Q));
      if (encoding === "bf16") perRow.push(...op.get(Q), ...op.i32(16), ...op.simd("i32x4.shl"));
      else {
        perRow.push(...op.get(Q), ...op.get(C.half), ...op.simd("v128.and"), ...op.i32(13), ...op.simd("i32x4.shl"), ...op.get(C.two112), ...op.simd("f32x4.mul"));
        perRow.push(...op.get(Q), ...op.get(C.halfSign), ...op.simd("v128.and"), ...op.i32(16), ...op.simd("i32x4.shl"), ...op.simd("v128.or"));
      }
    }
    perRow.push(...op.get(S), ...op.simd("f32x4.div"), ...op.set(Q));
    perRow.push(...op.get(Q), ...op.get(C.abs), ...op.simd("v128.and"), ...op.set(A));
    perRow.push(...op.get(A), ...op.get(C.minNormal), ...op.simd("i32x4.lt_s"), ...op.set(DEN));
    perRow.push(...op.get(A), ...op.get(C.magic), ...op.simd("f32x4.add"), ...op.set(SUM));
    // saturated → max code; else subnormal → (sum bits − magic bits); else normal rounding
    perRow.push(...op.get(C.maxCode));
    perRow.push(...op.get(SUM), ...op.get(C.magic), ...op.simd("i32x4.sub"));
    perRow.push(...op.get(A), ...op.get(C.rebias), ...op.simd("i32x4.add"), ...op.get(A), ...op.i32(drop), ...op.simd("i32x4.shr_u"), ...op.get(C.one), ...op.simd("v128.and"), ...op.simd("i32x4.add"), ...op.i32(drop), ...op.simd("i32x4.shr_s"));
    perRow.push(...op.get(DEN), ...op.simd("v128.bitselect"));
    perRow.push(...op.get(A), ...op.get(C.maxNormal), ...op.simd("i32x4.ge_s"), ...op.simd("v128.bitselect"));
    perRow.push(...op.get(Q), ...op.i32(31 - ebits - mbits), ...op.simd("i32x4.shr_u"), ...op.get(C.signMask), ...op.simd("v128.and"), ...op.simd("v128.or"), ...op.set(CODE + k));
  }
  perRow.push(...op.get(OUT));
  perRow.push(...op.get(CODE), ...op.get(CODE + 1), ...op.simd("i16x8.narrow_i32x4_u"), ...op.get(CODE + 2), ...op.get(CODE + 3), ...op.simd("i16x8.narrow_i32x4_u"), ...op.simd("i8x16.narrow_i16x8_u"));
  perRow.push(...op.store());
  perRow.push(...op.get(IN), ...op.i32(encoding === "f32" ? 64 : 32), ...op.raw("i32.add"), ...op.set(IN));
  perRow.push(...op.get(OUT), ...op.i32(16), ...op.raw("i32.add"), ...op.tee(OUT), ...op.get(END), ...op.raw("i32.lt_u"), ...op.brIf(0), ...op.end());
  perRow.push(...op.get(SCALES), ...op.i32(4), ...op.raw("i32.add"), ...op.set(SCALES));
  body.push(...rowLoop(ROWS, perRow));
  return { name: `encode_${encoding}`, params: [I32, I32, I32, I32, I32], results: [], locals: [I32, ...new Array<number>(11 + Object.keys(constants).length).fill(V128)] as FunctionSpec["locals"], body };
}

/** (codes, n, lowBit, out): region y of a 64-row slab of codes [64, n] → `out` (8·y·n bytes). */
function pack(y: number): FunctionSpec {
  const groups = regionGroups(y);
  const rowsPerGroup = 8 / y;
  const [CODES, N, LOW, OUT, END, ACC, MASK] = [0, 1, 2, 3, 4, 5, 6];
  const ROW = 7; // rowsPerGroup locals
  const body: number[] = [...op.bytes16(new Array(16).fill((1 << y) - 1)), ...op.set(MASK)];
  body.push(...op.get(CODES), ...op.get(N), ...op.raw("i32.add"), ...op.set(END), ...op.loop());
  groups.forEach((group, g) => {
    group.rows.forEach((row, rr) => {
      body.push(...op.get(CODES), ...op.get(N), ...op.i32(row), ...op.raw("i32.mul"), ...op.raw("i32.add"), ...op.load());
      body.push(...op.get(LOW), ...op.simd("i8x16.shr_u"), ...op.get(MASK), ...op.simd("v128.and"), ...op.set(ROW + rr));
    });
    group.fields.forEach((field, j) => {
      let first = true;
      field.forEach((indices, rr) => {
        if (indices === undefined) return;
        body.push(...op.get(ROW + rr), ...op.bytes16(indices), ...op.simd("i8x16.swizzle"));
        if (!first) body.push(...op.simd("v128.or"));
        first = false;
      });
      if (j > 0) body.push(...op.i32(j * y), ...op.simd("i8x16.shl"), ...op.get(ACC), ...op.simd("v128.or"));
      body.push(...op.set(ACC));
    });
    body.push(...op.get(OUT), ...op.get(ACC), ...op.store(16 * g));
  });
  body.push(...op.get(OUT), ...op.i32(128 * y), ...op.raw("i32.add"), ...op.set(OUT));
  body.push(...op.get(CODES), ...op.i32(16), ...op.raw("i32.add"), ...op.tee(CODES), ...op.get(END), ...op.raw("i32.lt_u"), ...op.brIf(0), ...op.end());
  return { name: `pack${y}`, params: [I32, I32, I32, I32], results: [], locals: [I32, V128, V128, ...new Array<number>(rowsPerGroup).fill(V128)] as FunctionSpec["locals"], body };
}

/** (packed, n, lowBit, codes): the inverse of pack_y: ORs region y's bits of a 64-row slab into codes [64, n]. */
function unpack(y: number): FunctionSpec {
  const groups = regionGroups(y);
  const fieldsPerByte = 8 / y;
  const [PACKED, N, LOW, CODES, END, ACC, MASK, ADDR] = [0, 1, 2, 3, 4, 5, 6, 7];
  const FIELD = 8; // fieldsPerByte locals
  const body: number[] = [...op.bytes16(new Array(16).fill((1 << y) - 1)), ...op.set(MASK)];
  body.push(...op.get(CODES), ...op.get(N), ...op.raw("i32.add"), ...op.set(END), ...op.loop());
  groups.forEach((group, g) => {
    body.push(...op.get(PACKED), ...op.load(16 * g), ...op.set(ACC));
    for (let j = 0; j < fieldsPerByte; j++) {
      body.push(...op.get(ACC));
      if (j > 0) body.push(...op.i32(j * y), ...op.simd("i8x16.shr_u"));
      body.push(...op.get(MASK), ...op.simd("v128.and"), ...op.set(FIELD + j));
    }
    group.rows.forEach((row, rr) => {
      body.push(...op.get(CODES), ...op.get(N), ...op.i32(row), ...op.raw("i32.mul"), ...op.raw("i32.add"), ...op.tee(ADDR));
      body.push(...op.get(ADDR), ...op.load());
      let first = true;
      group.fields.forEach((field, j) => {
        const indices = field[rr];
        if (indices === undefined) return;
        // lane c of the row takes byte i of field j where pack placed (row, c) at i
        const inverse = new Array<number>(16).fill(0xff);
        indices.forEach((c, i) => {
          if (c !== 0xff) inverse[c] = i;
        });
        body.push(...op.get(FIELD + j), ...op.bytes16(inverse), ...op.simd("i8x16.swizzle"));
        if (!first) body.push(...op.simd("v128.or"));
        first = false;
      });
      body.push(...op.get(LOW), ...op.simd("i8x16.shl"), ...op.simd("v128.or"), ...op.store());
    });
  });
  body.push(...op.get(PACKED), ...op.i32(128 * y), ...op.raw("i32.add"), ...op.set(PACKED));
  body.push(...op.get(CODES), ...op.i32(16), ...op.raw("i32.add"), ...op.tee(CODES), ...op.get(END), ...op.raw("i32.lt_u"), ...op.brIf(0), ...op.end());
  return { name: `unpack${y}`, params: [I32, I32, I32, I32], results: [], locals: [I32, V128, V128, I32, ...new Array<number>(fieldsPerByte).fill(V128)] as FunctionSpec["locals"], body };
}

/**
 * (codes, n, rows, scales, out): f32 dequantization decode(code) · scale[row], exact. The code's
 * magnitude bits shifted under the f32 exponent field, times 2^(127 − bias), are the FPx value
 * for normals and subnormals alike (FP6-LLM's bit trick, B4 of the reference notes); the sign
 * bit moves to bit 31; the product with an fp16 scale is exact.
 */
function decode(format: FpxFormat): FunctionSpec {
  const { ebits, mbits, bias } = format;
  const [CODES, N, ROWS, SCALES, OUT] = [0, 1, 2, 3, 4];
  const [END, S, V, HALF, X, MAG, POW, SIGN] = [5, 6, 7, 8, 9, 10, 11, 12];
  const body: number[] = [...op.splat32(format.signMask - 1), ...op.set(MAG), ...op.splat32(f32Bits(2 ** (127 - bias))), ...op.set(POW), ...op.splat32(format.signMask), ...op.set(SIGN)];
  const perRow: number[] = [...op.get(SCALES), ...op.simd("v128.load32_splat", 2, 0), ...op.set(S)];
  perRow.push(...op.get(CODES), ...op.get(N), ...op.raw("i32.add"), ...op.set(END), ...op.loop());
  perRow.push(...op.get(CODES), ...op.load(), ...op.set(V));
  for (let k = 0; k < 4; k++) {
    if (k % 2 === 0) perRow.push(...op.get(V), ...op.simd(k === 0 ? "i16x8.extend_low_i8x16_u" : "i16x8.extend_high_i8x16_u"), ...op.set(HALF));
    perRow.push(...op.get(HALF), ...op.simd(k % 2 === 0 ? "i32x4.extend_low_i16x8_u" : "i32x4.extend_high_i16x8_u"), ...op.set(X));
    perRow.push(...op.get(OUT));
    perRow.push(...op.get(X), ...op.get(MAG), ...op.simd("v128.and"), ...op.i32(23 - mbits), ...op.simd("i32x4.shl"), ...op.get(POW), ...op.simd("f32x4.mul"));
    perRow.push(...op.get(X), ...op.get(SIGN), ...op.simd("v128.and"), ...op.i32(31 - ebits - mbits), ...op.simd("i32x4.shl"), ...op.simd("v128.or"));
    perRow.push(...op.get(S), ...op.simd("f32x4.mul"), ...op.store(16 * k));
  }
  perRow.push(...op.get(OUT), ...op.i32(64), ...op.raw("i32.add"), ...op.set(OUT));
  perRow.push(...op.get(CODES), ...op.i32(16), ...op.raw("i32.add"), ...op.tee(CODES), ...op.get(END), ...op.raw("i32.lt_u"), ...op.brIf(0), ...op.end());
  perRow.push(...op.get(SCALES), ...op.i32(4), ...op.raw("i32.add"), ...op.set(SCALES));
  body.push(...rowLoop(ROWS, perRow));
  return { name: "decode", params: [I32, I32, I32, I32, I32], results: [], locals: [I32, ...new Array<number>(7).fill(V128)] as FunctionSpec["locals"], body };
}

interface Group {
  /** Rows (0..63 of the slab) this group's 16 bytes take codes from. */
  rows: number[];
  /** fields[j][rr]: swizzle indices placing row rr's codes into field j of each byte (undefined: none). */
  fields: (number[] | undefined)[][];
}

/** The 8·y groups of 16 output bytes of one chunk of region y, from the scalar gather table. */
function regionGroups(y: number): Group[] {
  const { offsets, shifts } = regionTableForKernel(y);
  const perWord = 32 / y;
  const groups: Group[] = [];
  for (let g = 0; g < 8 * y; g++) {
    const rows: number[] = [];
    const fields: (number[] | undefined)[][] = Array.from({ length: 8 / y }, () => []);
    for (let i = 0; i < 16; i++) {
      const word = 4 * g + (i >> 2);
      for (let j = 0; j < 8 / y; j++) {
        const shift = 8 * (i & 3) + j * y;
        let slot = 0;
        while (shifts[word * perWord + slot] !== shift) slot++;
        const offset = offsets[word * perWord + slot]!;
        const [row, col] = [offset >> 4, offset & 15];
        let rr = rows.indexOf(row);
        if (rr < 0) rr = rows.push(row) - 1;
        const lanes = (fields[j]![rr] ??= new Array<number>(16).fill(0xff));
        lanes[i] = col;
      }
    }
    groups.push({ rows, fields });
  }
  return groups;
}
