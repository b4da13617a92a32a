/**
 * Block writers of the symmetric K-quants, x ≈ d·sc·q with signed codes and sub-block scales:
 * Q3_K (`quantize_row_q3_K_ref`) and Q6_K (`quantize_row_q6_K_ref`), ggml src/ggml-quants.c at
 * llama.cpp c392e509. Entry checks are the caller's (k-quantize.ts).
 *
 *   Q3_K 110 B  u8 hmask[32]; u8 qs[64]; u8 scales[12] (6-bit, biased by 32); fp16 d
 *   Q6_K 210 B  u8 ql[128]; u8 qh[64]; i8 scales[16]; fp16 d
 */

import { makeQ3Quants, makeQxQuants, nearestInt, pack2Bit, readF16, writeF16, GROUP_MAX_EPS, QK } from "./k-quantize-scales.js";

export const Q3_K_BYTES = QK / 8 + QK / 4 + 12 + 2;
export const Q6_K_BYTES = QK / 2 + QK / 4 + QK / 16 + 2;

// Scratch of one super-block, reused by every call (the quantizers are synchronous).
const codes = new Int8Array(QK);
const scales = new Float32Array(16);
const intScales = new Int32Array(16);

const fr = Math.fround;

/**
 * Q3_K: sixteen 16-element sub-blocks fitted by make_q3_quants (codes −4..3), their scales
 * rounded to 6 signed bits against d = max |scale| / −32, then codes recomputed from the
 * stored values and split into a high bit (hmask) and two low bits (qs).
 */
export function quantizeQ3K(x: Float32Array, blocks: number, out: Uint8Array): void {
  const size = Q3_K_BYTES;
  const L = codes;
  for (let b = 0; b < blocks; b++) {
    const xo = b * QK;
    const p = b * size;
    const sp = p + 96;
    let maxScale = 0;
    let amax = 0;
    for (let j = 0; j < 16; j++) {
      const scale = (scales[j] = makeQ3Quants(16, 4, x, xo + 16 * j, L, 16 * j));
      if (Math.abs(scale) > amax) {
        amax = Math.abs(scale);
        maxScale = scale;
      }
    }
    // 6-bit scales l = clamp(round(−32·s/maxScale)) + 32: low nibbles in bytes 0..7 (j < 8 low,
    // j ≥ 8 high half), top two bits in byte 8 + j%4 at bit 2·(j/4).
    out.fill(0, sp, sp + 12);
    if (maxScale !== 0) {
      const iscale = fr(-32 / maxScale);
      for (let j = 0; j < 16; j++) {
        const l = Math.max(-32, Math.min(31, (nearestInt(fr(iscale * scales[j]!)) << 24) >> 24)) + 32; // int8_t l
        intScales[j] = l;
        if (j < 8) out[sp + j] = l & 0xf;
        else out[sp + j - 8] = out[sp + j - 8]! | ((l & 0xf) << 4);
        out[sp + 8 + (j % 4)] = out[sp + 8 + (j % 4)]! | ((l >> 4) << (2 * (j >> 2)));
      }
      writeF16(out, p + 108, fr(1 / iscale));
    } else {
      intScales.fill(0);
      writeF16(out, p + 108, 0);
    }
    const dAll = readF16(out, p + 108);
    for (let j = 0; j < 16; j++) {
      const d = fr(dAll * (intScales[j]! - 32));
      if (d === 0) continue;
      for (let i = 16 * j; i < 16 * j + 16; i++) {
        L[i] = Math.max(-4, Math.min(3, nearestInt(fr(x[xo + i]! / d)))) + 4;
      }
    }
    // Codes 0..7: bit 2 goes to hmask (byte i % 32, bit i / 32), the low two bits to qs.
    out.fill(0, p, p + 32);
    for (let i = 0; i < QK; i++) {
      if (L[i]! > 3) {
        out[p + (i & 31)] = out[p + (i & 31)]! | (1 << (i >> 5));
        L[i] = L[i]! - 4;
      }
    }
    pack2Bit(L, out, p + 32);
  }
}

/**
 * Q6_K: sixteen 16-element sub-blocks fitted by make_qx_quants (codes −32..31), their scales
 * rounded to 8 signed bits against d = max |scale| / −128, then codes recomputed from the
 * stored values and split into low nibbles (ql) and top two bits (qh).
 */
export function quantizeQ6K(x: Float32Array, blocks: number, out: Uint8Array): void {
  const size = Q6_K_BYTES;
  const L = codes;
  for (let b = 0; b < blocks; b++) {
    const xo = b * QK;
    const p = b * size;
    let maxScale = 0;
    let maxAbsScale = 0;
    for (let j = 0; j < 16; j++) {
      const scale = (scales[j] = makeQxQuants(16, 32, x, xo + 16 * j, L, 16 * j));
      if (Math.abs(scale) > maxAbsScale) {
        maxAbsScale = Math.abs(scale);
        maxScale = scale;
      }
    }
    if (maxAbsScale < GROUP_MAX_EPS) {
      out.fill(0, p, p + size); // d = fp16(0) is zero bytes too
      continue;
    }
    const iscale = fr(-128 / maxScale);
    writeF16(out, p + 208, fr(1 / iscale));
    for (let j = 0; j < 16; j++) {
      const sc = (Math.min(127, nearestInt(fr(iscale * scales[j]!))) << 24) >> 24; // int8_t
      intScales[j] = sc;
      out[p + 192 + j] = sc;
    }
    const dAll = readF16(out, p + 208);
    for (let j = 0; j < 16; j++) {
      const d = fr(dAll * intScales[j]!);
      if (d === 0) continue;
      for (let i = 16 * j; i < 16 * j + 16; i++) {
        L[i] = Math.max(-32, Math.min(31, nearestInt(fr(x[xo + i]! / d)))) + 32;
      }
    }
    // Code 128h + 32k + l (h < 2, k < 4, l < 32): low nibble in ql[64h + 32(k & 1) + l] at bit
    // 4(k >> 1), top two bits in qh[32h + l] at bit 2k.
    for (let h = 0; h < 2; h++) {
      const ql = p + 64 * h;
      const qh = p + 128 + 32 * h;
      const c = 128 * h;
      for (let l = 0; l < 32; l++) {
        const q1 = L[c + l]!;
        const q2 = L[c + 32 + l]!;
        const q3 = L[c + 64 + l]!;
        const q4 = L[c + 96 + l]!;
        out[ql + l] = (q1 & 0xf) | ((q3 & 0xf) << 4);
        out[ql + 32 + l] = (q2 & 0xf) | ((q4 & 0xf) << 4);
        out[qh + l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
      }
    }
  }
}
