import { convertFloatBytes } from "../dense/convert.js";
import { f16Value, nonFiniteError, rowScale } from "./row-quant.js";
import { fpxKernel, type FpxKernel } from "./simd-kernel.js";
import { fitsTcLayout, regionsOf, tcPackedBytes } from "./tc-layout.js";
import type { FpxQuantizeOptions } from "./quantize.js";
import type { FpxTensor } from "./types.js";
import { FormatError } from "../errors.js";

/** A row-major matrix as raw little-endian bytes. */
export interface DenseMatrix {
  bytes: Uint8Array;
  dtype: "F32" | "F16" | "BF16";
}

const SLAB_ROWS = 64;
const PAGE_BYTES = 65536;

/**
 * The quantize-and-pack pipeline on the WebAssembly SIMD kernels, one 64-row slab at a time:
 * the slab's raw rows are copied into kernel memory; the kernel finds each row's largest
 * magnitude; JavaScript derives the rows' scales (rowScale, shared with the scalar path); the
 * kernel encodes the slab, then packs each region, whose slab bytes are contiguous in the
 * output. All-zero rows (codes ±0, scale 0) take their codes from the input's sign bits.
 * Returns undefined without the kernel.
 */
export function quantizeFpxSimd(matrix: DenseMatrix, M: number, N: number, options: FpxQuantizeOptions): FpxTensor | undefined {
  const { format, codesFrom } = options;
  if (!fitsTcLayout(M, N)) throw new FormatError("PACKED_SHAPE_MISMATCH", "the tensor-core FPx layout needs rows and columns that are multiples of 64", { tensor: options.tensor, expected: "multiples of 64x64", actual: `${M}x${N}` });
  const kernel = fpxKernel(format);
  if (kernel === undefined) return undefined;
  const elementBytes = matrix.dtype === "F32" ? 4 : 2;
  if (matrix.bytes.length !== M * N * elementBytes) throw new FormatError("PACKED_SHAPE_MISMATCH", "weight bytes do not match the matrix shape", { tensor: options.tensor, expected: M * N * elementBytes, actual: matrix.bytes.length });
  // Kernel memory: row maxima (4 u32 per row) | row scales (f32) | slab input | slab codes | one region of the slab.
  const MAXIMA = 0;
  const SCALES = MAXIMA + SLAB_ROWS * 16;
  const IN = SCALES + SLAB_ROWS * 4;
  const CODES = IN + SLAB_ROWS * N * elementBytes;
  const OUT = CODES + SLAB_ROWS * N;
  ensureMemory(kernel, OUT + 8 * 4 * N);
  const memory = new Uint8Array(kernel.memory.buffer);
  const maxima = new Uint32Array(kernel.memory.buffer, MAXIMA, SLAB_ROWS * 4);
  const codesScales = new Float32Array(kernel.memory.buffer, SCALES, SLAB_ROWS);
  const amax = matrix.dtype === "F32" ? kernel.amax_f32 : kernel.amax_b16;
  const encode = matrix.dtype === "F32" ? kernel.encode_f32 : matrix.dtype === "F16" ? kernel.encode_f16 : kernel.encode_bf16;
  const packed = new Uint8Array(tcPackedBytes(M, N, format.nbits));
  const scales = new Uint16Array(M);
  const regions = regionsOf(format.nbits);
  const slabBytes = SLAB_ROWS * N * elementBytes;
  const zeroRows: number[] = [];
  for (let slab = 0; slab < M / SLAB_ROWS; slab++) {
    memory.set(matrix.bytes.subarray(slab * slabBytes, (slab + 1) * slabBytes), IN);
    amax(IN, N, SLAB_ROWS, MAXIMA);
    zeroRows.length = 0;
    for (let rr = 0; rr < SLAB_ROWS; rr++) {
      const r = slab * SLAB_ROWS + rr;
      const value = magnitudeValue(Math.max(maxima[4 * rr]!, maxima[4 * rr + 1]!, maxima[4 * rr + 2]!, maxima[4 * rr + 3]!), matrix.dtype);
      if (!Number.isFinite(value)) throw nonFiniteError(rowValues(matrix, r, N), r, options.tensor);
      const scale = rowScale(value, format, codesFrom, r, options.tensor);
      scales[r] = scale.scaleBits;
      codesScales[rr] = scale.zero ? 1 : scale.codesScale;
      if (scale.zero) zeroRows.push(rr);
    }
    encode(IN, N, SLAB_ROWS, SCALES, CODES);
    for (const rr of zeroRows) signedZeros(memory, IN + rr * N * elementBytes, elementBytes, N, CODES + rr * N, format.signMask);
    let regionBase = 0;
    let used = 0;
    for (const y of regions) {
      const pack = y === 1 ? kernel.pack1! : y === 2 ? kernel.pack2! : kernel.pack4!;
      pack(CODES, N, format.nbits - used - y, OUT);
      const slabRegionBytes = 8 * y * N;
      packed.set(memory.subarray(OUT, OUT + slabRegionBytes), regionBase + slab * slabRegionBytes);
      regionBase += (M * N * y) / 8;
      used += y;
    }
  }
  return { format, outFeatures: M, inFeatures: N, packed, scales };
}

/** Codes of an all-zero row: each zero's sign (the top bit of its little-endian element). */
function signedZeros(memory: Uint8Array, rowAt: number, elementBytes: number, n: number, codesAt: number, signMask: number): void {
  for (let c = 0; c < n; c++) memory[codesAt + c] = memory[rowAt + c * elementBytes + elementBytes - 1]! & 0x80 ? signMask : 0;
}

function ensureMemory(kernel: FpxKernel, bytes: number): void {
  const missing = bytes - kernel.memory.buffer.byteLength;
  if (missing > 0) kernel.memory.grow(Math.ceil(missing / PAGE_BYTES));
}

const bitsScratch = new Uint32Array(1);
const valueScratch = new Float32Array(bitsScratch.buffer);

/** Value of the largest magnitude bits in the source dtype (Infinity for Inf/NaN). */
function magnitudeValue(bits: number, dtype: DenseMatrix["dtype"]): number {
  if (dtype === "F16") return bits >= 0x7c00 ? Infinity : f16Value(bits);
  bitsScratch[0] = dtype === "BF16" ? bits << 16 : bits;
  const value = valueScratch[0]!;
  return Number.isNaN(value) ? Infinity : value;
}

/** One row as f32 (error path only). */
function rowValues(matrix: DenseMatrix, r: number, N: number): Float32Array {
  const elementBytes = matrix.dtype === "F32" ? 4 : 2;
  const bytes = convertFloatBytes(matrix.bytes.subarray(r * N * elementBytes, (r + 1) * N * elementBytes), matrix.dtype, "F32");
  return new Float32Array(bytes.slice().buffer);
}
