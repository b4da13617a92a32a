/**
 * Q8_0 (ggml type 8): blocks of 32 weights, 8.5 bits per weight.
 *
 *   block_q8_0 { fp16 d; int8 qs[32]; }     34 bytes
 *   y[j] = qs[j] · d
 *
 * Layout from ggml src/ggml-common.h, decoding from src/ggml-quants.c `dequantize_row_q8_0`
 * (../shared/ref/gguf-onnx.md §1.3). Encoding follows gguf-py's `Q8_0.quantize_blocks`
 * (quants.py, llama.cpp c392e509), itself equal to `quantize_row_q8_0_ref`: in float32,
 * `d = amax / 127`, `id = 1/d` (0 when d = 0), `q = roundf(x · id)` rounding half away from zero.
 */

import { checkDequantize, checkQuantize, maxAbs, readF16, roundHalfAway, writeF16 } from "./block-math.js";
import type { GgmlTypeCodec } from "./types.js";

const QK = 32;
const TYPE_SIZE = 2 + QK;

export const Q8_0: GgmlTypeCodec = {
  id: 8,
  name: "Q8_0",
  blockSize: QK,
  typeSize: TYPE_SIZE,
  dequantize(src, blocks, out) {
    checkDequantize(Q8_0, src, blocks, out);
    for (let b = 0, p = 0, o = 0; b < blocks; b++, p += TYPE_SIZE, o += QK) {
      const d = readF16(src, p);
      for (let j = 0; j < QK; j++) out[o + j] = ((src[p + 2 + j]! << 24) >> 24) * d;
    }
  },
  quantize(x, blocks, out) {
    checkQuantize(Q8_0, x, blocks, out);
    for (let b = 0, p = 0, o = 0; b < blocks; b++, p += TYPE_SIZE, o += QK) {
      const d = Math.fround(maxAbs(x, o, QK) / 127);
      const id = d === 0 ? 0 : Math.fround(1 / d);
      writeF16(out, p, d);
      // `& 0xff` is numpy's int8 cast of an integral value; a NaN becomes 0, as on x86.
      for (let j = 0; j < QK; j++) out[p + 2 + j] = roundHalfAway(Math.fround(x[o + j]! * id)) & 0xff;
    }
  },
};
