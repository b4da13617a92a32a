/**
 * The unquantized ggml types: F32 (id 0, 4 bytes), F16 (id 1, IEEE binary16, 2 bytes) and BF16
 * (id 30, the top half of a binary32, 2 bytes), one element per "block", little-endian
 * (../shared/ref/gguf-onnx.md §1.2–1.3, from ggml include/ggml.h and src/ggml-impl.h).
 *
 * Conversions follow gguf-py (quants.py at llama.cpp c392e509 with numpy 1.24) bit for bit,
 * NaN payloads included, so every path copies bit patterns through integer views and never
 * through a JS number:
 * - F16 encodes like numpy `astype(float16)` (f16BitsNumpy) and decodes exactly.
 * - BF16 encodes like `BF16.quantize_blocks` (ggml_compute_fp32_to_bf16): a NaN becomes
 *   `(u & 0xFFFF0000) | 0x00400000`, and every value rounds to nearest even. Subnormals are
 *   kept, not flushed. It decodes as `bits << 16`.
 *
 * Little-endian host assumed, as everywhere in lmpack's typed-array views.
 */

import { checkDequantize, checkQuantize, F16_BITS, f16BitsNumpy } from "./block-math.js";
import type { GgmlTypeCodec } from "./types.js";

/** The first n elements of a Float32Array as raw f32 bit patterns. */
function bitsOf(x: Float32Array, n: number): Uint32Array {
  return new Uint32Array(x.buffer, x.byteOffset, n);
}

export const F32: GgmlTypeCodec = {
  id: 0,
  name: "F32",
  blockSize: 1,
  typeSize: 4,
  dequantize(src, blocks, out) {
    checkDequantize(F32, src, blocks, out);
    new Uint8Array(out.buffer, out.byteOffset, blocks * 4).set(src.subarray(0, blocks * 4));
  },
  quantize(x, blocks, out) {
    checkQuantize(F32, x, blocks, out);
    out.set(new Uint8Array(x.buffer, x.byteOffset, blocks * 4));
  },
};

export const F16: GgmlTypeCodec = {
  id: 1,
  name: "F16",
  blockSize: 1,
  typeSize: 2,
  dequantize(src, blocks, out) {
    checkDequantize(F16, src, blocks, out);
    const bits = bitsOf(out, blocks);
    for (let i = 0, p = 0; i < blocks; i++, p += 2) bits[i] = F16_BITS[src[p]! | (src[p + 1]! << 8)]!;
  },
  quantize(x, blocks, out) {
    checkQuantize(F16, x, blocks, out);
    const bits = bitsOf(x, blocks);
    for (let i = 0, p = 0; i < blocks; i++, p += 2) {
      const h = f16BitsNumpy(bits[i]!);
      out[p] = h & 0xff;
      out[p + 1] = h >>> 8;
    }
  },
};

export const BF16: GgmlTypeCodec = {
  id: 30,
  name: "BF16",
  blockSize: 1,
  typeSize: 2,
  dequantize(src, blocks, out) {
    checkDequantize(BF16, src, blocks, out);
    const bits = bitsOf(out, blocks);
    for (let i = 0, p = 0; i < blocks; i++, p += 2) bits[i] = ((src[p]! | (src[p + 1]! << 8)) << 16) >>> 0;
  },
  quantize(x, blocks, out) {
    checkQuantize(BF16, x, blocks, out);
    const bits = bitsOf(x, blocks);
    for (let i = 0, p = 0; i < blocks; i++, p += 2) {
      let u = bits[i]!;
      if ((u & 0x7fffffff) > 0x7f800000) u = ((u & 0xffff0000) | 0x00400000) >>> 0;
      // Adding 0x7FFF plus the lowest kept bit rounds ties to even. The sum stays below 2^32:
      // only NaNs come that close, and their low half is zero by now.
      const h = (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
      out[p] = h & 0xff;
      out[p + 1] = h >>> 8;
    }
  },
};
