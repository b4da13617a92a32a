/**
 * IQ4_XS (ggml type 23): super-blocks of 256 weights in 8 sub-blocks of 32 on the IQ4_NL grid,
 * 4.25 bits per weight.
 *
 *   block_iq4_xs { fp16 d; u16 scales_h; u8 scales_l[4]; u8 qs[128]; }       136 bytes
 *   ls_j = ((scales_l[j >> 1] >> 4·(j & 1)) & 0xF) | ((scales_h >> 2j) & 3) << 4     (j < 8)
 *   y[32j + m] = d · (ls_j − 32) · KVALUES_IQ4NL[qs[16j + m] & 0xF]       (m < 16)
 *   y[32j + 16 + m] = d · (ls_j − 32) · KVALUES_IQ4NL[qs[16j + m] >> 4]
 *
 * Layout from ggml src/ggml-common.h (`block_iq4_xs`), decoding from src/ggml-quants.c
 * `dequantize_row_iq4_xs` (../shared/ref/gguf-onnx.md §1.3, table sizes), as gguf-py's
 * `IQ4_XS.dequantize_blocks` (quants.py, llama.cpp c392e509) computes it in float32:
 * `(d·(ls − 32))·k`, exact at every step (block-math.ts). Decoding only.
 */

import { checkDequantize, readF16 } from "./block-math.js";
import { KVALUES_IQ4NL } from "./iq4_nl.js";
import type { GgmlTypeCodec } from "./types.js";

const QK = 256;
const SCALES_L = 2 + 2;
const QS = SCALES_L + QK / 64;
const TYPE_SIZE = QS + QK / 2;

export const IQ4_XS: GgmlTypeCodec = {
  id: 23,
  name: "IQ4_XS",
  blockSize: QK,
  typeSize: TYPE_SIZE,
  dequantize(src, blocks, out) {
    checkDequantize(IQ4_XS, src, blocks, out);
    const k = KVALUES_IQ4NL;
    for (let b = 0, p = 0, o = 0; b < blocks; b++, p += TYPE_SIZE, o += QK) {
      const d = readF16(src, p);
      const scalesH = src[p + 2]! | (src[p + 3]! << 8);
      for (let j = 0; j < 8; j++) {
        const ls = ((src[p + SCALES_L + (j >> 1)]! >> (4 * (j & 1))) & 0xf) | (((scalesH >> (2 * j)) & 3) << 4);
        const dl = d * (ls - 32);
        const q = p + QS + 16 * j;
        const e = o + 32 * j;
        for (let m = 0; m < 16; m++) {
          const v = src[q + m]!;
          out[e + m] = dl * k[v & 0xf]!;
          out[e + 16 + m] = dl * k[v >> 4]!;
        }
      }
    }
  },
};
