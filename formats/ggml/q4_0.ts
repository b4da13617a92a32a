/**
 * Q4_0 (ggml type 2): blocks of 32 weights, 4.5 bits per weight.
 *
 *   block_q4_0 { fp16 d; u8 qs[16]; }       18 bytes
 *   y[j] = ((qs[j] & 0xF) − 8) · d,  y[j + 16] = ((qs[j] >> 4) − 8) · d     (j < 16)
 *
 * Low nibbles hold the first half of the block, high nibbles the second half. Layout from ggml
 * src/ggml-common.h, decoding from src/ggml-quants.c `dequantize_row_q4_0`
 * (../shared/ref/gguf-onnx.md §1.3).
 *
 * Encoding follows gguf-py's `Q4_0.quantize_blocks` (quants.py, llama.cpp c392e509). `max` is
 * the signed element of largest magnitude (the first one on ties), `d = max / −8` and
 * `id = 1/d` in float32. The code is `trunc(x · id + 8.5)` with the product and the sum in
 * float64, but the sum goes through `np.trunc(…, dtype=float32)`, which rounds it to float32
 * before truncating. Then it is clipped to 15. An all-+0 block gives d = −0 (fp16 0x8000).
 */

import { argMaxAbs, checkDequantize, checkQuantize, readF16, writeF16 } from "./block-math.js";
import type { GgmlTypeCodec } from "./types.js";

const QK = 32;
const TYPE_SIZE = 2 + QK / 2;

/** gguf-py's Q4_0 code of x. `| 0` truncates, and maps NaN to 0 as numpy's uint8 cast does on x86. */
function code(x: number, id: number): number {
  const q = Math.fround(x * id + 8.5) | 0;
  return q > 15 ? 15 : q < 0 ? 0 : q;
}

export const Q4_0: GgmlTypeCodec = {
  id: 2,
  name: "Q4_0",
  blockSize: QK,
  typeSize: TYPE_SIZE,
  dequantize(src, blocks, out) {
    checkDequantize(Q4_0, src, blocks, out);
    for (let b = 0, p = 0, o = 0; b < blocks; b++, p += TYPE_SIZE, o += QK) {
      const d = readF16(src, p);
      for (let j = 0; j < QK / 2; j++) {
        const q = src[p + 2 + j]!;
        out[o + j] = ((q & 0xf) - 8) * d;
        out[o + j + QK / 2] = ((q >> 4) - 8) * d;
      }
    }
  },
  quantize(x, blocks, out) {
    checkQuantize(Q4_0, x, blocks, out);
    for (let b = 0, p = 0, o = 0; b < blocks; b++, p += TYPE_SIZE, o += QK) {
      const d = Math.fround(x[argMaxAbs(x, o, QK)]! / -8);
      const id = d === 0 ? 0 : Math.fround(1 / d);
      writeF16(out, p, d);
      for (let j = 0; j < QK / 2; j++) out[p + 2 + j] = code(x[o + j]!, id) | (code(x[o + j + QK / 2]!, id) << 4);
    }
  },
};
