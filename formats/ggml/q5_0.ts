/**
 * Q5_0 (ggml type 6): blocks of 32 weights, 5.5 bits per weight.
 *
 *   block_q5_0 { fp16 d; u8 qh[4]; u8 qs[16]; }       22 bytes
 *   q[j] = (qs[j] & 0xF) | bit j of qh << 4,  q[j + 16] = (qs[j] >> 4) | bit j+16 of qh << 4
 *   y[j] = (q[j] − 16) · d
 *
 * qh is one little-endian u32 holding the fifth bit of every code. Layout from ggml
 * src/ggml-common.h, decoding from src/ggml-quants.c `dequantize_row_q5_0`
 * (../shared/ref/gguf-onnx.md §1.3).
 *
 * Encoding follows gguf-py's `Q5_0.quantize_blocks` (quants.py, llama.cpp c392e509), the Q4_0
 * scheme with 16 levels each side: `d = max / −16`, code `trunc(float32(x · id + 16.5))` (product
 * and sum in float64, rounded to float32 by `np.trunc(…, dtype=float32)`) clipped to 31.
 */

import { argMaxAbs, checkDequantize, checkQuantize, readF16, writeF16 } from "./block-math.js";
import type { GgmlTypeCodec } from "./types.js";

const QK = 32;
const TYPE_SIZE = 2 + 4 + QK / 2;

/** gguf-py's Q5_0 code of x. `| 0` truncates, and maps NaN to 0 as numpy's uint8 cast does on x86. */
function code(x: number, id: number): number {
  const q = Math.fround(x * id + 16.5) | 0;
  return q > 31 ? 31 : q < 0 ? 0 : q;
}

export const Q5_0: GgmlTypeCodec = {
  id: 6,
  name: "Q5_0",
  blockSize: QK,
  typeSize: TYPE_SIZE,
  dequantize(src, blocks, out) {
    checkDequantize(Q5_0, src, blocks, out);
    for (let b = 0, p = 0, o = 0; b < blocks; b++, p += TYPE_SIZE, o += QK) {
      const d = readF16(src, p);
      const qh = src[p + 2]! | (src[p + 3]! << 8) | (src[p + 4]! << 16) | (src[p + 5]! << 24);
      for (let j = 0; j < QK / 2; j++) {
        const q = src[p + 6 + j]!;
        out[o + j] = ((q & 0xf) + (((qh >>> j) & 1) << 4) - 16) * d;
        out[o + j + QK / 2] = ((q >> 4) + (((qh >>> (j + 16)) & 1) << 4) - 16) * d;
      }
    }
  },
  quantize(x, blocks, out) {
    checkQuantize(Q5_0, x, blocks, out);
    for (let b = 0, p = 0, o = 0; b < blocks; b++, p += TYPE_SIZE, o += QK) {
      const d = Math.fround(x[argMaxAbs(x, o, QK)]! / -16);
      const id = d === 0 ? 0 : Math.fround(1 / d);
      writeF16(out, p, d);
      let qh = 0;
      for (let j = 0; j < QK / 2; j++) {
        const lo = code(x[o + j]!, id);
        const hi = code(x[o + j + QK / 2]!, id);
        out[p + 6 + j] = (lo & 0xf) | ((hi & 0xf) << 4);
        qh |= ((lo >> 4) << j) | ((hi >> 4) << (j + 16));
      }
      out[p + 2] = qh & 0xff;
      out[p + 3] = (qh >>> 8) & 0xff;
      out[p + 4] = (qh >>> 16) & 0xff;
      out[p + 5] = qh >>> 24;
    }
  },
};
