import { ConversionError, FormatError } from "../errors.js";
import { bytesOf, expectArray, viewAs, type PackedArray } from "../packed-array.js";
import { decodeScales, encodeScales } from "./scales.js";
import type { LayerGeometry } from "./gptq-layout.js";
import { isTrivialGIdx, symmetricZero, type IntGroupTensor } from "./types.js";

/**
 * The AutoAWQ GEMM layout (`quant_method: awq`, `version: gemm`; auto-round `auto_round:auto_awq`),
 * 4-bit only, per linear with N outputs, K inputs, G = K / groupSize:
 *
 *   qweight  I32 [K, N/8]   8 codes per word packed along N, interleaved
 *   qzeros   I32 [G, N/8]   same interleave; zeros stored as is (symmetric: constant 8)
 *   scales   F16 [G, N]
 *
 * Nibble i (bits 4i … 4i+3) of word c holds output column 8c + AWQ_ORDER[i]. There is no g_idx:
 * act-order cannot be stored. Source: auto-round export_to_awq/utils.py (WQLinear_GEMM.from_linear,
 * reverse_awq_order, dequantize_gemm).
 */
export const AWQ_BITS = 4;
export const AWQ_PACK = 8;
/** Column (within a group of 8) held by nibble i. */
export const AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7] as const;

export interface AwqArrays {
  qweight: PackedArray;
  qzeros: PackedArray;
  scales: PackedArray;
}

/** Shapes and dtypes of an AWQ linear, from headers alone. */
export function awqGeometry(arrays: AwqArrays, spec: { groupSize: number }): LayerGeometry {
  const K = arrays.qweight.shape[0] ?? 0;
  const words = arrays.qweight.shape[1] ?? 0;
  if (arrays.qweight.shape.length !== 2 || K === 0 || words === 0) {
    throw new FormatError("PACKED_SHAPE_MISMATCH", "qweight must be [in, out/8]", { file: arrays.qweight.file, tensor: arrays.qweight.name, byteOffset: arrays.qweight.byteOffset, actual: `[${arrays.qweight.shape.join(", ")}]` });
  }
  const N = words * AWQ_PACK;
  const groupSize = spec.groupSize <= 0 || spec.groupSize > K ? K : spec.groupSize;
  if (K % groupSize !== 0) {
    throw new FormatError("PACKED_SHAPE_MISMATCH", "AWQ needs in_features to be a multiple of group_size", { file: arrays.qweight.file, tensor: arrays.qweight.name, expected: `a multiple of ${groupSize}`, actual: K });
  }
  const G = K / groupSize;
  expectArray(arrays.qweight, ["I32", "U32"], [K, words]);
  expectArray(arrays.qzeros, ["I32", "U32"], [G, words]);
  expectArray(arrays.scales, ["F16", "BF16", "F32"], [G, N]);
  return { outFeatures: N, inFeatures: K, groupSize, groups: G };
}

export function unpackAwq(arrays: AwqArrays, spec: { groupSize: number; sym: boolean }): IntGroupTensor {
  const { outFeatures: N, inFeatures: K, groupSize, groups: G } = awqGeometry(arrays, spec);
  const words = N / AWQ_PACK;
  const { values: scales, dtype: scaleDtype } = decodeScales(arrays.scales, [G, N]);
  const codes = new Uint8Array(N * K);
  unpackInterleaved(viewAs(arrays.qweight.bytes, Int32Array), K, words, codes, 1, K);
  const zeros = new Uint16Array(G * N);
  unpackInterleaved(viewAs(arrays.qzeros.bytes, Int32Array), G, words, zeros, N, 1);
  const sym = spec.sym && zeros.every((z) => z === symmetricZero(AWQ_BITS));
  return { params: { bits: AWQ_BITS, groupSize, sym, scaleDtype }, outFeatures: N, inFeatures: K, codes, scales, zeros, gIdx: undefined };
}

export interface PackedAwq {
  qweight: Uint8Array;
  qzeros: Uint8Array;
  scales: Uint8Array;
}

/** Packs into the AWQ layout, refusing what it cannot hold exactly (bits ≠ 4, act-order, N % 8, zero 16). */
export function packAwq(tensor: IntGroupTensor, layer: string): PackedAwq {
  const N = tensor.outFeatures;
  const K = tensor.inFeatures;
  const { bits, groupSize } = tensor.params;
  if (bits !== AWQ_BITS) throw new ConversionError("UNSUPPORTED_TARGET", "AWQ holds 4-bit codes only", { tensor: layer, expected: 4, actual: bits });
  if (!isTrivialGIdx(tensor.gIdx, groupSize)) throw new ConversionError("NOT_REPRESENTABLE", "AWQ has no g_idx, so act-order (desc_act) groups cannot be stored", { tensor: layer });
  if (N % AWQ_PACK !== 0) throw new ConversionError("NOT_REPRESENTABLE", "AWQ packs 8 output columns per word", { tensor: layer, expected: "out_features multiple of 8", actual: N });
  if (K % groupSize !== 0) throw new ConversionError("NOT_REPRESENTABLE", "AWQ needs in_features to be a multiple of group_size", { tensor: layer, expected: `a multiple of ${groupSize}`, actual: K });
  const words = N / AWQ_PACK;
  const G = K / groupSize;
  const tooBig = tensor.zeros.findIndex((z) => z > 15);
  if (tooBig >= 0) throw new ConversionError("NOT_REPRESENTABLE", `zero point does not fit AWQ's 4-bit field: group ${Math.floor(tooBig / N)}, row ${tooBig % N}`, { tensor: layer, expected: "0 … 15", actual: tensor.zeros[tooBig] });
  const qweight = new Int32Array(K * words);
  packInterleaved(tensor.codes, 1, K, qweight, K, words);
  const qzeros = new Int32Array(G * words);
  packInterleaved(tensor.zeros, N, 1, qzeros, G, words);
  return { qweight: bytesOf(qweight), qzeros: bytesOf(qzeros), scales: encodeScales(tensor.scales, "F16", layer) };
}

/**
 * Word c of stored row r holds columns 8c … 8c+7 in AWQ_ORDER; value (r, column) lives at
 * out[r·rowStride + column·columnStride] (codes: [N][K], so stride 1 and K; zeros: [G][N]).
 */
function unpackInterleaved(words: Int32Array, rows: number, wordsPerRow: number, out: Uint8Array | Uint16Array, rowStride: number, columnStride: number): void {
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < wordsPerRow; c++) {
      const word = words[r * wordsPerRow + c]!;
      for (let i = 0; i < AWQ_PACK; i++) out[r * rowStride + (8 * c + AWQ_ORDER[i]!) * columnStride] = (word >>> (4 * i)) & 15;
    }
  }
}

/** The inverse of `unpackInterleaved` (values already within 4 bits). */
function packInterleaved(values: Uint8Array | Uint16Array, rowStride: number, columnStride: number, words: Int32Array, rows: number, wordsPerRow: number): void {
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < wordsPerRow; c++) {
      let word = 0;
      for (let i = 0; i < AWQ_PACK; i++) word |= values[r * rowStride + (8 * c + AWQ_ORDER[i]!) * columnStride]! << (4 * i);
      words[r * wordsPerRow + c] = word;
    }
  }
}
