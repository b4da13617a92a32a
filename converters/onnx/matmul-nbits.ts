import { ConversionError, FormatError } from "../../formats/errors.js";
import { groupCount, isTrivialGIdx, maxCode, symmetricZero, type IntGroupParams, type IntGroupTensor } from "../../formats/int-group/types.js";

/**
 * Integer groups ⇄ the initialisers of onnxruntime's `com.microsoft.MatMulNBits` (gguf-onnx.md
 * §3.1, checked against onnxruntime-node 1.30.0 by test/onnx/matmul-nbits.test.ts):
 *
 *   kb = ⌊k / block_size⌋, j = k mod block_size
 *   B           uint8 [N, k_blocks, block_size·bits/8]   q[n][k] = field j of B[n][kb], LSB-first
 *   scales      float [N, k_blocks]
 *   zero_points uint8 [N, ⌈k_blocks·bits/8⌉]            field kb of row n, LSB-first; absent ⇒ 2^(bits−1)
 *
 * (bits = the field width: the codes' own, or 4 for 3-bit codes, see matMulNBitsBitsFor)
 *   W[n][k] = (q[n][k] − zp[n][kb]) · scales[n][kb]
 *
 * which is the int-group formula with block_size = group size, q = code, zp = effective zero
 * and the same float32 scale: integers and scales move, no float is recomputed. The int-group
 * arrays are [group][N] (g·N + n); MatMulNBits's are [N][k_blocks], hence the transposes.
 *
 * K not a multiple of block_size: the last block of every row is padded to block_size fields
 * (onnxruntime reads only the first K; probed with K = 96, block 64). Padding holds the block's
 * zero point rather than 0, so that a reader that did include it would add (zp − zp)·s = 0.
 */

/** The code widths onnxruntime's CPU kernel runs (`Only 2b, 4b and 8b quantization is supported`). */
export type MatMulNBitsBits = 2 | 4 | 8;
/** MatMulNBits's own check: "block_size must be a power of 2, and >= 16". */
export const MIN_BLOCK_SIZE = 16;

export interface MatMulNBitsWeights {
  /** Input features. */
  K: number;
  /** Output features. */
  N: number;
  bits: MatMulNBitsBits;
  blockSize: number;
  /** uint8 [N, kBlocks, blobBytes]. */
  b: Uint8Array;
  /** float32 [N, kBlocks]. */
  scales: Float32Array;
  /** uint8 [N, zeroPointBytesPerRow], or undefined when every zero is 2^(bits−1). */
  zeroPoints: Uint8Array | undefined;
}

export interface MatMulNBitsGeometry {
  kBlocks: number;
  /** Bytes of one block of B: block_size·bits/8. */
  blobBytes: number;
  /** Bytes of one row of packed zero points: ⌈k_blocks·bits/8⌉. */
  zeroPointBytesPerRow: number;
}

export function matMulNBitsGeometry(K: number, bits: MatMulNBitsBits, blockSize: number): MatMulNBitsGeometry {
  const kBlocks = Math.ceil(K / blockSize);
  return { kBlocks, blobBytes: (blockSize * bits) / 8, zeroPointBytesPerRow: Math.ceil((kBlocks * bits) / 8) };
}

export function isPowerOfTwo(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

/**
 * The MatMulNBits field width that holds `t`'s codes exactly: its own for 2, 4 and 8 bits; 4 for
 * 3-bit codes, which onnxruntime cannot run as such (`Only 2b, 4b and 8b quantization is
 * supported`). A 3-bit code q and zero z are the same integers in 4-bit fields, and W = (q − z)·s
 * is unchanged: widening costs one bit per weight and loses nothing, where requantizing to 4 bits
 * would change every weight. ConversionError when the group layout has no MatMulNBits image.
 */
export function matMulNBitsBitsFor(t: IntGroupTensor, tensor: string): MatMulNBitsBits {
  const { bits, groupSize } = t.params;
  if (!isPowerOfTwo(groupSize) || groupSize < MIN_BLOCK_SIZE) {
    throw new ConversionError("UNSUPPORTED_TARGET", `group size ${groupSize}: MatMulNBits block_size must be a power of two ≥ ${MIN_BLOCK_SIZE}; requantize with such a group size`, { tensor, expected: `power of two ≥ ${MIN_BLOCK_SIZE}`, actual: groupSize });
  }
  if (!isTrivialGIdx(t.gIdx, groupSize)) {
    throw new ConversionError("UNSUPPORTED_TARGET", "act-order g_idx: reorder the columns into group order first (act-order.ts)", { tensor });
  }
  return bits === 3 ? 4 : bits;
}

/** `t` as MatMulNBits initialiser data. Throws ConversionError when it has no exact image. */
export function toMatMulNBits(t: IntGroupTensor, tensor: string): MatMulNBitsWeights {
  const bits = matMulNBitsBitsFor(t, tensor);
  checkArrays(t, tensor);
  // Codes and zeros are checked against the source width; the fields may be wider (3 → 4).
  const top = maxCode(t.params.bits);
  const { outFeatures: N, inFeatures: K } = t;
  const blockSize = t.params.groupSize;
  const { kBlocks, blobBytes, zeroPointBytesPerRow } = matMulNBitsGeometry(K, bits, blockSize);
  const b = new Uint8Array(N * kBlocks * blobBytes);
  const scales = new Float32Array(N * kBlocks);
  const defaultZero = symmetricZero(bits);
  const needZeroPoints = t.zeros.some((z) => z !== defaultZero);
  const zeroPoints = needZeroPoints ? new Uint8Array(N * zeroPointBytesPerRow) : undefined;
  for (let n = 0; n < N; n++) {
    for (let kb = 0; kb < kBlocks; kb++) {
      const zero = t.zeros[kb * N + n]!;
      if (zero > top) {
        // Only a GPTQ v1 file whose packer overflowed has one (types.ts); uint8 fields hold 0 … 2^bits − 1.
        throw new ConversionError("NOT_REPRESENTABLE", `zero point ${zero} of group ${kb}, row ${n} does not fit a ${t.params.bits}-bit zero point (0 … ${top}); requantize the layer`, { tensor, expected: `≤ ${top}`, actual: zero });
      }
      scales[n * kBlocks + kb] = t.scales[kb * N + n]!;
      if (zeroPoints !== undefined) writeField(zeroPoints, n * zeroPointBytesPerRow, kb, bits, zero);
      const blob = (n * kBlocks + kb) * blobBytes;
      for (let j = 0; j < blockSize; j++) {
        const k = kb * blockSize + j;
        const code = k < K ? t.codes[n * K + k]! : zero;
        if (code > top) throw new FormatError("PACKED_VALUE_INVALID", `code ${code} at row ${n}, column ${k} exceeds ${t.params.bits} bits`, { tensor, expected: `≤ ${top}`, actual: code });
        writeField(b, blob, j, bits, code);
      }
    }
  }
  return { K, N, bits, blockSize, b, scales, zeroPoints };
}

/**
 * MatMulNBits initialiser data → integer groups, exactly. `sym`, `scaleDtype` and `bits` (the
 * codes' own width, which may be narrower than the fields: 3 in 4) are what the exporter recorded;
 * MatMulNBits itself stores float32 scales, no sym flag and only its field width.
 */
export function fromMatMulNBits(w: MatMulNBitsWeights, recorded: Pick<IntGroupParams, "sym" | "scaleDtype" | "bits">, tensor: string, file?: string): IntGroupTensor {
  const { K, N, bits, blockSize } = w;
  const codeBits = recorded.bits;
  if (codeBits > bits || (codeBits !== bits && !(codeBits === 3 && bits === 4))) {
    throw new FormatError("METADATA_INVALID", `${codeBits}-bit codes recorded in ${bits}-bit MatMulNBits fields`, { file, tensor, expected: `${bits} (or 3 in 4-bit fields)`, actual: codeBits });
  }
  const top = maxCode(codeBits);
  const where = { file, tensor };
  const { kBlocks, blobBytes, zeroPointBytesPerRow } = matMulNBitsGeometry(K, bits, blockSize);
  const expectLength = (what: string, actual: number, expected: number): void => {
    if (actual !== expected) throw new FormatError("PACKED_SHAPE_MISMATCH", `MatMulNBits ${what} has the wrong size`, { ...where, expected, actual });
  };
  expectLength("B", w.b.length, N * kBlocks * blobBytes);
  expectLength("scales", w.scales.length, N * kBlocks);
  if (w.zeroPoints !== undefined) expectLength("zero_points", w.zeroPoints.length, N * zeroPointBytesPerRow);
  const codes = new Uint8Array(N * K);
  const scales = new Float32Array(kBlocks * N);
  const zeros = new Uint16Array(kBlocks * N);
  // An absent zero_points input means MatMulNBits's default for its field width.
  const absentZero = symmetricZero(bits);
  const symZero = symmetricZero(codeBits);
  for (let n = 0; n < N; n++) {
    for (let kb = 0; kb < kBlocks; kb++) {
      scales[kb * N + n] = w.scales[n * kBlocks + kb]!;
      const zero = w.zeroPoints === undefined ? absentZero : readField(w.zeroPoints, n * zeroPointBytesPerRow, kb, bits);
      if (recorded.sym && zero !== symZero) {
        throw new FormatError("PACKED_VALUE_INVALID", `layer recorded as symmetric has zero point ${zero} in group ${kb}, row ${n}`, { ...where, expected: symZero, actual: zero });
      }
      if (zero > top) throw new FormatError("PACKED_VALUE_INVALID", `zero point ${zero} in group ${kb}, row ${n} exceeds the recorded ${codeBits} bits`, { ...where, expected: `≤ ${top}`, actual: zero });
      zeros[kb * N + n] = zero;
      const blob = (n * kBlocks + kb) * blobBytes;
      const width = Math.min(blockSize, K - kb * blockSize);
      for (let j = 0; j < width; j++) {
        const code = readField(w.b, blob, j, bits);
        if (code > top) throw new FormatError("PACKED_VALUE_INVALID", `code ${code} at row ${n}, column ${kb * blockSize + j} exceeds the recorded ${codeBits} bits`, { ...where, expected: `≤ ${top}`, actual: code });
        codes[n * K + kb * blockSize + j] = code;
      }
    }
  }
  const params: IntGroupParams = { bits: codeBits, groupSize: blockSize, sym: recorded.sym, scaleDtype: recorded.scaleDtype };
  return { params, outFeatures: N, inFeatures: K, codes, scales, zeros, gIdx: undefined };
}

/** Field i of `bits` (2, 4 or 8: fields never straddle bytes) starting at byte `base`, LSB-first. */
function readField(bytes: Uint8Array, base: number, i: number, bits: number): number {
  const bit = i * bits;
  return (bytes[base + (bit >>> 3)]! >>> (bit & 7)) & ((1 << bits) - 1);
}

/** ORs `value` into field i (the bytes start zeroed). */
function writeField(bytes: Uint8Array, base: number, i: number, bits: number, value: number): void {
  const bit = i * bits;
  bytes[base + (bit >>> 3)]! |= value << (bit & 7);
}

function checkArrays(t: IntGroupTensor, tensor: string): void {
  const groups = groupCount(t.inFeatures, t.params.groupSize);
  const sizes: [string, number, number][] = [
    ["codes", t.codes.length, t.outFeatures * t.inFeatures],
    ["scales", t.scales.length, groups * t.outFeatures],
    ["zeros", t.zeros.length, groups * t.outFeatures],
  ];
  for (const [what, actual, expected] of sizes) {
    if (actual !== expected) throw new FormatError("PACKED_SHAPE_MISMATCH", `integer group ${what} have the wrong length`, { tensor, expected, actual });
  }
}

