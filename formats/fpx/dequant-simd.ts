import { fpxKernel, type FpxKernel } from "./simd-kernel.js";
import { regionsOf, tcPackedBytes } from "./tc-layout.js";
import { scaleValues, type FpxTensor } from "./types.js";
import { FormatError } from "../errors.js";

const SLAB_ROWS = 64;
const PAGE_BYTES = 65536;

/**
 * Reference dequantization on the WebAssembly SIMD kernels, one 64-row slab at a time: each
 * region's slab bytes (contiguous in the layout) are unpacked into the slab's codes, which are
 * decoded and scaled per row (the same exact products as the table path in reference.ts).
 * Returns undefined without the kernel.
 */
export function dequantizeFpxSimd(t: FpxTensor, into?: Float32Array): Float32Array | undefined {
  const kernel = fpxKernel(t.format);
  if (kernel === undefined) return undefined;
  const { outFeatures: M, inFeatures: N } = t;
  const nbits = t.format.nbits;
  if (t.packed.length !== tcPackedBytes(M, N, nbits)) throw new FormatError("PACKED_SHAPE_MISMATCH", "packed FPx buffer has the wrong size", { expected: tcPackedBytes(M, N, nbits), actual: t.packed.length });
  if (t.scales.length !== M) throw new FormatError("PACKED_SHAPE_MISMATCH", "one fp16 scale per row expected", { expected: M, actual: t.scales.length });
  // Kernel memory: row scales (f32) | one region of the slab | slab codes | slab output (f32).
  const SCALES = 0;
  const PACKED = SCALES + SLAB_ROWS * 4;
  const CODES = PACKED + 8 * 4 * N;
  const OUT = CODES + SLAB_ROWS * N;
  ensureMemory(kernel, OUT + SLAB_ROWS * N * 4);
  const memory = new Uint8Array(kernel.memory.buffer);
  const slabScales = new Float32Array(kernel.memory.buffer, SCALES, SLAB_ROWS);
  const slabOut = new Float32Array(kernel.memory.buffer, OUT, SLAB_ROWS * N);
  const out = into ?? new Float32Array(M * N);
  const scales = scaleValues(t.scales);
  const regions = regionsOf(nbits);
  for (let slab = 0; slab < M / SLAB_ROWS; slab++) {
    memory.fill(0, CODES, CODES + SLAB_ROWS * N);
    let regionBase = 0;
    let used = 0;
    for (const y of regions) {
      const slabRegionBytes = 8 * y * N;
      memory.set(t.packed.subarray(regionBase + slab * slabRegionBytes, regionBase + (slab + 1) * slabRegionBytes), PACKED);
      const unpack = y === 1 ? kernel.unpack1! : y === 2 ? kernel.unpack2! : kernel.unpack4!;
      unpack(PACKED, N, nbits - used - y, CODES);
      regionBase += (M * N * y) / 8;
      used += y;
    }
    slabScales.set(scales.subarray(slab * SLAB_ROWS, (slab + 1) * SLAB_ROWS));
    kernel.decode(CODES, N, SLAB_ROWS, SCALES, OUT);
    out.set(slabOut, slab * SLAB_ROWS * N);
  }
  return out;
}

function ensureMemory(kernel: FpxKernel, bytes: number): void {
  const missing = bytes - kernel.memory.buffer.byteLength;
  if (missing > 0) kernel.memory.grow(Math.ceil(missing / PAGE_BYTES));
}
