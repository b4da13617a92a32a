/**
 * Q3_K (ggml type 11): super-blocks of 256 weights in 16 sub-blocks of 16, 3.4375 bits per weight.
 *
 *   block_q3_K { u8 hmask[32]; u8 qs[64]; u8 scales[12]; fp16 d; }       110 bytes
 *   y = d · (s − 32) · (q2 − (hbit ? 0 : 4))
 *
 * For weight e = 32j + l (j < 8, l < 32): q2 = (qs[32·(j >> 2) + l] >> 2·(j & 3)) & 3 and
 * hbit = (hmask[l] >> j) & 1. The 16 six-bit scales s_i (sub-block i = e >> 4) take their low
 * nibble from scales[i] (i < 8) or scales[i − 8] >> 4, and their top two bits from
 * scales[8 + (i & 3)] >> 2·(i >> 2).
 *
 * Layout from ggml src/ggml-common.h, decoding from src/ggml-quants.c `dequantize_row_q3_K`
 * (../shared/ref/gguf-onnx.md §1.3), as gguf-py's `Q3_K.dequantize_blocks` (quants.py, llama.cpp
 * c392e509) computes it in float32: `(d·s)·q`, exact at every step (block-math.ts). Decoding only.
 */

import { checkDequantize, readF16 } from "./block-math.js";
import type { GgmlTypeCodec } from "./types.js";
import { K_QUANTIZERS } from "./k-quantize.js";

const QK = 256;
const QS = QK / 8;
const SCALES = QS + QK / 4;
const D = SCALES + 12;
const TYPE_SIZE = D + 2;

export const Q3_K: GgmlTypeCodec = {
  id: 11,
  name: "Q3_K",
  blockSize: QK,
  typeSize: TYPE_SIZE,
  // ggml's quantize_row_q3_k_ref (k-quantize.ts), bit for bit.
  quantize: K_QUANTIZERS.Q3_K,
  dequantize(src, blocks, out) {
    checkDequantize(Q3_K, src, blocks, out);
    for (let b = 0, p = 0, o = 0; b < blocks; b++, p += TYPE_SIZE, o += QK) {
      const d = readF16(src, p + D);
      for (let i = 0; i < 16; i++) {
        const low = i < 8 ? src[p + SCALES + i]! & 0xf : src[p + SCALES + i - 8]! >> 4;
        const high = (src[p + SCALES + 8 + (i & 3)]! >> (2 * (i >> 2))) & 3;
        const dl = d * ((low | (high << 4)) - 32);
        const j = i >> 1;
        const lBase = 16 * (i & 1);
        const q = p + QS + 32 * (j >> 2) + lBase;
        const shift = 2 * (j & 3);
        const h = p + lBase;
        const e = o + 16 * i;
        for (let l = 0; l < 16; l++) {
          // A clear hmask bit subtracts 4 (branch-free: the bits are data, not predictable).
          out[e + l] = dl * (((src[q + l]! >> shift) & 3) - 4 + (((src[h + l]! >> j) & 1) << 2));
        }
      }
    }
  },
};
