/**
 * The 1-bit i-quants: IQ1_S and IQ1_M. Every 8 elements are one iq1s_grid entry (values in
 * {−1, 0, +1}) shifted by ±delta (IQ1_DELTA = 0.125), under a 3-bit sub-scale s:
 *
 *   y = (d · (2s + 1)) · (grid[index][j] + delta)
 *
 * gguf-py computes this in numpy float32 (as ggml's `dequantize_row_iq1_*` does in C); grid +
 * delta is one of ±0.125, ±0.875, ±1.125, and no step ever rounds (common.ts, "Exactness"), so
 * plain double arithmetic stored into the Float32Array is bit-exact. Layouts from ggml-common.h.
 */
import { halfPrecisionValues } from "../../dense/float-bits.js";
import type { GgmlTypeCodec } from "../types.js";
import { D_BYTES, IQ1_DELTA, QK_K, checkDequantize, u16le } from "./common.js";
import { IQ1S_GRID, IQ1S_INDEX_BITS } from "./grids.js";

/** out[o + j] = dl · (grid[g + j] + delta) for the 8 elements of one group. */
function shiftedGroup8(out: Float32Array, o: number, dl: number, g: number, delta: number): void {
  for (let j = 0; j < 8; j++) out[o + j] = dl * (IQ1S_GRID[g + j]! + delta);
}

/**
 * block_iq1_s, 1.5625 bits per weight: `f16 d | u8 qs[32] | u16 qh[8]`. Word qh[ib] (sub-block of
 * 32) holds the high 3 index bits of group l at bits 3l..3l+2, s at bits 12..14, and the sign of
 * delta at bit 15 (set: −delta). Group g's index is qs[g] | high << 8.
 */
const IQ1_S_QS = D_BYTES;
const IQ1_S_QH = IQ1_S_QS + QK_K / 8;
const IQ1_S_BYTES = IQ1_S_QH + QK_K / 16;

function dequantizeIq1S(src: Uint8Array, blocks: number, out: Float32Array): void {
  checkDequantize(IQ1_S, src, blocks, out);
  const f16 = halfPrecisionValues("F16");
  const indexMask = (1 << IQ1S_INDEX_BITS) - 1;
  for (let b = 0; b < blocks; b++) {
    const p = b * IQ1_S_BYTES;
    const d = f16[u16le(src, p)]!;
    for (let ib = 0; ib < QK_K / 32; ib++) {
      const qh = u16le(src, p + IQ1_S_QH + 2 * ib);
      const dl = d * (2 * ((qh >> 12) & 7) + 1);
      const delta = qh & 0x8000 ? -IQ1_DELTA : IQ1_DELTA;
      for (let l = 0; l < 4; l++) {
        const index = (src[p + IQ1_S_QS + 4 * ib + l]! | (((qh >> (3 * l)) & 7) << 8)) & indexMask;
        shiftedGroup8(out, b * QK_K + 32 * ib + 8 * l, dl, index * 8, delta);
      }
    }
  }
}

/**
 * block_iq1_m, 1.75 bits per weight: `u8 qs[32] | u8 qh[16] | u16 scales[4]`, no separate d.
 * d's fp16 bits are the top nibbles of the four scale words, first word lowest:
 * (w0 >> 12) | (w1 >> 8 & 0xf0) | (w2 >> 4 & 0xf00) | (w3 & 0xf000). Half t (16 elements, groups
 * 2t and 2t+1) has s = (w[t/4] >> 3·(t%4)) & 7, and qh[t] holds one nibble per group (low nibble
 * first): bits 0..2 are the high index bits, bit 3 the sign of delta.
 */
const IQ1_M_QS = 0;
const IQ1_M_QH = IQ1_M_QS + QK_K / 8;
const IQ1_M_SCALES = IQ1_M_QH + QK_K / 16;
const IQ1_M_BYTES = IQ1_M_SCALES + QK_K / 32;

function dequantizeIq1M(src: Uint8Array, blocks: number, out: Float32Array): void {
  checkDequantize(IQ1_M, src, blocks, out);
  const f16 = halfPrecisionValues("F16");
  const indexMask = (1 << IQ1S_INDEX_BITS) - 1;
  for (let b = 0; b < blocks; b++) {
    const p = b * IQ1_M_BYTES;
    const w = p + IQ1_M_SCALES;
    const dBits = (u16le(src, w) >> 12) | ((u16le(src, w + 2) >> 8) & 0xf0) | ((u16le(src, w + 4) >> 4) & 0xf00) | (u16le(src, w + 6) & 0xf000);
    const d = f16[dBits]!;
    for (let t = 0; t < QK_K / 16; t++) {
      const s = (u16le(src, w + 2 * (t >> 2)) >> (3 * (t & 3))) & 7;
      const dl = d * (2 * s + 1);
      const qh = src[p + IQ1_M_QH + t]!;
      for (let h = 0; h < 2; h++) {
        const nibble = (qh >> (4 * h)) & 15;
        const index = (src[p + IQ1_M_QS + 2 * t + h]! | ((nibble & 7) << 8)) & indexMask;
        shiftedGroup8(out, b * QK_K + 16 * t + 8 * h, dl, index * 8, nibble & 8 ? -IQ1_DELTA : IQ1_DELTA);
      }
    }
  }
}

export const IQ1_S: GgmlTypeCodec = { id: 19, name: "IQ1_S", blockSize: QK_K, typeSize: IQ1_S_BYTES, dequantize: dequantizeIq1S };
export const IQ1_M: GgmlTypeCodec = { id: 29, name: "IQ1_M", blockSize: QK_K, typeSize: IQ1_M_BYTES, dequantize: dequantizeIq1M };
