/**
 * Q4_K (ggml type 12): super-blocks of 256 weights in 8 sub-blocks of 32, 4.5 bits per weight.
 *
 *   block_q4_K { fp16 d; fp16 dmin; u8 scales[12]; u8 qs[128]; }       144 bytes
 *   y = d · sc_j · q − dmin · m_j,   j = e >> 5
 *   q of weight e = 64c + 32k + l (c < 4, k < 2, l < 32) is (qs[32c + l] >> 4k) & 0xF
 *
 * The six-bit sc_j and m_j come from the 12 scale bytes (scaleMinK4, shared with Q5_K).
 *
 * Layout from ggml src/ggml-common.h, decoding from src/ggml-quants.c `dequantize_row_q4_K` and
 * `get_scale_min_k4` (../shared/ref/gguf-onnx.md §1.3), as gguf-py's `Q4_K.dequantize_blocks`
 * (quants.py, llama.cpp c392e509) computes it in float32: `(d·sc)·q − dmin·m`, where only the
 * subtraction rounds (block-math.ts). Decoding only.
 */

import { checkDequantize, readF16 } from "./block-math.js";
import type { GgmlTypeCodec } from "./types.js";
import { K_QUANTIZERS } from "./k-quantize.js";

const QK = 256;
const SCALES = 2 + 2;
const QS = SCALES + 12;
const TYPE_SIZE = QS + QK / 2;

/**
 * ggml's get_scale_min_k4: the scale (j < 8) or, with `j + 8`, the min of sub-block j from the
 * 12 scale bytes at src[at]. Bytes 0..3 hold sc0..3 in their low six bits, bytes 4..7 m0..3,
 * bytes 8..11 the low nibbles of sc4..7 and m4..7; the top two bits of bytes 0..7 complete them.
 */
export function scaleMinK4(src: Uint8Array, at: number, j: number): number {
  if (j < 4) return src[at + j]! & 63;
  if (j < 8) return (src[at + j + 4]! & 0xf) | ((src[at + j - 4]! >> 6) << 4);
  if (j < 12) return src[at + j - 4]! & 63;
  return (src[at + j - 4]! >> 4) | ((src[at + j - 8]! >> 6) << 4);
}

export const Q4_K: GgmlTypeCodec = {
  id: 12,
  name: "Q4_K",
  blockSize: QK,
  typeSize: TYPE_SIZE,
  // ggml's quantize_row_q4_k_ref (k-quantize.ts), bit for bit.
  quantize: K_QUANTIZERS.Q4_K,
  dequantize(src, blocks, out) {
    checkDequantize(Q4_K, src, blocks, out);
    for (let b = 0, p = 0, o = 0; b < blocks; b++, p += TYPE_SIZE, o += QK) {
      const d = readF16(src, p);
      const dmin = readF16(src, p + 2);
      for (let c = 0; c < 4; c++) {
        const dl0 = d * scaleMinK4(src, p + SCALES, 2 * c);
        const ml0 = dmin * scaleMinK4(src, p + SCALES, 2 * c + 8);
        const dl1 = d * scaleMinK4(src, p + SCALES, 2 * c + 1);
        const ml1 = dmin * scaleMinK4(src, p + SCALES, 2 * c + 9);
        const q = p + QS + 32 * c;
        const e = o + 64 * c;
        for (let l = 0; l < 32; l++) {
          const v = src[q + l]!;
          out[e + l] = dl0 * (v & 0xf) - ml0;
          out[e + 32 + l] = dl1 * (v >> 4) - ml1;
        }
      }
    }
  },
};
