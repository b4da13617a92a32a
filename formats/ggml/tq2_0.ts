/**
 * TQ2_0 (ggml type 35): ternary weights in blocks of 256, 2.0625 bits per weight.
 *
 *   block_tq2_0 { u8 qs[64]; fp16 d; }       66 bytes (d comes last)
 *   y[128j + 32l + m] = (((qs[32j + m] >> 2l) & 3) − 1) · d     (j < 2, l < 4, m < 32)
 *
 * Layout from ggml src/ggml-common.h, decoding from src/ggml-quants.c `dequantize_row_tq2_0`
 * (../shared/ref/gguf-onnx.md §1.3).
 *
 * Encoding follows gguf-py's `TQ2_0.quantize_blocks` (quants.py, llama.cpp c392e509): in float32,
 * `d = amax`, `id = 1/d` (0 when d = 0), code `roundf(x · id) + 1` (half away from zero).
 */

import { checkDequantize, checkQuantize, maxAbs, readF16, roundHalfAway, writeF16 } from "./block-math.js";
import type { GgmlTypeCodec } from "./types.js";

const QK = 256;
const QS_BYTES = QK / 4;
const TYPE_SIZE = QS_BYTES + 2;

export const TQ2_0: GgmlTypeCodec = {
  id: 35,
  name: "TQ2_0",
  blockSize: QK,
  typeSize: TYPE_SIZE,
  dequantize(src, blocks, out) {
    checkDequantize(TQ2_0, src, blocks, out);
    for (let b = 0, p = 0, o = 0; b < blocks; b++, p += TYPE_SIZE, o += QK) {
      const d = readF16(src, p + QS_BYTES);
      for (let j = 0; j < 2; j++) {
        for (let m = 0; m < 32; m++) {
          const q = src[p + 32 * j + m]!;
          const e = o + 128 * j + m;
          out[e] = ((q & 3) - 1) * d;
          out[e + 32] = (((q >> 2) & 3) - 1) * d;
          out[e + 64] = (((q >> 4) & 3) - 1) * d;
          out[e + 96] = ((q >> 6) - 1) * d;
        }
      }
    }
  },
  quantize(x, blocks, out) {
    checkQuantize(TQ2_0, x, blocks, out);
    for (let b = 0, p = 0, o = 0; b < blocks; b++, p += TYPE_SIZE, o += QK) {
      const d = maxAbs(x, o, QK);
      const id = d === 0 ? 0 : Math.fround(1 / d);
      for (let j = 0; j < 2; j++) {
        for (let m = 0; m < 32; m++) {
          let q = 0;
          for (let l = 0; l < 4; l++) {
            // `| 0` is numpy's int8 cast of an integral value (NaN → 0, as on x86).
            const t = (roundHalfAway(Math.fround(x[o + 128 * j + 32 * l + m]! * id)) | 0) + 1;
            q |= (t & 3) << (2 * l);
          }
          out[p + 32 * j + m] = q;
        }
      }
      writeF16(out, p + QS_BYTES, d);
    }
  },
};
