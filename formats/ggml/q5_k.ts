/**
 * Q5_K (ggml type 13): super-blocks of 256 weights in 8 sub-blocks of 32, 5.5 bits per weight.
 *
 *   block_q5_K { fp16 d; fp16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]; }       176 bytes
 *   y = d · sc_j · q − dmin · m_j,   j = e >> 5
 *   q of weight e = 64c + 32k + l (c < 4, k < 2, l < 32) is
 *     ((qs[32c + l] >> 4k) & 0xF) | ((qh[l] >> j) & 1) << 4
 *
 * Scales and mins as Q4_K. Layout from ggml src/ggml-common.h, decoding from src/ggml-quants.c
 * `dequantize_row_q5_K` (../shared/ref/gguf-onnx.md §1.3), as gguf-py's `Q5_K.dequantize_blocks`
 * (quants.py, llama.cpp c392e509) computes it in float32: `(d·sc)·q − dmin·m`, where only the
 * subtraction rounds (block-math.ts). Decoding only.
 */

import { checkDequantize, readF16 } from "./block-math.js";
import { scaleMinK4 } from "./q4_k.js";
import type { GgmlTypeCodec } from "./types.js";
import { K_QUANTIZERS } from "./k-quantize.js";

const QK = 256;
const SCALES = 2 + 2;
const QH = SCALES + 12;
const QS = QH + QK / 8;
const TYPE_SIZE = QS + QK / 2;

export const Q5_K: GgmlTypeCodec = {
  id: 13,
  name: "Q5_K",
  blockSize: QK,
  typeSize: TYPE_SIZE,
  // ggml's quantize_row_q5_k_ref (k-quantize.ts), bit for bit.
  quantize: K_QUANTIZERS.Q5_K,
  dequantize(src, blocks, out) {
    checkDequantize(Q5_K, src, blocks, out);
    for (let b = 0, p = 0, o = 0; b < blocks; b++, p += TYPE_SIZE, o += QK) {
      const d = readF16(src, p);
      const dmin = readF16(src, p + 2);
      for (let c = 0; c < 4; c++) {
        const j0 = 2 * c;
        const j1 = j0 + 1;
        const dl0 = d * scaleMinK4(src, p + SCALES, j0);
        const ml0 = dmin * scaleMinK4(src, p + SCALES, j0 + 8);
        const dl1 = d * scaleMinK4(src, p + SCALES, j1);
        const ml1 = dmin * scaleMinK4(src, p + SCALES, j1 + 8);
        const q = p + QS + 32 * c;
        const e = o + 64 * c;
        for (let l = 0; l < 32; l++) {
          const v = src[q + l]!;
          const h = src[p + QH + l]!;
          out[e + l] = dl0 * ((v & 0xf) | (((h >> j0) & 1) << 4)) - ml0;
          out[e + 32 + l] = dl1 * ((v >> 4) | (((h >> j1) & 1) << 4)) - ml1;
        }
      }
    }
  },
};
