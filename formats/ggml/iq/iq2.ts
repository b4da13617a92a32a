/**
 * The 2-bit i-quants: IQ2_XXS, IQ2_XS, IQ2_S. Each 256-element block has an fp16 scale `d`, a
 * 4-bit sub-scale s per 32 (XXS) or 16 (XS, S) elements, and groups of 8 elements that are one
 * grid entry (8 magnitudes in {8, 25, 43}) with 8 signs:
 *
 *   y = (d · (0.5 + s) · 0.25) · grid[index][j] · sign_j
 *
 * gguf-py computes this left to right in numpy float32 (as ggml's `dequantize_row_iq2_*` does in
 * C), but no step ever rounds (common.ts, "Exactness"), so plain double arithmetic stored into
 * the Float32Array is bit-exact. Layouts from ggml-common.h (gguf-onnx.md §1.3).
 */
import { halfPrecisionValues } from "../../dense/float-bits.js";
import type { GgmlTypeCodec } from "../types.js";
import { D_BYTES, QK_K, checkDequantize, signedGroup8, u16le, u32le } from "./common.js";
import { IQ2S_GRID, IQ2S_INDEX_BITS, IQ2XS_GRID, IQ2XS_INDEX_BITS, IQ2XXS_GRID, IQ2XXS_INDEX_BITS, KSIGNS_IQ2XS } from "./grids.js";

/** d · (0.5 + s) · 0.25: exact in float32 for every fp16 d and 4-bit s. */
function iq2Scale(d: number, s: number): number {
  return d * (0.5 + s) * 0.25;
}

/**
 * block_iq2_xxs, 2.0625 bits per weight: `f16 d | u16 qs[32]`. Sub-block ib (32 elements) is
 * two u32 words at qs byte 8·ib: the first's four bytes index iq2xxs_grid; the second holds four
 * 7-bit ksigns_iq2xs indices (bits 7l..7l+6) and s (bits 28..31).
 */
const IQ2_XXS_BYTES = D_BYTES + QK_K / 4;

function dequantizeIq2Xxs(src: Uint8Array, blocks: number, out: Float32Array): void {
  checkDequantize(IQ2_XXS, src, blocks, out);
  const f16 = halfPrecisionValues("F16");
  const indexMask = (1 << IQ2XXS_INDEX_BITS) - 1;
  for (let b = 0; b < blocks; b++) {
    const p = b * IQ2_XXS_BYTES;
    const d = f16[u16le(src, p)]!;
    for (let ib = 0; ib < QK_K / 32; ib++) {
      const q = p + D_BYTES + 8 * ib;
      const aux = u32le(src, q + 4);
      const db = iq2Scale(d, aux >>> 28);
      const o = b * QK_K + 32 * ib;
      for (let l = 0; l < 4; l++) {
        signedGroup8(out, o + 8 * l, db, IQ2XXS_GRID, (src[q + l]! & indexMask) * 8, KSIGNS_IQ2XS[(aux >>> (7 * l)) & 127]!);
      }
    }
  }
}

/**
 * block_iq2_xs, 2.3125 bits per weight: `f16 d | u16 qs[32] | u8 scales[8]`. Each qs word is one
 * group of 8: bits 0..8 index iq2xs_grid, bits 9..15 index ksigns_iq2xs. scales[ib] holds s for
 * the first 16 elements of sub-block ib in its low nibble, for the last 16 in its high nibble.
 */
const IQ2_XS_QS = D_BYTES;
const IQ2_XS_SCALES = IQ2_XS_QS + QK_K / 4;
const IQ2_XS_BYTES = IQ2_XS_SCALES + QK_K / 32;

function dequantizeIq2Xs(src: Uint8Array, blocks: number, out: Float32Array): void {
  checkDequantize(IQ2_XS, src, blocks, out);
  const f16 = halfPrecisionValues("F16");
  const indexMask = (1 << IQ2XS_INDEX_BITS) - 1;
  for (let b = 0; b < blocks; b++) {
    const p = b * IQ2_XS_BYTES;
    const d = f16[u16le(src, p)]!;
    for (let ib = 0; ib < QK_K / 32; ib++) {
      const sc = src[p + IQ2_XS_SCALES + ib]!;
      const db0 = iq2Scale(d, sc & 15);
      const db1 = iq2Scale(d, sc >> 4);
      const o = b * QK_K + 32 * ib;
      for (let l = 0; l < 4; l++) {
        const qv = u16le(src, p + IQ2_XS_QS + 8 * ib + 2 * l);
        signedGroup8(out, o + 8 * l, l < 2 ? db0 : db1, IQ2XS_GRID, (qv & indexMask) * 8, KSIGNS_IQ2XS[qv >> IQ2XS_INDEX_BITS]!);
      }
    }
  }
}

/**
 * block_iq2_s, 2.5625 bits per weight: `f16 d | u8 qs[32] | u8 signs[32] | u8 qh[8] | u8 scales[8]`.
 * Group g (8 elements) has grid index qs[g] | ((qh[g/4] >> 2·(g%4)) & 3) << 8 into iq2s_grid and
 * its 8 sign bits in signs[g]; scales as in IQ2_XS.
 */
const IQ2_S_QS = D_BYTES;
const IQ2_S_SIGNS = IQ2_S_QS + QK_K / 8;
const IQ2_S_QH = IQ2_S_SIGNS + QK_K / 8;
const IQ2_S_SCALES = IQ2_S_QH + QK_K / 32;
const IQ2_S_BYTES = IQ2_S_SCALES + QK_K / 32;

function dequantizeIq2S(src: Uint8Array, blocks: number, out: Float32Array): void {
  checkDequantize(IQ2_S, src, blocks, out);
  const f16 = halfPrecisionValues("F16");
  const indexMask = (1 << IQ2S_INDEX_BITS) - 1;
  for (let b = 0; b < blocks; b++) {
    const p = b * IQ2_S_BYTES;
    const d = f16[u16le(src, p)]!;
    for (let ib = 0; ib < QK_K / 32; ib++) {
      const sc = src[p + IQ2_S_SCALES + ib]!;
      const db0 = iq2Scale(d, sc & 15);
      const db1 = iq2Scale(d, sc >> 4);
      const qh = src[p + IQ2_S_QH + ib]!;
      const o = b * QK_K + 32 * ib;
      for (let l = 0; l < 4; l++) {
        const g = 4 * ib + l;
        const index = (src[p + IQ2_S_QS + g]! | (((qh >> (2 * l)) & 3) << 8)) & indexMask;
        signedGroup8(out, o + 8 * l, l < 2 ? db0 : db1, IQ2S_GRID, index * 8, src[p + IQ2_S_SIGNS + g]!);
      }
    }
  }
}

export const IQ2_XXS: GgmlTypeCodec = { id: 16, name: "IQ2_XXS", blockSize: QK_K, typeSize: IQ2_XXS_BYTES, dequantize: dequantizeIq2Xxs };
export const IQ2_XS: GgmlTypeCodec = { id: 17, name: "IQ2_XS", blockSize: QK_K, typeSize: IQ2_XS_BYTES, dequantize: dequantizeIq2Xs };
export const IQ2_S: GgmlTypeCodec = { id: 22, name: "IQ2_S", blockSize: QK_K, typeSize: IQ2_S_BYTES, dequantize: dequantizeIq2S };
