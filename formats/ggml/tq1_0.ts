/**
 * TQ1_0 (ggml type 34): ternary weights in blocks of 256, 1.6875 bits per weight.
 *
 *   block_tq1_0 { u8 qs[48]; u8 qh[4]; fp16 d; }       54 bytes (d comes last)
 *
 * Each byte holds 5 trits (qh bytes: 4) as a base-3 fraction of 256: the trit of weight n in a
 * byte b is `(((b · 3^n) mod 256) · 3) >> 8`, in 0..2, and the weight is `(trit − 1) · d`.
 * - qs[0..31] hold weights 32n + m (n < 5, m < 32);
 * - qs[32..47] hold weights 160 + 16n + m (n < 5, m < 16);
 * - qh[0..3] hold weights 240 + 4n + j (n < 4).
 * Layout from ggml src/ggml-common.h, decoding from src/ggml-quants.c `dequantize_row_tq1_0`
 * (../shared/ref/gguf-onnx.md §1.3).
 *
 * Encoding follows gguf-py's `TQ1_0.quantize_blocks` (quants.py, llama.cpp c392e509): in float32,
 * `d = amax`, `id = 1/d` (0 when d = 0), trit `roundf(x · id) + 1` (half away from zero). The
 * trits of a byte are packed first weight most significant, `q = Σ t_n · 3^(4−n)` (qh: one more
 * factor of 3), stored as the ceiling `(q · 256 + 242) / 243`.
 */

import { checkDequantize, checkQuantize, maxAbs, readF16, roundHalfAway, writeF16 } from "./block-math.js";
import type { GgmlTypeCodec } from "./types.js";

const QK = 256;
/** Bytes holding 5 trits each: (256 − 16) / 5 = 48. */
const QS_BYTES = (QK - 4 * (QK / 64)) / 5;
/** Bytes holding the last 16 weights, 4 trits each. */
const QH_BYTES = QK / 64;
const TYPE_SIZE = QS_BYTES + QH_BYTES + 2;
/** 3^n mod 256 is applied by masking the product, so plain powers suffice. */
const POW3 = [1, 3, 9, 27, 81] as const;

export const TQ1_0: GgmlTypeCodec = {
  id: 34,
  name: "TQ1_0",
  blockSize: QK,
  typeSize: TYPE_SIZE,
  dequantize(src, blocks, out) {
    checkDequantize(TQ1_0, src, blocks, out);
    for (let b = 0, p = 0, o = 0; b < blocks; b++, p += TYPE_SIZE, o += QK) {
      const d = readF16(src, p + QS_BYTES + QH_BYTES);
      for (let n = 0; n < 5; n++) {
        const pow = POW3[n]!;
        for (let m = 0; m < 32; m++) out[o + 32 * n + m] = (((((src[p + m]! * pow) & 0xff) * 3) >> 8) - 1) * d;
        for (let m = 0; m < 16; m++) out[o + 160 + 16 * n + m] = (((((src[p + 32 + m]! * pow) & 0xff) * 3) >> 8) - 1) * d;
      }
      for (let n = 0; n < 4; n++) {
        const pow = POW3[n]!;
        for (let j = 0; j < 4; j++) out[o + 240 + 4 * n + j] = (((((src[p + QS_BYTES + j]! * pow) & 0xff) * 3) >> 8) - 1) * d;
      }
    }
  },
  quantize(x, blocks, out) {
    checkQuantize(TQ1_0, x, blocks, out);
    const trit = new Uint8Array(QK);
    for (let b = 0, p = 0, o = 0; b < blocks; b++, p += TYPE_SIZE, o += QK) {
      const d = maxAbs(x, o, QK);
      const id = d === 0 ? 0 : Math.fround(1 / d);
      // `| 0` is numpy's int8 cast of an integral value (NaN → 0, as on x86).
      for (let e = 0; e < QK; e++) trit[e] = (roundHalfAway(Math.fround(x[o + e]! * id)) | 0) + 1;
      for (let m = 0; m < 32; m++) {
        let q = 0;
        for (let n = 0; n < 5; n++) q = q * 3 + trit[32 * n + m]!;
        out[p + m] = ceilDiv243(q);
      }
      for (let m = 0; m < 16; m++) {
        let q = 0;
        for (let n = 0; n < 5; n++) q = q * 3 + trit[160 + 16 * n + m]!;
        out[p + 32 + m] = ceilDiv243(q);
      }
      for (let j = 0; j < 4; j++) {
        let q = 0;
        for (let n = 0; n < 4; n++) q = q * 3 + trit[240 + 4 * n + j]!;
        out[p + QS_BYTES + j] = ceilDiv243(q * 3);
      }
      writeF16(out, p + QS_BYTES + QH_BYTES, d);
    }
  },
};

/** A 5-trit number q (0..242) as the byte ⌈q · 256 / 243⌉, truncated to 8 bits as gguf-py does. */
function ceilDiv243(q: number): number {
  return Math.floor((q * 256 + 242) / 243) & 0xff;
}
