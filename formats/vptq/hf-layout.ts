import { dtypeBytes, type DType } from "../dtype.js";
import { FormatError, UsageError } from "../errors.js";
import { expectArray, viewAs, type PackedArray } from "../packed-array.js";
import { indexBits, vectorRows, type VptqFloat, type VptqParams, type VptqTensor } from "./types.js";

/**
 * The VPTQ-community packed layout (microsoft/VPTQ vptq/layers/vqlinear.py `VQuantLinear`,
 * vptq/utils/pack.py `pack_index`; ../shared/ref/vptq-spqr.md 1.4–1.5). Tensors of a layer
 * `<m>`, by suffix:
 *
 *   centroids.weight          F16|BF16 [G, k·vl]
 *   res_centroids.weight      F16|BF16 [G, k_res·vl]          when k_res > 0
 *   indices                   I32 [G, num_idx, ceil(gs·tb/32)] per row, merged = res << ib | main,
 *                             tb bits each, LSB-first from a fresh word, zero-padded
 *   outlier_centroids.weight  F16|BF16 [1, k_o·ovl]            when outliers
 *   outlier_indices           I16 [1, num_oidx, outlier_size]  uint16 bits, never packed
 *   perm                      I16 [in]                         uint16 bits, when enable_perm
 *   weight_scale, weight_bias F16|BF16 [in]                    when enable_norm
 */
export const VPTQ_SUFFIXES = ["centroids.weight", "res_centroids.weight", "indices", "outlier_centroids.weight", "outlier_indices", "perm", "weight_scale", "weight_bias"] as const;
export type VptqSuffix = (typeof VPTQ_SUFFIXES)[number];

export interface VptqArraySpec {
  dtype: DType;
  shape: number[];
}

export function packedGroupWords(groupSize: number, p: VptqParams): number {
  return Math.ceil((groupSize * (indexBits(p.numCentroids) + indexBits(p.numResCentroids))) / 32);
}

/** The arrays a layer with these parameters stores, with their dtypes and shapes. */
export function vptqArraySpecs(p: VptqParams, out: number, inFeatures: number, dtype: VptqFloat): Map<VptqSuffix, VptqArraySpec> {
  const specs = new Map<VptqSuffix, VptqArraySpec>();
  specs.set("centroids.weight", { dtype, shape: [p.groupNum, p.numCentroids * p.vectorLen] });
  if (p.numResCentroids > 0) specs.set("res_centroids.weight", { dtype, shape: [p.groupNum, p.numResCentroids * p.vectorLen] });
  specs.set("indices", { dtype: "I32", shape: [p.groupNum, vectorRows(out, p.vectorLen), packedGroupWords(p.groupSize, p)] });
  if (p.outlierSize > 0) {
    specs.set("outlier_centroids.weight", { dtype, shape: [1, p.outlierNumCentroids * p.outlierVectorLen] });
    specs.set("outlier_indices", { dtype: "I16", shape: [1, vectorRows(out, p.outlierVectorLen), p.outlierSize] });
  }
  if (p.enablePerm) specs.set("perm", { dtype: "I16", shape: [inFeatures] });
  if (p.enableNorm) {
    specs.set("weight_scale", { dtype, shape: [inFeatures] });
    specs.set("weight_bias", { dtype, shape: [inFeatures] });
  }
  return specs;
}

/**
 * Weights a layer may dequantize to per byte of the arrays its parameters call for: 0.125 bits
 * per weight, 8× below the leanest released layouts (v16-k65536, 1 bit per weight plus
 * codebooks). The same physical bound as the container's MAX_WEIGHTS_PER_BLOB_BYTE
 * (converters/lmpack/reader.ts; a test pins the two equal), applied here so that the HF-VPTQ
 * importer and GGUF `--keep-packed` refuse it too: every reader checks the stored arrays against
 * `vptqArraySpecs`, so the implied bytes below are the bytes the file must hold. Without it a
 * 17 KB layer (one 1-bit index per 4096-row vector) unpacks to 16 Mi weights.
 */
export const VPTQ_MAX_WEIGHTS_PER_STORED_BYTE = 64;
/**
 * Hard ceiling on out × in, whatever the file holds: dequantizing materialises every weight
 * (2^31 f32 = 8 GiB). The largest linear of released VPTQ models (Llama-3.1-405B MLP, 53248 ×
 * 16384) has 2^29.7 weights; in_features is also capped at 65536 by the uint16 permutation.
 */
export const VPTQ_MAX_WEIGHTS = 2 ** 31;

/** Bytes of the arrays a layer with these parameters stores (codebook dtype F16 or BF16: same width). */
export function vptqStoredBytes(p: VptqParams, out: number, inFeatures: number): number {
  let bytes = 0;
  for (const spec of vptqArraySpecs(p, out, inFeatures, "F16").values()) bytes += spec.shape.reduce((a, b) => a * b, 1) * dtypeBytes(spec.dtype);
  return bytes;
}

/**
 * Checks parameters against each other and the layer shape, then against the bytes they imply
 * (UsageError naming the layer; readers rethrow it as their FormatError). Runs before any array
 * is read or allocated.
 */
export function checkVptqParams(p: VptqParams, out: number, inFeatures: number, tensor?: string): void {
  const bad = (detail: string, actual: unknown, expected?: unknown) => new UsageError("BAD_ARGUMENT", detail, { tensor, actual, expected });
  const pow2 = (k: number) => Number.isInteger(k) && k >= 2 && (k & (k - 1)) === 0;
  const count = (n: number) => Number.isSafeInteger(n) && n >= 0;
  if (!Number.isSafeInteger(out) || out < 1 || !Number.isSafeInteger(inFeatures) || inFeatures < 1) throw bad("out_features and in_features must be positive integers", `${out}x${inFeatures}`);
  if (!Number.isSafeInteger(p.vectorLen) || p.vectorLen < 1) throw bad("vector length must be a positive integer", p.vectorLen);
  if (!pow2(p.numCentroids) || p.numCentroids > 65536) throw bad("num_centroids must be a power of two ≤ 65536", p.numCentroids);
  if (p.numResCentroids !== 0 && (!pow2(p.numResCentroids) || p.numResCentroids > 65536)) throw bad("num_res_centroids must be 0 or a power of two ≤ 65536", p.numResCentroids);
  if (!Number.isInteger(p.groupNum) || p.groupNum < 1 || !count(p.groupSize) || !count(p.outlierSize) || p.groupSize * p.groupNum + p.outlierSize !== inFeatures) throw bad("group_num · group_size + outlier_size must equal in_features", `${p.groupNum}·${p.groupSize} + ${p.outlierSize} vs ${inFeatures}`);
  if (p.outlierSize > 0 && (!Number.isSafeInteger(p.outlierVectorLen) || p.outlierVectorLen < 1 || !pow2(p.outlierNumCentroids) || p.outlierNumCentroids > 65536)) throw bad("outliers need a vector length ≥ 1 and a power-of-two codebook ≤ 65536", `${p.outlierVectorLen}/${p.outlierNumCentroids}`);
  if (inFeatures > 65536) throw bad("VPTQ stores the permutation as uint16: in_features must be ≤ 65536", inFeatures);
  if (indexBits(p.numCentroids) + indexBits(p.numResCentroids) > 32) throw bad("main plus residual index bits must fit 32", p);
  checkExpansion(p, out, inFeatures, bad);
}

function checkExpansion(p: VptqParams, out: number, inFeatures: number, bad: (detail: string, actual: unknown, expected?: unknown) => Error): void {
  const weights = out * inFeatures;
  if (weights > VPTQ_MAX_WEIGHTS) throw bad(`${out}×${inFeatures} = ${weights} weights is over the ${VPTQ_MAX_WEIGHTS}-weight ceiling of one layer`, `${weights} weights`, `<= ${VPTQ_MAX_WEIGHTS} weights`);
  const storedBytes = vptqStoredBytes(p, out, inFeatures);
  if (!Number.isSafeInteger(storedBytes)) throw bad("the arrays these parameters call for exceed 2^53 bytes", `${storedBytes} bytes`);
  const limit = storedBytes * VPTQ_MAX_WEIGHTS_PER_STORED_BYTE;
  if (weights > limit) {
    throw bad(`${out}×${inFeatures} = ${weights} weights from ${storedBytes} stored bytes is over ${VPTQ_MAX_WEIGHTS_PER_STORED_BYTE} weights per stored byte (at most ${limit})`, `${weights} weights in ${storedBytes} bytes`, `<= ${limit} weights`);
  }
}

/** Packs the representation into the layout's arrays (little-endian bytes), by suffix. */
export function packVptq(t: VptqTensor): Map<VptqSuffix, Uint8Array> {
  const p = t.params;
  checkVptqParams(p, t.outFeatures, t.inFeatures);
  const ib = indexBits(p.numCentroids);
  const rb = indexBits(p.numResCentroids);
  const tb = ib + rb;
  const rows = p.groupNum * vectorRows(t.outFeatures, p.vectorLen);
  const words = packedGroupWords(p.groupSize, p);
  const packed = new Uint32Array(rows * words);
  for (let row = 0; row < rows; row++) {
    for (let e = 0; e < p.groupSize; e++) {
      const at = row * p.groupSize + e;
      // Merged index as an unsigned value: residual above the main index (up to 32 bits).
      const merged = (rb > 0 ? t.resIndices![at]! * 2 ** ib : 0) + t.mainIndices[at]!;
      writeBits(packed, row * words, e * tb, tb, merged);
    }
  }
  const out = new Map<VptqSuffix, Uint8Array>();
  const bytes = (a: Uint16Array | Uint32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  out.set("centroids.weight", bytes(t.centroids));
  if (p.numResCentroids > 0) out.set("res_centroids.weight", bytes(t.resCentroids!));
  out.set("indices", bytes(packed));
  if (p.outlierSize > 0) {
    out.set("outlier_centroids.weight", bytes(t.outlierCentroids!));
    out.set("outlier_indices", bytes(t.outlierIndices!));
  }
  if (p.enablePerm) out.set("perm", bytes(t.perm!));
  if (p.enableNorm) {
    out.set("weight_scale", bytes(t.weightScale!));
    out.set("weight_bias", bytes(t.weightBias!));
  }
  return out;
}

/** Writes `width` bits of `value` at stream bit `bit` of the row starting at word `base`, LSB-first. */
function writeBits(words: Uint32Array, base: number, bit: number, width: number, value: number): void {
  let remaining = width;
  let at = bit;
  let v = value;
  while (remaining > 0) {
    const word = base + (at >>> 5);
    const shift = at & 31;
    const take = Math.min(remaining, 32 - shift);
    const part = v % 2 ** take;
    words[word] = (words[word]! | (part << shift)) >>> 0;
    v = Math.floor(v / 2 ** take);
    at += take;
    remaining -= take;
  }
}

function readBits(words: Uint32Array, base: number, bit: number, width: number): number {
  let value = 0;
  let scale = 1;
  let remaining = width;
  let at = bit;
  while (remaining > 0) {
    const shift = at & 31;
    const take = Math.min(remaining, 32 - shift);
    const part = (words[base + (at >>> 5)]! >>> shift) & (take === 32 ? 0xffffffff : (1 << take) - 1);
    value += (part >>> 0) * scale;
    scale *= 2 ** take;
    at += take;
    remaining -= take;
  }
  return value;
}

/**
 * Unpacks and validates a layer's arrays (shapes and dtypes from the parameters; outlier
 * indices below their codebook; the permutation a permutation; padding bits zero) before any
 * value is used: every error names the tensor and the byte offset.
 */
export function unpackVptq(arrays: Map<VptqSuffix, PackedArray>, p: VptqParams, out: number, inFeatures: number, tensor?: string): VptqTensor {
  checkVptqParams(p, out, inFeatures, tensor);
  const centroidArray = arrays.get("centroids.weight");
  if (centroidArray === undefined) throw new FormatError("TENSOR_MISSING", "VPTQ layer without centroids.weight", { tensor: tensor === undefined ? "centroids.weight" : `${tensor}.centroids.weight` });
  const dtype = centroidArray.dtype as VptqFloat;
  if (dtype !== "F16" && dtype !== "BF16") throw new FormatError("PACKED_DTYPE_MISMATCH", "VPTQ codebooks are F16 or BF16", { file: centroidArray.file, tensor: centroidArray.name, byteOffset: centroidArray.byteOffset, expected: "F16 or BF16", actual: dtype });
  const specs = vptqArraySpecs(p, out, inFeatures, dtype);
  for (const [suffix, spec] of specs) {
    const array = arrays.get(suffix);
    if (array === undefined) throw new FormatError("TENSOR_MISSING", `VPTQ layer lacks ${suffix}`, { tensor: tensor === undefined ? suffix : `${tensor}.${suffix}` });
    expectArray(array, [spec.dtype], spec.shape);
  }
  const halves = (s: VptqSuffix) => (specs.has(s) ? viewAs(arrays.get(s)!.bytes, Uint16Array).slice() : undefined);
  const ib = indexBits(p.numCentroids);
  const rb = indexBits(p.numResCentroids);
  const tb = ib + rb;
  const indicesArray = arrays.get("indices")!;
  const words = viewAs(indicesArray.bytes, Uint32Array);
  const rows = p.groupNum * vectorRows(out, p.vectorLen);
  const rowWords = packedGroupWords(p.groupSize, p);
  const mainIndices = new Uint32Array(rows * p.groupSize);
  const resIndices = rb > 0 ? new Uint32Array(rows * p.groupSize) : undefined;
  for (let row = 0; row < rows; row++) {
    for (let e = 0; e < p.groupSize; e++) {
      const merged = readBits(words, row * rowWords, e * tb, tb);
      mainIndices[row * p.groupSize + e] = merged % 2 ** ib;
      if (resIndices !== undefined) resIndices[row * p.groupSize + e] = Math.floor(merged / 2 ** ib);
    }
    const usedBits = p.groupSize * tb;
    const tail = rowWords * 32 - usedBits;
    if (tail > 0 && readBits(words, row * rowWords, usedBits, tail) !== 0) {
      throw new FormatError("PACKED_VALUE_INVALID", `indices row ${row}: the ${tail} padding bits after the last index are not zero (index width or group size mismatch?)`, { file: indicesArray.file, tensor: indicesArray.name, byteOffset: (indicesArray.byteOffset ?? 0) + 4 * (row * rowWords + (usedBits >>> 5)) });
    }
  }
  const outlierIndices = halves("outlier_indices");
  if (outlierIndices !== undefined) {
    const bad = outlierIndices.findIndex((v) => v >= p.outlierNumCentroids);
    const a = arrays.get("outlier_indices")!;
    if (bad >= 0) throw new FormatError("PACKED_VALUE_INVALID", `outlier index ${outlierIndices[bad]} is past the outlier codebook (${p.outlierNumCentroids} centroids)`, { file: a.file, tensor: a.name, byteOffset: (a.byteOffset ?? 0) + 2 * bad, expected: `< ${p.outlierNumCentroids}`, actual: outlierIndices[bad] });
  }
  const perm = halves("perm");
  if (perm !== undefined) checkPermutation(perm, arrays.get("perm")!);
  return {
    params: p,
    outFeatures: out,
    inFeatures,
    dtype,
    centroids: halves("centroids.weight")!,
    resCentroids: halves("res_centroids.weight"),
    mainIndices,
    resIndices,
    outlierCentroids: halves("outlier_centroids.weight"),
    outlierIndices,
    perm,
    weightScale: halves("weight_scale"),
    weightBias: halves("weight_bias"),
  };
}

function checkPermutation(perm: Uint16Array, array: PackedArray): void {
  const seen = new Uint8Array(perm.length);
  for (let k = 0; k < perm.length; k++) {
    const v = perm[k]!;
    if (v >= perm.length || seen[v] === 1) {
      throw new FormatError("PACKED_VALUE_INVALID", `perm is not a permutation of 0…${perm.length - 1}: entry ${k} is ${v}${v < perm.length ? " again" : ""}`, { file: array.file, tensor: array.name, byteOffset: (array.byteOffset ?? 0) + 2 * k, expected: `a permutation of 0…${perm.length - 1}`, actual: v });
    }
    seen[v] = 1;
  }
}
