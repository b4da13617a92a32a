import { assembleModule, F32, I32, instantiate, op, V128, type FunctionSpec } from "../wasm/assembler.js";
import { f32Bits } from "./codec.js";
import type { FpxFormat } from "./format.js";
import { regionsOf, regionTableForKernel } from "./tc-layout.js";

/**
 * WebAssembly SIMD kernels of the FPx quantizer (V8 does not vectorise JavaScript; these run
 * 4–16 lanes per instruction). Exactness is by construction, not tolerance:
 *
 * - widen_f16 / widen_bf16: 16-bit floats → f32. f16 uses the exact magic multiply
 *   ((h & 0x7fff) << 13) · 2^112, which maps normals and subnormals alike; Inf/NaN halves are
 *   caught by the caller from the row's largest magnitude, which these also store.
 * - amax_f32: the row's largest |bits| (f32 input is encoded in place).
 * - encode: f32x4.div by the row scale (IEEE division, as torch's CPU kernel), then torchao's
 *   `_f32_to_floatx_unpacked` branch-free: integer round-to-nearest-even for normals, the same
 *   magic float addition torchao uses for subnormals (f32x4.add rounds like torch), saturation,
 *   sign.
 * - pack_y: one region of the tensor-core layout for a 64-row slab. Each 16 output bytes
 *   (4 words) take a fixed set of 8/y rows of a 16-column tile: their codes are loaded as
 *   vectors, the region's bits extracted, and placed with i8x16.swizzle tables derived from
 *   the scalar packer's gather table (tc-layout.ts), so both pack the same bytes.
 *
 * Memory: bytes [0, 16) hold the last row maximum (4 u32 lanes); the caller places its
 * buffers after SCRATCH_BYTES.
 */
export const SCRATCH_BYTES = 64;
const MAX_SLOT = 0;

export interface FpxKernel {
  memory: { buffer: ArrayBuffer; grow(pages: number): number };
  widen_f16(input: number, output: number, n: number): void;
  widen_bf16(input: number, output: number, n: number): void;
  amax_f32(input: number, n: number): void;
  encode(src: number, dst: number, n: number, scale: number): void;
  pack1?(codes: number, n: number, lowBit: number, out: number): void;
  pack2?(codes: number, n: number, lowBit: number, out: number): void;
  pack4?(codes: number, n: number, lowBit: number, out: number): void;
  /** Largest magnitude bits of the last widen/amax call. */
  rowMax(): number;
}

const kernels = new Map<string, FpxKernel | null>();

/** The kernel for `format` (cached), or undefined where WebAssembly SIMD is unavailable. */
export function fpxKernel(format: FpxFormat): FpxKernel | undefined {
  const hit = kernels.get(format.name);
  if (hit !== undefined) return hit ?? undefined;
  const exports = instantiate(assembleModule(1, kernelFunctions(format)));
  let kernel: FpxKernel | null = null;
  if (exports !== undefined) {
    const memory = exports["memory"] as FpxKernel["memory"];
    kernel = {
      ...(exports as unknown as Omit<FpxKernel, "rowMax">),
      memory,
      rowMax: () => {
        const l = new Uint32Array(memory.buffer, MAX_SLOT, 4);
        return Math.max(l[0]!, l[1]!, l[2]!, l[3]!);
      },
    };
  }
  kernels.set(format.name, kernel);
  return kernel ?? undefined;
}

function kernelFunctions(format: FpxFormat): FunctionSpec[] {
  return [widen16("widen_f16", true), widen16("widen_bf16", false), amaxF32(), encode(format), ...regionsOf(format.nbits).map(pack)];
}

/** (in, out, n): n 16-bit floats at `in` → f32 at `out`; n % 8 = 0. */
function widen16(name: string, isF16: boolean): FunctionSpec {
  const [IN, OUT, N, END, V, HALF, MAX] = [0, 1, 2, 3, 4, 5, 6];
  const body: number[] = [...op.get(IN), ...op.get(N), ...op.i32(1), ...op.raw("i32.shl"), ...op.raw("i32.add"), ...op.set(END), ...op.loop()];
  body.push(...op.get(IN), ...op.load(), ...op.set(V));
  for (const [extend, offset] of [["i32x4.extend_low_i16x8_u", 0], ["i32x4.extend_high_i16x8_u", 16]] as const) {
    body.push(...op.get(V), ...op.simd(extend), ...op.set(HALF));
    // magnitude bits, for the row maximum
    body.push(...op.get(MAX), ...op.get(HALF), ...op.splat32(0x7fff), ...op.simd("v128.and"), ...op.simd("i32x4.max_u"), ...op.set(MAX));
    body.push(...op.get(OUT));
    if (isF16) {
      body.push(...op.get(HALF), ...op.splat32(0x7fff), ...op.simd("v128.and"), ...op.i32(13), ...op.simd("i32x4.shl"), ...op.splat32(0x77800000), ...op.simd("f32x4.mul"));
      body.push(...op.get(HALF), ...op.splat32(0x8000), ...op.simd("v128.and"), ...op.i32(16), ...op.simd("i32x4.shl"), ...op.simd("v128.or"));
    } else {
      body.push(...op.get(HALF), ...op.i32(16), ...op.simd("i32x4.shl"));
    }
    body.push(...op.store(offset));
  }
  body.push(...op.get(OUT), ...op.i32(32), ...op.raw("i32.add"), ...op.set(OUT));
  body.push(...op.get(IN), ...op.i32(16), ...op.raw("i32.add"), ...op.tee(IN), ...op.get(END), ...op.raw("i32.lt_u"), ...op.brIf(0), ...op.end());
  body.push(...op.i32(MAX_SLOT), ...op.get(MAX), ...op.store());
  return { name, params: [I32, I32, I32], results: [], locals: [I32, V128, V128, V128], body };
}

/** (in, n): largest |bits| of n f32 at `in`; n % 4 = 0. */
function amaxF32(): FunctionSpec {
  const [IN, N, END, MAX] = [0, 1, 2, 3];
  const body = [...op.get(IN), ...op.get(N), ...op.i32(2), ...op.raw("i32.shl"), ...op.raw("i32.add"), ...op.set(END), ...op.loop()];
  body.push(...op.get(MAX), ...op.get(IN), ...op.load(), ...op.splat32(0x7fffffff), ...op.simd("v128.and"), ...op.simd("i32x4.max_u"), ...op.set(MAX));
  body.push(...op.get(IN), ...op.i32(16), ...op.raw("i32.add"), ...op.tee(IN), ...op.get(END), ...op.raw("i32.lt_u"), ...op.brIf(0), ...op.end());
  body.push(...op.i32(MAX_SLOT), ...op.get(MAX), ...op.store());
  return { name: "amax_f32", params: [I32, I32], results: [], locals: [I32, V128], body };
}

/** (src, dst, n, scale): codes of f32(src[i] / scale) for n f32 (n % 16 = 0), as torchao rounds them. */
function encode(format: FpxFormat): FunctionSpec {
  const { ebits, mbits, bias } = format;
  const drop = 23 - mbits;
  const rebias = ((bias - 127) << 23) + ((1 << (drop - 1)) - 1);
  const magic = (127 - bias + drop + 1) << 23;
  const [SRC, DST, N, SCALE] = [0, 1, 2, 3];
  const [END, S, Q, A, DEN, SUM] = [4, 5, 6, 7, 8, 9];
  const CODE = 10; // 4 locals
  const sumOf = () => [...op.get(A), ...op.splat32(magic), ...op.simd("f32x4.add"), ...op.set(SUM)];
  const isSubnormal = () => [...op.get(A), ...op.splat32(f32Bits(format.minNormal)), ...op.simd("i32x4.lt_s"), ...op.set(DEN)];
  const body: number[] = [...op.get(SCALE), ...op.simd("f32x4.splat"), ...op.set(S)];
  body.push(...op.get(DST), ...op.get(N), ...op.raw("i32.add"), ...op.set(END), ...op.loop());
  for (let k = 0; k < 4; k++) {
    body.push(...op.get(SRC), ...op.load(16 * k), ...op.get(S), ...op.simd("f32x4.div"), ...op.set(Q));
    body.push(...op.get(Q), ...op.splat32(0x7fffffff), ...op.simd("v128.and"), ...op.set(A));
    body.push(...isSubnormal(), ...sumOf());
    // saturated → max code; else subnormal → (sum bits − magic bits); else normal rounding
    body.push(...op.splat32((1 << (ebits + mbits)) - 1));
    body.push(...op.get(SUM), ...op.splat32(magic), ...op.simd("i32x4.sub"));
    body.push(...op.get(A), ...op.splat32(rebias), ...op.simd("i32x4.add"), ...op.get(A), ...op.i32(drop), ...op.simd("i32x4.shr_u"), ...op.splat32(1), ...op.simd("v128.and"), ...op.simd("i32x4.add"), ...op.i32(drop), ...op.simd("i32x4.shr_s"));
    body.push(...op.get(DEN), ...op.simd("v128.bitselect"));
    body.push(...op.get(A), ...op.splat32(f32Bits(format.maxNormal)), ...op.simd("i32x4.ge_s"), ...op.simd("v128.bitselect"));
    body.push(...op.get(Q), ...op.i32(31 - ebits - mbits), ...op.simd("i32x4.shr_u"), ...op.splat32(format.signMask), ...op.simd("v128.and"), ...op.simd("v128.or"), ...op.set(CODE + k));
  }
  body.push(...op.get(DST));
  body.push(...op.get(CODE), ...op.get(CODE + 1), ...op.simd("i16x8.narrow_i32x4_u"), ...op.get(CODE + 2), ...op.get(CODE + 3), ...op.simd("i16x8.narrow_i32x4_u"), ...op.simd("i8x16.narrow_i16x8_u"));
  body.push(...op.store());
  body.push(...op.get(SRC), ...op.i32(64), ...op.raw("i32.add"), ...op.set(SRC));
  body.push(...op.get(DST), ...op.i32(16), ...op.raw("i32.add"), ...op.tee(DST), ...op.get(END), ...op.raw("i32.lt_u"), ...op.brIf(0), ...op.end());
  return { name: "encode", params: [I32, I32, I32, F32], results: [], locals: [I32, ...new Array<number>(9).fill(V128)] as FunctionSpec["locals"], body };
}

/** (codes, n, lowBit, out): region y of a 64-row slab of codes [64, n] → `out` (8·y·n bytes). */
function pack(y: number): FunctionSpec {
  const groups = regionGroups(y);
  const rowsPerGroup = 8 / y;
  const [CODES, N, LOW, OUT, END, ACC] = [0, 1, 2, 3, 4, 5];
  const ROW = 6; // rowsPerGroup locals
  const body: number[] = [...op.get(CODES), ...op.get(N), ...op.raw("i32.add"), ...op.set(END), ...op.loop()];
  groups.forEach((group, g) => {
    group.rows.forEach((row, rr) => {
      body.push(...op.get(CODES), ...op.get(N), ...op.i32(row), ...op.raw("i32.mul"), ...op.raw("i32.add"), ...op.load());
      body.push(...op.get(LOW), ...op.simd("i8x16.shr_u"), ...op.bytes16(new Array(16).fill((1 << y) - 1)), ...op.simd("v128.and"), ...op.set(ROW + rr));
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
  return { name: `pack${y}`, params: [I32, I32, I32, I32], results: [], locals: [I32, V128, ...new Array<number>(rowsPerGroup).fill(V128)] as FunctionSpec["locals"], body };
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
