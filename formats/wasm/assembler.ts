/**
 * A minimal WebAssembly assembler for lmpack's SIMD kernels: instruction emitters with the
 * spec's names, and a module builder (one exported memory, exported functions). Kernels are
 * assembled at run time, so the package ships no binaries and needs no toolchain; where
 * WebAssembly or SIMD is unavailable (`node --jitless`) `instantiate` returns undefined and
 * callers use their scalar JavaScript path, which gives the same results.
 *
 * Opcodes: WebAssembly core spec 2.0, section 5.4 (SIMD instructions are 0xFD + LEB128 opcode).
 */

export const I32 = 0x7f;
export const F32 = 0x7d;
export const V128 = 0x7b;
export type ValueType = typeof I32 | typeof F32 | typeof V128;

/** SIMD opcodes used by lmpack's kernels (after the 0xFD prefix). */
export const SIMD = {
  "v128.load": 0x00,
  "v128.load32_splat": 0x09,
  "v128.store": 0x0b,
  "v128.const": 0x0c,
  "i8x16.swizzle": 0x0e,
  "i32x4.lt_s": 0x39,
  "i32x4.ge_s": 0x3f,
  "v128.and": 0x4e,
  "v128.or": 0x50,
  "v128.bitselect": 0x52,
  "i8x16.narrow_i16x8_u": 0x66,
  "i8x16.shl": 0x6b,
  "i8x16.shr_u": 0x6d,
  "i16x8.narrow_i32x4_u": 0x86,
  "i16x8.extend_low_i8x16_u": 0x89,
  "i16x8.extend_high_i8x16_u": 0x8a,
  "i32x4.extend_low_i16x8_u": 0xa9,
  "i32x4.extend_high_i16x8_u": 0xaa,
  "i32x4.shl": 0xab,
  "i32x4.shr_s": 0xac,
  "i32x4.shr_u": 0xad,
  "i32x4.add": 0xae,
  "i32x4.sub": 0xb1,
  "i32x4.max_u": 0xb9,
  "f32x4.add": 0xe4,
  "f32x4.mul": 0xe6,
  "f32x4.div": 0xe7,
} as const;
export type SimdOp = keyof typeof SIMD;

const OP = {
  loop: 0x03, end: 0x0b, br_if: 0x0d,
  "local.get": 0x20, "local.set": 0x21, "local.tee": 0x22,
  "i32.const": 0x41, "i32.lt_u": 0x49, "i32.add": 0x6a, "i32.sub": 0x6b, "i32.mul": 0x6c, "i32.shl": 0x74,
} as const;
const VOID_BLOCK = 0x40;

/** Instruction emitters; each returns the bytes of one instruction. */
export const op = {
  get: (local: number) => [OP["local.get"], ...uleb(local)],
  set: (local: number) => [OP["local.set"], ...uleb(local)],
  tee: (local: number) => [OP["local.tee"], ...uleb(local)],
  i32: (value: number) => [OP["i32.const"], ...sleb(value | 0)],
  raw: (name: "i32.lt_u" | "i32.add" | "i32.sub" | "i32.mul" | "i32.shl") => [OP[name]],
  loop: () => [OP.loop, VOID_BLOCK],
  end: () => [OP.end],
  brIf: (depth: number) => [OP.br_if, ...uleb(depth)],
  simd: (name: SimdOp, ...immediates: number[]) => [0xfd, ...uleb(SIMD[name]), ...immediates],
  /** v128.load / v128.store with a byte offset (alignment hint 1 = unaligned-safe). */
  load: (offset = 0) => [0xfd, ...uleb(SIMD["v128.load"]), 0, ...uleb(offset)],
  store: (offset = 0) => [0xfd, ...uleb(SIMD["v128.store"]), 0, ...uleb(offset)],
  /** v128.const from 16 bytes. */
  bytes16: (bytes: ArrayLike<number>) => [0xfd, ...uleb(SIMD["v128.const"]), ...Array.from(bytes, (b) => b & 0xff)],
  /** v128.const with four equal i32 lanes. */
  splat32: (value: number) => {
    const lane = [value & 0xff, (value >>> 8) & 0xff, (value >>> 16) & 0xff, (value >>> 24) & 0xff];
    return op.bytes16([...lane, ...lane, ...lane, ...lane]);
  },
};

export interface FunctionSpec {
  name: string;
  params: ValueType[];
  results: ValueType[];
  /** Extra locals after the params, in declaration order. */
  locals: ValueType[];
  body: number[];
}

/** A module with one exported memory ("memory", `pages` of 64 KiB) and the given exported functions. */
export function assembleModule(pages: number, functions: FunctionSpec[]): Uint8Array {
  const section = (id: number, bytes: number[]) => [id, ...uleb(bytes.length), ...bytes];
  const vector = (items: number[][]) => [...uleb(items.length), ...items.flat()];
  const name = (s: string) => [...uleb(s.length), ...Array.from(s, (ch) => ch.charCodeAt(0))];
  const types = functions.map((f) => [0x60, ...vector(f.params.map((t) => [t])), ...vector(f.results.map((t) => [t]))]);
  const bodies = functions.map((f) => {
    const runs: number[][] = [];
    for (const t of f.locals) {
      const last = runs[runs.length - 1];
      if (last !== undefined && last[1] === t) last[0]!++;
      else runs.push([1, t]);
    }
    const body = [...vector(runs.map(([count, t]) => [...uleb(count!), t!])), ...f.body, OP.end];
    return [...uleb(body.length), ...body];
  });
  return new Uint8Array([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    ...section(1, vector(types)),
    ...section(3, vector(functions.map((_, i) => uleb(i)))),
    ...section(5, [1, 0, ...uleb(pages)]),
    ...section(7, vector([[...name("memory"), 2, 0], ...functions.map((f, i) => [...name(f.name), 0, ...uleb(i)])])),
    ...section(10, vector(bodies)),
  ]);
}

/** The part of the WebAssembly global lmpack uses (lib.dom is not in this project's libs). */
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object) => { exports: Record<string, unknown> };
}

/** Instantiates a module; undefined where WebAssembly (or SIMD) is unavailable or LMPACK_NO_WASM=1. */
export function instantiate(bytes: Uint8Array): Record<string, unknown> | undefined {
  const wasm = (globalThis as { WebAssembly?: WasmApi }).WebAssembly;
  if (wasm === undefined || process.env["LMPACK_NO_WASM"] === "1") return undefined;
  try {
    return new wasm.Instance(new wasm.Module(bytes)).exports;
  } catch {
    return undefined;
  }
}

export function uleb(value: number): number[] {
  const bytes: number[] = [];
  do {
    const low = value & 0x7f;
    value >>>= 7;
    bytes.push(value === 0 ? low : low | 0x80);
  } while (value !== 0);
  return bytes;
}

export function sleb(value: number): number[] {
  const bytes: number[] = [];
  for (;;) {
    const low = value & 0x7f;
    value >>= 7;
    const done = (value === 0 && (low & 0x40) === 0) || (value === -1 && (low & 0x40) !== 0);
    bytes.push(done ? low : low | 0x80);
    if (done) return bytes;
  }
}
