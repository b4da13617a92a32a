/**
 * Q2_K (ggml type 10): super-blocks of 256 weights in 16 sub-blocks of 16, 2.625 bits per weight.
 *
 *   block_q2_K { u8 scales[16]; u8 qs[64]; fp16 d; fp16 dmin; }       84 bytes
 *   y = d · (sc & 0xF) · q − dmin · (sc >> 4),   sc = scales[e >> 4]
 *   q of weight e = 128h + 32s + l (h < 2, s < 4, l < 32) is (qs[32h + l] >> 2s) & 3
 *
 * Layout from ggml src/ggml-common.h, decoding from src/ggml-quants.c `dequantize_row_q2_K`
 * (../shared/ref/gguf-onnx.md §1.3), as gguf-py's `Q2_K.dequantize_blocks` (quants.py, llama.cpp
 * c392e509) computes it in float32: `(d·sc)·q − dmin·m`, where only the subtraction rounds
 * (block-math.ts). Decoding only: gguf-py has no Q2_K encoder.
 */

import { checkDequantize, readF16 } from "./block-math.js";
import type { GgmlTypeCodec } from "./types.js";
import { K_QUANTIZERS } from "./k-quantize.js";

const QK = 256;
const TYPE_SIZE = QK / 16 + QK / 4 + 2 + 2;
const QS = QK / 16;
const D = QS + QK / 4;

export const Q2_K: GgmlTypeCodec = {
  id: 10,
  name: "Q2_K",
  blockSize: QK,
  typeSize: TYPE_SIZE,
  // ggml's quantize_row_q2_k_ref (k-quantize.ts), bit for bit.
  quantize: K_QUANTIZERS.Q2_K,
  dequantize(src, blocks, out) {
    checkDequantize(Q2_K, src, blocks, out);
    for (let b = 0, p = 0, o = 0; b < blocks; b++, p += TYPE_SIZE, o += QK) {
      const d = readF16(src, p + D);
      const dmin = readF16(src, p + D + 2);
      for (let i = 0; i < 16; i++) {
        const sc = src[p + i]!;
        const dl = d * (sc & 0xf);
        const ml = dmin * (sc >> 4);
        const shift = 2 * ((i >> 1) & 3);
        const q = p + QS + 32 * (i >> 3) + 16 * (i & 1);
        const e = o + 16 * i;
        for (let l = 0; l < 16; l++) out[e + l] = dl * ((src[q + l]! >> shift) & 3) - ml;
      }
    }
  },
};
