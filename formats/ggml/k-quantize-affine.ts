/**
 * Block writers of the K-quants with a scale and a min per sub-block, x ≈ d·sc·q − dmin·m:
 * Q2_K (`quantize_row_q2_K_ref`), Q4_K and Q5_K (`quantize_row_q{4,5}_K_ref`), ggml
 * src/ggml-quants.c at llama.cpp c392e509. Entry checks are the caller's (k-quantize.ts).
 *
 *   Q2_K  84 B  u8 scales[16] (scale | min << 4); u8 qs[64]; fp16 d; fp16 dmin
 *   Q4_K 144 B  fp16 d; fp16 dmin; u8 scales[12] (6-bit scale and min pairs); u8 qs[128]
 *   Q5_K 176 B  fp16 d; fp16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]
 */

import { makeQkx2Quants, nearestInt, pack2Bit, readF16, writeF16, QK, type Qkx2Params } from "./k-quantize-scales.js";

export const Q2_K_BYTES = QK / 16 + QK / 4 + 2 + 2;
export const Q4_K_BYTES = 2 + 2 + 12 + QK / 2;
export const Q5_K_BYTES = 2 + 2 + 12 + QK / 8 + QK / 2;

// Scratch of one super-block, reused by every call (the quantizers are synchronous).
const codes = new Uint8Array(QK);
const laux = new Uint8Array(32);
const weights = new Float32Array(32);
const scales = new Float32Array(16);
const mins = new Float32Array(16);
const intScales = new Int32Array(16);
const intMins = new Int32Array(16);

const fr = Math.fround;

const Q2_PARAMS: Qkx2Params = { nmax: 3, rmin: fr(-0.5), rdelta: fr(0.1), nstep: 15, useMad: true };

/**
 * Q2_K: sixteen 16-element sub-blocks fitted by make_qkx2_quants (weights |x|, absolute error),
 * their scales and mins rounded to 4 bits against d = max scale / 15 and dmin = max min / 15,
 * then codes 0..3 recomputed from the stored values.
 */
export function quantizeQ2K(x: Float32Array, blocks: number, out: Uint8Array): void {
  const size = Q2_K_BYTES;
  for (let b = 0; b < blocks; b++) {
    const xo = b * QK;
    const p = b * size;
    let maxScale = 0;
    let maxMin = 0;
    for (let j = 0; j < 16; j++) {
      for (let l = 0; l < 16; l++) weights[l] = Math.abs(x[xo + 16 * j + l]!);
      const scale = (scales[j] = makeQkx2Quants(16, Q2_PARAMS, x, xo + 16 * j, weights, codes, 16 * j, laux, mins, j));
      if (scale > maxScale) maxScale = scale;
      if (mins[j]! > maxMin) maxMin = mins[j]!;
    }
    // Byte j of scales: the 4-bit scale of sub-block j, its 4-bit min above. Stores wrap to u8.
    if (maxScale > 0) {
      const iscale = fr(15 / maxScale);
      for (let j = 0; j < 16; j++) out[p + j] = nearestInt(fr(iscale * scales[j]!));
      writeF16(out, p + 80, fr(maxScale / 15));
    } else {
      out.fill(0, p, p + 16);
      writeF16(out, p + 80, 0);
    }
    if (maxMin > 0) {
      const iscale = fr(15 / maxMin);
      for (let j = 0; j < 16; j++) out[p + j] = out[p + j]! | (nearestInt(fr(iscale * mins[j]!)) << 4);
      writeF16(out, p + 82, fr(maxMin / 15));
    } else {
      writeF16(out, p + 82, 0);
    }
    const d = readF16(out, p + 80);
    const dmin = readF16(out, p + 82);
    for (let j = 0; j < 16; j++) {
      const sc = out[p + j]!;
      const dl = fr(d * (sc & 0xf));
      if (dl === 0) continue; // C's `if (!d)`: a zero-scale sub-block keeps its searched codes
      const ml = fr(dmin * (sc >> 4));
      for (let i = 16 * j; i < 16 * j + 16; i++) {
        codes[i] = Math.max(0, Math.min(3, nearestInt(fr(fr(x[xo + i]! + ml) / dl))));
      }
    }
    pack2Bit(codes, out, p + 16);
  }
}

const Q4_PARAMS: Qkx2Params = { nmax: 15, rmin: -1, rdelta: fr(0.1), nstep: 20, useMad: false };
const Q5_PARAMS: Qkx2Params = { nmax: 31, rmin: fr(-0.5), rdelta: fr(0.1), nstep: 15, useMad: false };

/**
 * The part Q4_K and Q5_K share: eight 32-element sub-blocks fitted by make_qkx2_quants with
 * weights rms(x) + |x|, their scales and mins quantized to 6 bits against fp16 d and dmin
 * (written at out[p], out[p + 2] and the 12 scale bytes at out[p + 4]), then the codes
 * 0..nmax recomputed from the stored scales into `codes`.
 */
function quantizeScaleMinBlock(x: Float32Array, xo: number, out: Uint8Array, p: number, params: Qkx2Params): void {
  let maxScale = 0;
  let maxMin = 0;
  for (let j = 0; j < 8; j++) {
    const so = xo + 32 * j;
    let sumX2 = 0;
    for (let l = 0; l < 32; l++) sumX2 = fr(sumX2 + fr(x[so + l]! * x[so + l]!));
    const avX = fr(Math.sqrt(fr(sumX2 / 32)));
    for (let l = 0; l < 32; l++) weights[l] = avX + Math.abs(x[so + l]!); // the store rounds to f32
    const scale = (scales[j] = makeQkx2Quants(32, params, x, so, weights, codes, 32 * j, laux, mins, j));
    if (scale > maxScale) maxScale = scale;
    if (mins[j]! > maxMin) maxMin = mins[j]!;
  }
  const invScale = maxScale > 0 ? fr(63 / maxScale) : 0;
  const invMin = maxMin > 0 ? fr(63 / maxMin) : 0;
  // get_scale_min_k4 layout: bytes 0..3 scales 0..3, bytes 4..7 mins 0..3 (low six bits);
  // bytes 8..11 scale (low nibble) and min (high nibble) of 4..7, whose top two bits go to
  // bits 6..7 of bytes 0..3 (scales) and 4..7 (mins).
  const sp = p + 4;
  for (let j = 0; j < 8; j++) {
    const ls = Math.min(63, nearestInt(fr(invScale * scales[j]!)) & 0xff); // uint8_t, then MIN
    const lm = Math.min(63, nearestInt(fr(invMin * mins[j]!)) & 0xff);
    intScales[j] = ls;
    intMins[j] = lm;
    if (j < 4) {
      out[sp + j] = ls;
      out[sp + j + 4] = lm;
    } else {
      out[sp + j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
      out[sp + j - 4] = out[sp + j - 4]! | ((ls >> 4) << 6);
      out[sp + j] = out[sp + j]! | ((lm >> 4) << 6);
    }
  }
  writeF16(out, p, fr(maxScale / 63));
  writeF16(out, p + 2, fr(maxMin / 63));
  const d = readF16(out, p);
  const dmin = readF16(out, p + 2);
  const nmax = params.nmax;
  for (let j = 0; j < 8; j++) {
    const dl = fr(d * intScales[j]!);
    if (dl === 0) continue;
    const ml = fr(dmin * intMins[j]!);
    for (let i = 32 * j; i < 32 * j + 32; i++) {
      codes[i] = Math.max(0, Math.min(nmax, nearestInt(fr(fr(x[xo + i]! + ml) / dl))));
    }
  }
}

/** Q4_K: quantizeScaleMinBlock with 4-bit codes, packed two to a byte. */
export function quantizeQ4K(x: Float32Array, blocks: number, out: Uint8Array): void {
  const size = Q4_K_BYTES;
  const L = codes;
  for (let b = 0; b < blocks; b++) {
    const p = b * size;
    quantizeScaleMinBlock(x, b * QK, out, p, Q4_PARAMS);
    // qs byte 32c + l: code 64c + l in the low nibble, code 64c + 32 + l in the high one.
    for (let c = 0; c < 4; c++) {
      const q = p + 16 + 32 * c;
      for (let l = 0; l < 32; l++) out[q + l] = L[64 * c + l]! | (L[64 * c + 32 + l]! << 4);
    }
  }
}

/** Q5_K: quantizeScaleMinBlock with 5-bit codes: low nibbles as Q4_K, fifth bits in qh. */
export function quantizeQ5K(x: Float32Array, blocks: number, out: Uint8Array): void {
  const size = Q5_K_BYTES;
  const L = codes;
  for (let b = 0; b < blocks; b++) {
    const p = b * size;
    quantizeScaleMinBlock(x, b * QK, out, p, Q5_PARAMS);
    // As Q4_K for the low four bits (qs at p + 48); bit 4 of code 64c + 32k + l goes to qh[l]
    // (at p + 16) bit 2c + k.
    const qh = p + 16;
    out.fill(0, qh, qh + 32);
    for (let c = 0; c < 4; c++) {
      const q = p + 48 + 32 * c;
      for (let l = 0; l < 32; l++) {
        const lo = L[64 * c + l]!;
        const hi = L[64 * c + 32 + l]!;
        out[qh + l] = out[qh + l]! | ((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1));
        out[q + l] = (lo & 0xf) | ((hi & 0xf) << 4);
      }
    }
  }
}
