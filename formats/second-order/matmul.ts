/**
 * Dense products for the second-order engine and SignRound, on row-major Float64Arrays.
 * (CPU path; the GPU engine issue replaces these with cuBLAS / kernels.)
 *
 * CONTRACT: signatures are shared by GPTQ, SignRound, SpQR and VPTQ; optimise the bodies freely.
 *
 * GotoBLAS-shaped: slices of both operands are copied ("packed") into 4-wide panels so the
 * innermost loop reads both contiguously, and one 4×4 tile of C is accumulated across the
 * whole k slice before it is added to C. The tile itself is a WebAssembly SIMD function
 * (f64x2): V8 does not vectorise JavaScript. On the 2-core EPYC dev box GPTQ's product
 * (m=K=4096, k=128, n=N=4096) runs at ~17 GFLOP/s this way, against ~4.7 with the same
 * packing and a 16-accumulator JavaScript tile, and ~1 for the plain i-p-j loop. 4×8 and 6×4
 * tiles need more than V8's 16 vector registers and measured ~25% slower. Where WebAssembly is unavailable
 * (`node --jitless`) a scalar tile gives the same sums in the same order.
 */

import { sleb, uleb } from "../wasm/assembler.js";

/** A matrix inside a Float64Array: element (i, j) at offset + i·rowStride + j, or at offset + j·rowStride + i when `transposed`. */
export interface MatrixView {
  data: Float64Array;
  offset: number;
  /** Elements between the starts of consecutive stored rows (≥ the stored row length). */
  rowStride: number;
  transposed?: boolean;
}

/** Panel width: every tile is 4 rows × 4 columns of C (8 f64x2 accumulators, no register spills). */
const PANEL = 4;
/** k per packed slice: a 4 × 256 B panel (8 KiB) stays in L1 while every A strip streams past it. */
const K_SLICE = 256;
/** Rows of A packed at once: 128 × 256 doubles = 256 KiB, sized for L2. */
const M_SLICE = 128;
/** Columns of B packed at once: 1024 × 256 doubles = 2 MiB, reused by every A slice (L3). */
const N_SLICE = 1024;

/** Scratch layout in doubles: packed A slice, packed B slice, one 4×4 output tile. */
const A_BASE = 0;
const B_BASE = A_BASE + M_SLICE * K_SLICE;
const TILE_BASE = B_BASE + N_SLICE * K_SLICE;
const SCRATCH_DOUBLES = TILE_BASE + PANEL * PANEL;

/** out[0…15] = Σ_p A(p, 0…3) ⊗ B(p, 0…3) over kLen steps of packed panels; offsets in doubles into `heap`. */
interface TileKernel {
  heap: Float64Array;
  tile(aOffset: number, bOffset: number, kLen: number, outOffset: number): void;
}

/** C[m×n] += alpha · A[m×k] · B[k×n]. Row-major, no aliasing between C and A or B. */
export function matmulAdd(c: Float64Array, a: Float64Array, b: Float64Array, m: number, k: number, n: number, alpha = 1): void {
  gemmAdd({ data: c, offset: 0, rowStride: n }, { data: a, offset: 0, rowStride: k }, { data: b, offset: 0, rowStride: n }, m, k, n, alpha);
}

/** C[m×n] += alpha · A[m×k] · B[k×n] on strided (optionally transposed) views. C must not overlap A or B. */
export function gemmAdd(c: MatrixView, a: MatrixView, b: MatrixView, m: number, k: number, n: number, alpha = 1): void {
  if (m <= 0 || n <= 0 || k <= 0 || alpha === 0) return;
  const kernel = tileKernel();
  for (let j0 = 0; j0 < n; j0 += N_SLICE) {
    const nCols = Math.min(N_SLICE, n - j0);
    for (let p0 = 0; p0 < k; p0 += K_SLICE) {
      const kLen = Math.min(K_SLICE, k - p0);
      packPanels(kernel.heap, B_BASE, b, p0, j0, kLen, nCols, 1, true);
      for (let i0 = 0; i0 < m; i0 += M_SLICE) {
        const mRows = Math.min(M_SLICE, m - i0);
        packPanels(kernel.heap, A_BASE, a, i0, p0, mRows, kLen, alpha, false);
        multiplySlice(kernel, c, i0, j0, mRows, nCols, kLen);
      }
    }
  }
}

/**
 * Copies a slice of `src` into 4-wide panels at `dst[base…]`, zero-padded to whole panels:
 * - A (`alongColumns` false, mRows × kLen from (r0, c0)): strip s holds (p, r) at s·4·kLen + p·4 + r.
 * - B (`alongColumns` true, kLen × nCols from (r0, c0)): panel s holds (p, c) at s·4·kLen + p·4 + c.
 */
function packPanels(dst: Float64Array, base: number, src: MatrixView, r0: number, c0: number, rowCount: number, colCount: number, scale: number, alongColumns: boolean): void {
  const { data, offset, rowStride, transposed } = src;
  // Element (i, j) of the logical operand sits at offset + i·di + j·dj.
  const di = transposed === true ? 1 : rowStride;
  const dj = transposed === true ? rowStride : 1;
  const panelLength = alongColumns ? colCount : rowCount;
  const depth = alongColumns ? rowCount : colCount;
  // Steps in the source along the panel's 4-wide direction (dw) and along its depth (dd).
  const dw = alongColumns ? dj : di;
  const dd = alongColumns ? di : dj;
  const origin = offset + r0 * di + c0 * dj;
  for (let s = 0; s * PANEL < panelLength; s++) {
    const width = Math.min(PANEL, panelLength - s * PANEL);
    const out = base + s * PANEL * depth;
    const start = origin + s * PANEL * dw;
    for (let p = 0; p < depth; p++) {
      const from = start + p * dd;
      const to = out + p * PANEL;
      for (let w = 0; w < PANEL; w++) dst[to + w] = w < width ? scale * data[from + w * dw]! : 0;
    }
  }
}

/** C[i0 + (0…mRows), j0 + (0…nCols)] += packed A slice × packed B slice, tile by tile. */
function multiplySlice(kernel: TileKernel, c: MatrixView, i0: number, j0: number, mRows: number, nCols: number, kLen: number): void {
  const { heap } = kernel;
  const { data, rowStride } = c;
  const panelSize = PANEL * kLen;
  for (let js = 0; js * PANEL < nCols; js++) {
    const cols = Math.min(PANEL, nCols - js * PANEL);
    for (let is = 0; is * PANEL < mRows; is++) {
      const rows = Math.min(PANEL, mRows - is * PANEL);
      kernel.tile(A_BASE + is * panelSize, B_BASE + js * panelSize, kLen, TILE_BASE);
      const cStart = c.offset + (i0 + is * PANEL) * rowStride + j0 + js * PANEL;
      if (rows === PANEL && cols === PANEL) {
        for (let r = 0, o = cStart, t = TILE_BASE; r < PANEL; r++, o += rowStride, t += PANEL) {
          data[o]! += heap[t]!;
          data[o + 1]! += heap[t + 1]!;
          data[o + 2]! += heap[t + 2]!;
          data[o + 3]! += heap[t + 3]!;
        }
      } else {
        for (let r = 0; r < rows; r++) for (let q = 0; q < cols; q++) data[cStart + r * rowStride + q]! += heap[TILE_BASE + r * PANEL + q]!;
      }
    }
  }
}

let cachedKernel: TileKernel | undefined;

function tileKernel(): TileKernel {
  cachedKernel ??= wasmTileKernel() ?? scalarTileKernel();
  return cachedKernel;
}

function scalarTileKernel(): TileKernel {
  const heap = new Float64Array(SCRATCH_DOUBLES);
  return {
    heap,
    tile(aOffset, bOffset, kLen, outOffset) {
      for (let t = 0; t < PANEL * PANEL; t++) {
        const r = t >> 2;
        const q = t & 3;
        let sum = 0;
        for (let p = 0; p < kLen; p++) sum += heap[aOffset + p * PANEL + r]! * heap[bOffset + p * PANEL + q]!;
        heap[outOffset + t] = sum;
      }
    },
  };
}

/** The part of the WebAssembly global used here (lib.dom is not in this project's libs). */
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object) => { exports: { memory: { buffer: ArrayBuffer }; tile: TileKernel["tile"] } };
}

/** The tile as WebAssembly, or undefined where WebAssembly (SIMD) is unavailable. */
function wasmTileKernel(): TileKernel | undefined {
  const wasm = (globalThis as { WebAssembly?: WasmApi }).WebAssembly;
  if (wasm === undefined) return undefined;
  try {
    const pages = Math.ceil((SCRATCH_DOUBLES * 8) / 65536);
    const { exports } = new wasm.Instance(new wasm.Module(assembleTileModule(pages)));
    return { heap: new Float64Array(exports.memory.buffer, 0, SCRATCH_DOUBLES), tile: exports.tile };
  } catch {
    return undefined;
  }
}

/**
 * The module, in WAT (params are offsets in doubles; acc[r][h] holds C(r, 2h…2h+1)):
 *
 *   (memory (export "memory") <pages>)
 *   (func (export "tile") (param $a i32) (param $b i32) (param $k i32) (param $out i32)
 *     $a <<= 3  $b <<= 3  $out <<= 3
 *     (loop
 *       $b0 = v128.load($b)  $b1 = v128.load($b + 16)
 *       for r in 0…3: $ar = v128.load64_splat($a + 8r); acc[r][h] = f64x2.add(acc[r][h], f64x2.mul($ar, $bh))
 *       $a += 32  $b += 32  (br_if 0 ($k -= 1)))
 *     for r, h: v128.store($out + 16·(2r + h), acc[r][h]))
 *
 * Each tile element is summed over p in order, with one rounding per product and per sum,
 * exactly like the scalar tile.
 */
function assembleTileModule(pages: number): Uint8Array {
  const [A, B, K, OUT, ACC] = [0, 1, 2, 3, 4];
  const [B0, AR] = [ACC + 8, ACC + 10];
  const get = (i: number) => [0x20, i];
  const set = (i: number) => [0x21, i];
  const i32 = (v: number) => [0x41, ...sleb(v)];
  const simd = (opcode: number, ...immediates: number[]) => [0xfd, ...uleb(opcode), ...immediates];
  const [V128_LOAD, LOAD64_SPLAT, V128_STORE, F64X2_ADD, F64X2_MUL] = [0x00, 0x0a, 0x0b, 0xf0, 0xf2];
  const [I32_ADD, I32_SUB, I32_SHL, TEE, BR_IF, LOOP, VOID, END] = [0x6a, 0x6b, 0x74, 0x22, 0x0d, 0x03, 0x40, 0x0b];
  const code: number[] = [];
  for (const p of [A, B, OUT]) code.push(...get(p), ...i32(3), I32_SHL, ...set(p));
  code.push(LOOP, VOID);
  for (let h = 0; h < 2; h++) code.push(...get(B), ...simd(V128_LOAD, 4, 16 * h), ...set(B0 + h));
  for (let r = 0; r < 4; r++) {
    code.push(...get(A), ...simd(LOAD64_SPLAT, 3, 8 * r), ...set(AR));
    for (let h = 0; h < 2; h++) code.push(...get(ACC + 2 * r + h), ...get(AR), ...get(B0 + h), ...simd(F64X2_MUL), ...simd(F64X2_ADD), ...set(ACC + 2 * r + h));
  }
  code.push(...get(A), ...i32(32), I32_ADD, ...set(A), ...get(B), ...i32(32), I32_ADD, ...set(B));
  code.push(...get(K), ...i32(1), I32_SUB, TEE, K, BR_IF, 0, END);
  for (let t = 0; t < 8; t++) code.push(...get(OUT), ...get(ACC + t), ...simd(V128_STORE, 4, 16 * t));
  code.push(END);
  const V128 = 0x7b;
  const body = [1, 11, V128, ...code]; // one run of 11 v128 locals: 8 accumulators, 2 B halves, 1 A splat
  const section = (id: number, bytes: number[]) => [id, ...uleb(bytes.length), ...bytes];
  const name = (s: string) => [s.length, ...Array.from(s, (ch) => ch.charCodeAt(0))];
  const I32 = 0x7f;
  return new Uint8Array([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    ...section(1, [1, 0x60, 4, I32, I32, I32, I32, 0]),
    ...section(3, [1, 0]),
    ...section(5, [1, 0, ...uleb(pages)]),
    ...section(7, [2, ...name("memory"), 2, 0, ...name("tile"), 0, 0]),
    ...section(10, [1, ...uleb(body.length), ...body]),
  ]);
}
