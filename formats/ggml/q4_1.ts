/**
 * Q4_1 (ggml type 3): blocks of 32 weights, 5 bits per weight.
 *
 *   block_q4_1 { fp16 d; fp16 m; u8 qs[16]; }       20 bytes
 *   y[j] = (qs[j] & 0xF) · d + m,  y[j + 16] = (qs[j] >> 4) · d + m     (j < 16)
 *
 * Layout from ggml src/ggml-common.h, decoding from src/ggml-quants.c `dequantize_row_q4_1`
 * (../shared/ref/gguf-onnx.md §1.3).
 *
 * Encoding follows gguf-py's `Q4_1.quantize_blocks` (quants.py, llama.cpp c392e509), all in
 * float32 (Math.fround after every operation): `d = (max − min) / 15`, `id = 1/d` (0 when
 * d = 0), code `trunc((x − min) · id + 0.5)` clipped to 15. `m` stores `min`.
 */

import { checkDequantize, checkQuantize, readF16, writeF16 } from "./block-math.js";
import type { GgmlTypeCodec } from "./types.js";

const QK = 32;
const TYPE_SIZE = 2 + 2 + QK / 2;

/** gguf-py's Q4_1 code of x. `| 0` truncates, and maps NaN to 0 as numpy's uint8 cast does on x86. */
function code(x: number, min: number, id: number): number {
  const q = Math.fround(Math.fround(Math.fround(x - min) * id) + 0.5) | 0;
  return q > 15 ? 15 : q < 0 ? 0 : q;
}

export const Q4_1: GgmlTypeCodec = {
  id: 3,
  name: "Q4_1",
  blockSize: QK,
  typeSize: TYPE_SIZE,
  dequantize(src, blocks, out) {
    checkDequantize(Q4_1, src, blocks, out);
    for (let b = 0, p = 0, o = 0; b < blocks; b++, p += TYPE_SIZE, o += QK) {
      const d = readF16(src, p);
      const m = readF16(src, p + 2);
      for (let j = 0; j < QK / 2; j++) {
        const q = src[p + 4 + j]!;
        out[o + j] = (q & 0xf) * d + m;
        out[o + j + QK / 2] = (q >> 4) * d + m;
      }
    }
  },
  quantize(x, blocks, out) {
    checkQuantize(Q4_1, x, blocks, out);
    for (let b = 0, p = 0, o = 0; b < blocks; b++, p += TYPE_SIZE, o += QK) {
      let min = x[o]!;
      let max = min;
      for (let j = 1; j < QK; j++) {
        const v = x[o + j]!;
        if (v < min) min = v;
        if (v > max) max = v;
      }
      const d = Math.fround(Math.fround(max - min) / 15);
      const id = d === 0 ? 0 : Math.fround(1 / d);
      writeF16(out, p, d);
      writeF16(out, p + 2, min);
      for (let j = 0; j < QK / 2; j++) out[p + 4 + j] = code(x[o + j]!, min, id) | (code(x[o + j + QK / 2]!, min, id) << 4);
    }
  },
};
