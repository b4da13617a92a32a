/**
 * Q6_K (ggml type 14): super-blocks of 256 weights in 16 sub-blocks of 16, 6.5625 bits per weight.
 *
 *   block_q6_K { u8 ql[128]; u8 qh[64]; int8 scales[16]; fp16 d; }       210 bytes
 *   y = d · scales[e >> 4] · (q − 32)
 *   q of weight e = 128h + r (h < 2, r < 128) is
 *     ((ql[64h + (r & 63)] >> 4·(r >> 6)) & 0xF) | ((qh[32h + (r & 31)] >> 2·(r >> 5)) & 3) << 4
 *
 * Layout from ggml src/ggml-common.h, decoding from src/ggml-quants.c `dequantize_row_q6_K`
 * (../shared/ref/gguf-onnx.md §1.3), as gguf-py's `Q6_K.dequantize_blocks` (quants.py, llama.cpp
 * c392e509) computes it in float32: `(d·scale)·q`, one rounding at most (block-math.ts).
 * Decoding only.
 */

import { checkDequantize, readF16 } from "./block-math.js";
import type { GgmlTypeCodec } from "./types.js";
import { K_QUANTIZERS } from "./k-quantize.js";

const QK = 256;
const QH = QK / 2;
const SCALES = QH + QK / 4;
const D = SCALES + QK / 16;
const TYPE_SIZE = D + 2;

export const Q6_K: GgmlTypeCodec = {
  id: 14,
  name: "Q6_K",
  blockSize: QK,
  typeSize: TYPE_SIZE,
  // ggml's quantize_row_q6_k_ref (k-quantize.ts), bit for bit.
  quantize: K_QUANTIZERS.Q6_K,
  dequantize(src, blocks, out) {
    checkDequantize(Q6_K, src, blocks, out);
    const dl = new Float64Array(16);
    for (let b = 0, p = 0, o = 0; b < blocks; b++, p += TYPE_SIZE, o += QK) {
      const d = readF16(src, p + D);
      for (let i = 0; i < 16; i++) dl[i] = d * ((src[p + SCALES + i]! << 24) >> 24);
      for (let h = 0; h < 2; h++) {
        const ql = p + 64 * h;
        const qh = p + QH + 32 * h;
        const e = o + 128 * h;
        for (let l = 0; l < 32; l++) {
          const lo = src[ql + l]!;
          const hi = src[ql + l + 32]!;
          const top = src[qh + l]!;
          const s = 8 * h + (l >> 4);
          out[e + l] = dl[s]! * ((lo & 0xf) + ((top & 3) << 4) - 32);
          out[e + l + 32] = dl[s + 2]! * ((hi & 0xf) + (((top >> 2) & 3) << 4) - 32);
          out[e + l + 64] = dl[s + 4]! * ((lo >> 4) + (((top >> 4) & 3) << 4) - 32);
          out[e + l + 96] = dl[s + 6]! * ((hi >> 4) + ((top >> 6) << 4) - 32);
        }
      }
    }
  },
};
