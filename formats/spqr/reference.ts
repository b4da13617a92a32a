import { f32BitsToF16Bit } from "../dense/float-bits.js";
import { halfValues, roundHalf } from "./half.js";
import { firstOrderGroups, type SpqrTensor } from "./types.js";

/**
 * Reference dequantization, bit for bit as SpQR's host `dequantize_compressed`
 * (Vahe1994/SpQR inference_kernels/spqr_cuda.cpp; the GPU kernel computes the same fp16 ops):
 *
 *   s  = h(s_s · h(qs − s_z))        first-order scale of (row, column group)
 *   z  = h(z_s · h(qz − z_z))        first-order zero
 *   Wp = f32(h(s · h(q − z)))        dense part, permuted column order
 *   Wp[r][c] += f32(v)               each outlier, added in f32 (its dense code encodes 0)
 *   W  = h(Wp), then W[:, perm[j]] = W_permuted[:, j]
 *
 * h() is one fp16 operation (f32 compute, round to nearest even). Only 8 codes exist, so each
 * (row, group) decodes its 8 possible values once and the columns look them up.
 *
 * PTCSR quirk: the host walks PTCSR padding entries too, each adding +0 at (row, column 0), so
 * a dense −0 there becomes +0; tensors read from PTCSR reproduce that (the original output).
 *
 * Returns fp16 bit patterns [m, n] in original column order; `permuted` skips the un-permute.
 */
export function dequantizeSpqr(t: SpqrTensor, options: { permuted?: boolean; denseOnly?: boolean } = {}): Uint16Array {
  const m = t.outFeatures;
  const n = t.inFeatures;
  const { beta1, beta2 } = t.params;
  const G = firstOrderGroups(t);
  const rowGroups = m / beta1;
  const levels = 1 << t.params.bits;
  const wp = new Float32Array(m * n);
  const decoded = new Float32Array(levels);
  for (let g = 0; g < G; g++) {
    for (let r = 0; r < m; r++) {
      const stat = g * rowGroups + Math.floor(r / beta1);
      const half = halfValues();
      const s = roundHalf(half[t.scaleScale[stat]!]! * roundHalf(t.scaleCodes[g * m + r]! - half[t.scaleZero[stat]!]!));
      const z = roundHalf(half[t.zeroScale[stat]!]! * roundHalf(t.zeroCodes[g * m + r]! - half[t.zeroZero[stat]!]!));
      for (let q = 0; q < levels; q++) decoded[q] = roundHalf(s * roundHalf(q - z));
      const base = r * n + g * beta2;
      for (let c = 0; c < beta2; c++) wp[base + c] = decoded[t.codes[base + c]!]!;
    }
  }
  if (!(options.denseOnly ?? false)) addOutliers(t, wp);
  const out = new Uint16Array(m * n);
  const bits = new Uint32Array(wp.buffer);
  for (let r = 0; r < m; r++) {
    for (let j = 0; j < n; j++) {
      const column = options.permuted ? j : t.perm[j]!;
      out[r * n + column] = f32BitsToF16Bit(bits[r * n + j]!);
    }
  }
  return out;
}

function addOutliers(t: SpqrTensor, wp: Float32Array): void {
  const n = t.inFeatures;
  const half = halfValues();
  const { rowOffsets, cols, values } = t.outliers;
  for (let r = 0; r < t.outFeatures; r++) {
    for (let i = rowOffsets[r]!; i < rowOffsets[r + 1]!; i++) wp[r * n + cols[i]!] = wp[r * n + cols[i]!]! + half[values[i]!]!;
  }
  if (t.outlierStorage !== "ptcsr") return;
  const blockRows = 16;
  for (let block = 0; block < t.outFeatures / blockRows; block++) {
    let width = 0;
    for (let j = 0; j < blockRows; j++) width = Math.max(width, rowOffsets[block * blockRows + j + 1]! - rowOffsets[block * blockRows + j]!);
    for (let j = 0; j < blockRows; j++) {
      const r = block * blockRows + j;
      if (rowOffsets[r + 1]! - rowOffsets[r]! < width) wp[r * n] = wp[r * n]! + 0;
    }
  }
}
