import { ConversionError, FormatError } from "../errors.js";
import { readField, streamWords, writeField } from "./bitstream.js";
import { bytesOf, expectArray, viewAs, type PackedArray } from "../packed-array.js";
import { decodeScales, encodeScales } from "./scales.js";
import { groupCount, isTrivialGIdx, maxCode, symmetricZero, type IntBits, type IntGroupTensor } from "./types.js";

/**
 * The GPTQ layout (AutoGPTQ, GPTQModel, auto-round's `auto_round` packing formats), per linear
 * with N outputs, K inputs, G = ⌈K / groupSize⌉ groups:
 *
 *   qweight  I32 [K·bits/32, N]   codes, one little-endian bit stream along K per output column
 *   qzeros   I32 [G, N·bits/32]   zero points, one bit stream along N per group
 *   scales   F16 [G, N]           (BF16/F32 accepted on import)
 *   g_idx    I32 [K]              group of each input column (optional: ⌊k / groupSize⌋)
 *
 * Zero conventions: "v1" (AutoGPTQ `checkpoint_format: gptq`, `auto_round:auto_gptq`) stores
 * zero − 1 and decoders add 1 after masking, without re-masking: decoded zeros are 1 … 2^bits
 * and a zero of 0 cannot be stored. "v2" (`gptq_v2`, `auto_round`, `auto_round:gptqmodel`)
 * stores the zero as is: 0 … 2^bits − 1.
 * Source: AutoGPTQ qlinear_cuda_old.py pack/forward; auto-round qlinear_torch(_zp).py.
 */
export type ZeroConvention = "v1" | "v2";

export interface GptqArrays {
  qweight: PackedArray;
  qzeros: PackedArray;
  scales: PackedArray;
  gIdx?: PackedArray | undefined;
}

export interface GptqLayerSpec {
  bits: IntBits;
  /** -1 or ≥ K: one group per row. */
  groupSize: number;
  sym: boolean;
  zeros: ZeroConvention;
}

export interface LayerGeometry {
  outFeatures: number;
  inFeatures: number;
  groupSize: number;
  groups: number;
}

/**
 * Shapes and dtypes of a GPTQ-layout linear, from headers alone (array bytes are not read):
 * K comes from g_idx when present (else from qweight's rows), and every array must agree.
 */
export function gptqGeometry(arrays: GptqArrays, spec: GptqLayerSpec): LayerGeometry {
  const { qweight } = arrays;
  const N = qweight.shape[1] ?? 0;
  const K = arrays.gIdx !== undefined && arrays.gIdx.shape.length === 1 ? arrays.gIdx.shape[0]! : ((qweight.shape[0] ?? 0) * 32) / spec.bits;
  if (qweight.shape.length !== 2 || N === 0 || !Number.isInteger(K) || K === 0) {
    throw new FormatError("PACKED_SHAPE_MISMATCH", `qweight must be [in·${spec.bits}/32, out]`, { file: qweight.file, tensor: qweight.name, byteOffset: qweight.byteOffset, actual: `[${qweight.shape.join(", ")}]` });
  }
  expectArray(qweight, ["I32", "U32"], [(K * spec.bits) / 32, N]);
  const groupSize = spec.groupSize <= 0 || spec.groupSize > K ? K : spec.groupSize;
  const G = groupCount(K, groupSize);
  expectArray(arrays.qzeros, ["I32", "U32"], [G, streamWords(N, spec.bits)]);
  expectArray(arrays.scales, ["F16", "BF16", "F32"], [G, N]);
  if (arrays.gIdx !== undefined) expectArray(arrays.gIdx, ["I32", "I64"], [K]);
  return { outFeatures: N, inFeatures: K, groupSize, groups: G };
}

/** Decodes one GPTQ-layout linear into the integer representation, validating every array first. */
export function unpackGptq(arrays: GptqArrays, spec: GptqLayerSpec): IntGroupTensor {
  const { bits } = spec;
  const { outFeatures: N, inFeatures: K, groupSize, groups: G } = gptqGeometry(arrays, spec);
  const { values: scales, dtype: scaleDtype } = decodeScales(arrays.scales, [G, N]);
  const gIdx = arrays.gIdx === undefined ? undefined : decodeGIdx(arrays.gIdx, K, G);
  const codes = unpackCodes(viewAs(arrays.qweight.bytes, Int32Array), N, K, bits);
  const zeros = unpackZeros(viewAs(arrays.qzeros.bytes, Int32Array), G, N, bits, spec.zeros);
  const symZero = symmetricZero(bits);
  // A config may say sym while the zeros say otherwise; the zeros are what every decoder uses.
  const sym = spec.sym && zeros.every((z) => z === symZero);
  return { params: { bits, groupSize, sym, scaleDtype }, outFeatures: N, inFeatures: K, codes, scales, zeros, gIdx: isTrivialGIdx(gIdx, groupSize) ? undefined : gIdx };
}

/** g_idx: I32 [K], every entry a group index in [0, G). */
export function decodeGIdx(array: PackedArray, K: number, G: number): Int32Array {
  expectArray(array, ["I32", "I64"], [K]);
  const gIdx = new Int32Array(K);
  if (array.dtype === "I64") {
    const view = new DataView(array.bytes.buffer, array.bytes.byteOffset, array.bytes.length);
    for (let k = 0; k < K; k++) gIdx[k] = Number(view.getBigInt64(k * 8, true));
  } else {
    gIdx.set(viewAs(array.bytes, Int32Array));
  }
  for (let k = 0; k < K; k++) {
    const g = gIdx[k]!;
    if (!(g >= 0 && g < G)) {
      const elementBytes = array.dtype === "I64" ? 8 : 4;
      throw new FormatError("PACKED_VALUE_INVALID", `g_idx[${k}] is not a group index`, { file: array.file, tensor: array.name, byteOffset: (array.byteOffset ?? 0) + k * elementBytes, expected: `0 … ${G - 1}`, actual: g });
    }
  }
  return gIdx;
}

function unpackCodes(qweight: Int32Array, N: number, K: number, bits: number): Uint8Array {
  const codes = new Uint8Array(N * K);
  for (let n = 0; n < N; n++) {
    const row = n * K;
    for (let k = 0; k < K; k++) codes[row + k] = readField(qweight, n, N, k, bits);
  }
  return codes;
}

function unpackZeros(qzeros: Int32Array, G: number, N: number, bits: number, convention: ZeroConvention): Uint16Array {
  const zeros = new Uint16Array(G * N);
  const words = streamWords(N, bits);
  const add = convention === "v1" ? 1 : 0;
  for (let g = 0; g < G; g++) {
    for (let n = 0; n < N; n++) zeros[g * N + n] = readField(qzeros, g * words, 1, n, bits) + add;
  }
  return zeros;
}

export interface PackedGptq {
  qweight: Int32Array;
  qzeros: Int32Array;
  scales: Uint8Array;
  /** Always written (AutoGPTQ's exporter registers it; loaders accept it). */
  gIdx: Int32Array;
}

/**
 * Packs the representation into the GPTQ layout. Refuses (ConversionError NOT_REPRESENTABLE)
 * what the layout cannot hold exactly: K or N not a multiple of 32/… whole words, zero points
 * outside the convention's range, scales that would change in F16.
 */
export function packGptq(tensor: IntGroupTensor, zeros: ZeroConvention, layer: string): PackedGptq {
  const { bits } = tensor.params;
  const N = tensor.outFeatures;
  const K = tensor.inFeatures;
  // AutoGPTQ sizes qweight as K // 32 * bits rows and qzeros as N // 32 * bits columns.
  if (K % 32 !== 0 || N % 32 !== 0) {
    throw new ConversionError("NOT_REPRESENTABLE", `GPTQ loaders need in_features and out_features that are multiples of 32`, { tensor: layer, expected: "K, N multiples of 32", actual: `N=${N}, K=${K}` });
  }
  const [low, high] = zeros === "v1" ? [1, maxCode(bits) + 1] : [0, maxCode(bits)];
  const G = groupCount(K, tensor.params.groupSize);
  const zeroWords = streamWords(N, bits);
  const qzeros = new Int32Array(G * zeroWords);
  for (let g = 0; g < G; g++) {
    for (let n = 0; n < N; n++) {
      const z = tensor.zeros[g * N + n]!;
      if (z < low || z > high) {
        const why = zeros === "v1" && z === 0 ? "GPTQ v1 stores zero − 1, so a zero point of 0 cannot be stored (use v2 / gptq_v2, or --allow-requant)" : `zero point outside the ${zeros} range`;
        throw new ConversionError("NOT_REPRESENTABLE", `${why}: group ${g}, row ${n}`, { tensor: layer, expected: `${low} … ${high}`, actual: z });
      }
      writeField(qzeros, g * zeroWords, 1, n, bits, z - (zeros === "v1" ? 1 : 0));
    }
  }
  const qweight = new Int32Array((K * bits) / 32 * N);
  for (let n = 0; n < N; n++) {
    const row = n * K;
    for (let k = 0; k < K; k++) writeField(qweight, n, N, k, bits, tensor.codes[row + k]!);
  }
  const gIdx = tensor.gIdx ?? Int32Array.from({ length: K }, (_, k) => Math.floor(k / tensor.params.groupSize));
  return { qweight, qzeros, scales: encodeScales(tensor.scales, "F16", layer), gIdx };
}

/** The packed arrays as little-endian bytes, for writers. */
export function gptqBytes(packed: PackedGptq): { qweight: Uint8Array; qzeros: Uint8Array; scales: Uint8Array; gIdx: Uint8Array } {
  return { qweight: bytesOf(packed.qweight), qzeros: bytesOf(packed.qzeros), scales: packed.scales, gIdx: bytesOf(packed.gIdx) };
}
