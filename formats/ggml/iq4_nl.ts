/**
 * IQ4_NL (ggml type 20): blocks of 32 weights on a non-linear 16-level grid, 4.5 bits per weight.
 *
 *   block_iq4_nl { fp16 d; u8 qs[16]; }       18 bytes
 *   y[j] = d · KVALUES_IQ4NL[qs[j] & 0xF],  y[j + 16] = d · KVALUES_IQ4NL[qs[j] >> 4]     (j < 16)
 *
 * Layout from ggml src/ggml-common.h (`block_iq4_nl`), decoding from src/ggml-quants.c
 * `dequantize_row_iq4_nl` (../shared/ref/gguf-onnx.md §1.3, table sizes), as gguf-py's
 * `IQ4_NL.dequantize_blocks` (quants.py, llama.cpp c392e509) computes it: one exact float32
 * product. Decoding only.
 */

import { checkDequantize, readF16 } from "./block-math.js";
import type { GgmlTypeCodec } from "./types.js";

const QK = 32;
const TYPE_SIZE = 2 + QK / 2;

/**
 * The 16 levels, format data: `kvalues_iq4nl` of ggml src/ggml-common.h (the same values as
 * gguf-py's `IQ4_NL.kvalues`). Shared with IQ4_XS.
 */
export const KVALUES_IQ4NL: Int8Array = Int8Array.of(-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113);

export const IQ4_NL: GgmlTypeCodec = {
  id: 20,
  name: "IQ4_NL",
  blockSize: QK,
  typeSize: TYPE_SIZE,
  dequantize(src, blocks, out) {
    checkDequantize(IQ4_NL, src, blocks, out);
    const k = KVALUES_IQ4NL;
    for (let b = 0, p = 0, o = 0; b < blocks; b++, p += TYPE_SIZE, o += QK) {
      const d = readF16(src, p);
      for (let j = 0; j < QK / 2; j++) {
        const q = src[p + 2 + j]!;
        out[o + j] = d * k[q & 0xf]!;
        out[o + j + QK / 2] = d * k[q >> 4]!;
      }
    }
  },
};
