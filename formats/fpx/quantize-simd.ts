import { convertFloatBytes } from "../dense/convert.js";
import { fpxEncoder } from "./codec.js";
import { encodeRowScalar, nonFiniteError, rowScale } from "./row-quant.js";
import { fpxKernel, SCRATCH_BYTES, type FpxKernel } from "./simd-kernel.js";
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
 * the slab's raw rows are copied into kernel memory; per row the kernel widens to f32 and
 * finds the largest magnitude, JavaScript derives the row's scales (rowScale, shared with the
 * scalar path), the kernel encodes the row; then the kernel packs each region of the slab,
 * whose bytes are contiguous in the output. All-zero rows (codes ±0) take the scalar encoder.
 * Returns undefined without the kernel.
 */
export function quantizeFpxSimd(matrix: DenseMatrix, M: number, N: number, options: FpxQuantizeOptions): FpxTensor | undefined {
  const { format, codesFrom } = options;
  if (!fitsTcLayout(M, N)) throw new FormatError("PACKED_SHAPE_MISMATCH", "the tensor-core FPx layout needs rows and columns that are multiples of 64", { tensor: options.tensor, expected: "multiples of 64x64", actual: `${M}x${N}` });
  const kernel = fpxKernel(format);
  if (kernel === undefined) return undefined;
  const elementBytes = matrix.dtype === "F32" ? 4 : 2;
  if (matrix.bytes.length !== M * N * elementBytes) throw new FormatError("PACKED_SHAPE_MISMATCH", "weight bytes do not match the matrix shape", { tensor: options.tensor, expected: M * N * elementBytes, actual: matrix.bytes.length });
  // Kernel memory: scratch | slab input | one f32 row | slab codes | one packed region of the slab.
  const IN = SCRATCH_BYTES;
  const ROW = IN + SLAB_ROWS * N * elementBytes;
  const CODES = ROW + N * 4;
  const OUT = CODES + SLAB_ROWS * N;
  ensureMemory(kernel, OUT + 8 * 4 * N);
  const memory = new Uint8Array(kernel.memory.buffer);
  const encoder = fpxEncoder(format);
  const quotient = new Float32Array(N);
  const quotientBits = new Uint32Array(quotient.buffer);
  const packed = new Uint8Array(tcPackedBytes(M, N, format.nbits));
  const scales = new Uint16Array(M);
  const regions = regionsOf(format.nbits);
  const slabBytes = SLAB_ROWS * N * elementBytes;
  for (let slab = 0; slab < M / SLAB_ROWS; slab++) {
    memory.set(matrix.bytes.subarray(slab * slabBytes, (slab + 1) * slabBytes), IN);
    for (let rr = 0; rr < SLAB_ROWS; rr++) {
      const r = slab * SLAB_ROWS + rr;
      const rowIn = IN + rr * N * elementBytes;
      let rowF32 = rowIn;
      if (matrix.dtype === "F32") kernel.amax_f32(rowIn, N);
      else {
        (matrix.dtype === "F16" ? kernel.widen_f16 : kernel.widen_bf16)(rowIn, ROW, N);
        rowF32 = ROW;
      }
      const amax = magnitudeValue(kernel.rowMax(), matrix.dtype);
      if (!Number.isFinite(amax)) throw nonFiniteError(rowValues(matrix, r, N), r, options.tensor);
      const scale = rowScale(amax, format, codesFrom, r, options.tensor);
      scales[r] = scale.scaleBits;
      const codesAt = CODES + rr * N;
      if (!scale.zero) kernel.encode(rowF32, codesAt, N, scale.codesScale);
      else {
        const weight = new Float32Array(kernel.memory.buffer, rowF32, N);
        encodeRowScalar(weight, new Uint32Array(kernel.memory.buffer, rowF32, N), 0, N, memory.subarray(codesAt, codesAt + N), scale, format, encoder, quotient, quotientBits);
      }
    }
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

function ensureMemory(kernel: FpxKernel, bytes: number): void {
  const missing = bytes - kernel.memory.buffer.byteLength;
  if (missing > 0) kernel.memory.grow(Math.ceil(missing / PAGE_BYTES));
}

/** Value of the largest magnitude bits in the source dtype (Infinity for Inf/NaN). */
function magnitudeValue(bits: number, dtype: DenseMatrix["dtype"]): number {
  const f32 = new Uint32Array(1);
  if (dtype === "F16") {
    if (bits >= 0x7c00) return Infinity;
    const exponent = bits >> 10;
    const mantissa = bits & 0x3ff;
    return exponent === 0 ? mantissa * 2 ** -24 : (1 + mantissa / 1024) * 2 ** (exponent - 15);
  }
  f32[0] = dtype === "BF16" ? bits << 16 : bits;
  const value = new Float32Array(f32.buffer)[0]!;
  return Number.isNaN(value) ? Infinity : value;
}

/** One row as f32 (error path only). */
function rowValues(matrix: DenseMatrix, r: number, N: number): Float32Array {
  const elementBytes = matrix.dtype === "F32" ? 4 : 2;
  const bytes = convertFloatBytes(matrix.bytes.subarray(r * N * elementBytes, (r + 1) * N * elementBytes), matrix.dtype, "F32");
  return new Float32Array(bytes.slice().buffer);
}
