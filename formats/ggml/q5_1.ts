/**
 * Q5_1 (ggml type 7): blocks of 32 weights, 6 bits per weight.
 *
 *   block_q5_1 { fp16 d; fp16 m; u8 qh[4]; u8 qs[16]; }       24 bytes
 *   q[j] = (qs[j] & 0xF) | bit j of qh << 4,  q[j + 16] = (qs[j] >> 4) | bit j+16 of qh << 4
 *   y[j] = q[j] · d + m
 *
 * qh is one little-endian u32 holding the fifth bit of every code. Layout from ggml
 * src/ggml-common.h, decoding from src/ggml-quants.c `dequantize_row_q5_1`
 * (../shared/ref/gguf-onnx.md §1.3).
 *
 * Encoding follows gguf-py's `Q5_1.quantize_blocks` (quants.py, llama.cpp c392e509), all in
 * float32: `d = (max − min) / 31`, `id = 1/d` (0 when d = 0), code `trunc((x − min) · id + 0.5)`
 * clipped to 31. `m` stores `min`.
 */

import { checkDequantize, checkQuantize, readF16, writeF16 } from "./block-math.js";
import type { GgmlTypeCodec } from "./types.js";

const QK = 32;
const TYPE_SIZE = 2 + 2 + 4 + QK / 2;

/** gguf-py's Q5_1 code of x. `| 0` truncates, and maps NaN to 0 as numpy's uint8 cast does on x86. */
function code(x: number, min: number, id: number): number {
  const q = Math.fround(Math.fround(Math.fround(x - min) * id) + 0.5) | 0;
  return q > 31 ? 31 : q < 0 ? 0 : q;
}

export const Q5_1: GgmlTypeCodec = {
  id: 7,
  name: "Q5_1",
  blockSize: QK,
  typeSize: TYPE_SIZE,
  dequantize(src, blocks, out) {
    checkDequantize(Q5_1, src, blocks, out);
    for (let b = 0, p = 0, o = 0; b < blocks; b++, p += TYPE_SIZE, o += QK) {
      const d = readF16(src, p);
      const m = readF16(src, p + 2);
      const qh = src[p + 4]! | (src[p + 5]! << 8) | (src[p + 6]! << 16) | (src[p + 7]! << 24);
      for (let j = 0; j < QK / 2; j++) {
        const q = src[p + 8 + j]!;
        out[o + j] = ((q & 0xf) + (((qh >>> j) & 1) << 4)) * d + m;
        out[o + j + QK / 2] = ((q >> 4) + (((qh >>> (j + 16)) & 1) << 4)) * d + m;
      }
    }
  },
  quantize(x, blocks, out) {
    checkQuantize(Q5_1, x, blocks, out);
    for (let b = 0, p = 0, o = 0; b < blocks; b++, p += TYPE_SIZE, o += QK) {
      let min = x[o]!;
      let max = min;
      for (let j = 1; j < QK; j++) {
        const v = x[o + j]!;
        if (v < min) min = v;
        if (v > max) max = v;
      }
      const d = Math.fround(Math.fround(max - min) / 31);
      const id = d === 0 ? 0 : Math.fround(1 / d);
      writeF16(out, p, d);
      writeF16(out, p + 2, min);
      let qh = 0;
      for (let j = 0; j < QK / 2; j++) {
        const lo = code(x[o + j]!, min, id);
        const hi = code(x[o + j + QK / 2]!, min, id);
        out[p + 8 + j] = (lo & 0xf) | ((hi & 0xf) << 4);
        qh |= ((lo >> 4) << j) | ((hi >> 4) << (j + 16));
      }
      out[p + 4] = qh & 0xff;
      out[p + 5] = (qh >>> 8) & 0xff;
      out[p + 6] = (qh >>> 16) & 0xff;
      out[p + 7] = qh >>> 24;
    }
  },
};
