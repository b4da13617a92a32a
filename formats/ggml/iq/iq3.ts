/**
 * The 3-bit i-quants: IQ3_XXS and IQ3_S. Each 256-element block has an fp16 scale `d` and a
 * 4-bit sub-scale s per 32 elements; every 4 elements are one grid entry (4 magnitudes) and
 * every 8 share a sign byte:
 *
 *   IQ3_XXS: y = (d · (0.5 + s) · 0.5) · iq3xxs_grid[index][j] · sign_j
 *   IQ3_S:   y = (d · (1 + 2s)) · iq3s_grid[index][j] · sign_j
 *
 * gguf-py computes these left to right in numpy float32 (as ggml's `dequantize_row_iq3_*` does
 * in C), but no step ever rounds (common.ts, "Exactness"), so plain double arithmetic stored into
 * the Float32Array is bit-exact. Layouts from ggml-common.h.
 */
import { halfPrecisionValues } from "../../dense/float-bits.js";
import type { GgmlTypeCodec } from "../types.js";
import { D_BYTES, QK_K, checkDequantize, signedGroup4, u16le, u32le } from "./common.js";
import { IQ3S_GRID, IQ3S_INDEX_BITS, IQ3XXS_GRID, IQ3XXS_INDEX_BITS, KSIGNS_IQ2XS } from "./grids.js";

/**
 * block_iq3_xxs, 3.0625 bits per weight: `f16 d | u8 qs[64] | u32 scales_and_signs[8]`. qs[k]
 * indexes iq3xxs_grid for elements 4k..4k+3. Word ib (sub-block of 32) holds four 7-bit
 * ksigns_iq2xs indices (bits 7l..7l+6, one per 8 elements) and s (bits 28..31).
 */
const IQ3_XXS_QS = D_BYTES;
const IQ3_XXS_SIGNS = IQ3_XXS_QS + QK_K / 4;
const IQ3_XXS_BYTES = IQ3_XXS_SIGNS + QK_K / 8;

function dequantizeIq3Xxs(src: Uint8Array, blocks: number, out: Float32Array): void {
  checkDequantize(IQ3_XXS, src, blocks, out);
  const f16 = halfPrecisionValues("F16");
  const indexMask = (1 << IQ3XXS_INDEX_BITS) - 1;
  for (let b = 0; b < blocks; b++) {
    const p = b * IQ3_XXS_BYTES;
    const d = f16[u16le(src, p)]!;
    for (let ib = 0; ib < QK_K / 32; ib++) {
      const aux = u32le(src, p + IQ3_XXS_SIGNS + 4 * ib);
      const db = d * (0.5 + (aux >>> 28)) * 0.5;
      for (let l = 0; l < 4; l++) {
        const signs = KSIGNS_IQ2XS[(aux >>> (7 * l)) & 127]!;
        const k = 8 * ib + 2 * l;
        const o = b * QK_K + 4 * k;
        signedGroup4(out, o, db, IQ3XXS_GRID, (src[p + IQ3_XXS_QS + k]! & indexMask) * 4, signs, 0);
        signedGroup4(out, o + 4, db, IQ3XXS_GRID, (src[p + IQ3_XXS_QS + k + 1]! & indexMask) * 4, signs, 4);
      }
    }
  }
}

/**
 * block_iq3_s, 3.4375 bits per weight: `f16 d | u8 qs[64] | u8 qh[8] | u8 signs[32] | u8 scales[4]`.
 * Grid entry k (elements 4k..4k+3) has index qs[k] | ((qh[k/8] >> k%8) & 1) << 8 into iq3s_grid;
 * signs[e/8] bit e%8 is element e's sign; scales[ib/2] holds s of sub-block ib in its low
 * (ib even) or high (ib odd) nibble.
 */
const IQ3_S_QS = D_BYTES;
const IQ3_S_QH = IQ3_S_QS + QK_K / 4;
const IQ3_S_SIGNS = IQ3_S_QH + QK_K / 32;
const IQ3_S_SCALES = IQ3_S_SIGNS + QK_K / 8;
const IQ3_S_BYTES = IQ3_S_SCALES + QK_K / 64;

function dequantizeIq3S(src: Uint8Array, blocks: number, out: Float32Array): void {
  checkDequantize(IQ3_S, src, blocks, out);
  const f16 = halfPrecisionValues("F16");
  const indexMask = (1 << IQ3S_INDEX_BITS) - 1;
  for (let b = 0; b < blocks; b++) {
    const p = b * IQ3_S_BYTES;
    const d = f16[u16le(src, p)]!;
    for (let ib = 0; ib < QK_K / 32; ib++) {
      const s = (src[p + IQ3_S_SCALES + (ib >> 1)]! >> (4 * (ib & 1))) & 15;
      const db = d * (1 + 2 * s);
      const qh = src[p + IQ3_S_QH + ib]!;
      for (let l = 0; l < 4; l++) {
        const signs = src[p + IQ3_S_SIGNS + 4 * ib + l]!;
        const k = 8 * ib + 2 * l;
        const o = b * QK_K + 4 * k;
        const index0 = (src[p + IQ3_S_QS + k]! | (((qh >> (2 * l)) & 1) << 8)) & indexMask;
        const index1 = (src[p + IQ3_S_QS + k + 1]! | (((qh >> (2 * l + 1)) & 1) << 8)) & indexMask;
        signedGroup4(out, o, db, IQ3S_GRID, index0 * 4, signs, 0);
        signedGroup4(out, o + 4, db, IQ3S_GRID, index1 * 4, signs, 4);
      }
    }
  }
}

export const IQ3_XXS: GgmlTypeCodec = { id: 18, name: "IQ3_XXS", blockSize: QK_K, typeSize: IQ3_XXS_BYTES, dequantize: dequantizeIq3Xxs };
export const IQ3_S: GgmlTypeCodec = { id: 21, name: "IQ3_S", blockSize: QK_K, typeSize: IQ3_S_BYTES, dequantize: dequantizeIq3S };
