import { ConversionError, FormatError, UsageError } from "../errors.js";
import { expectArray, viewAs, type PackedArray } from "../packed-array.js";
import { firstOrderGroups, SPQR_DEFAULTS, type SpqrOutliers, type SpqrParams, type SpqrTensor } from "./types.js";

/**
 * SpQR's Hugging Face layout (Vahe1994/SpQR inference_lib `QuantizedLinear`, written by
 * spqr_cuda.cpp `tensor_compress_interleaved`; ../shared/ref/vptq-spqr.md 2.3–2.5):
 *
 *   dense_weights I64 [(m/16)·(n/16)·16]   one 64-bit word per (tile, tile row k), tiles row-major
 *       bits 0–2 scale code, 3–5 zero code, 6+3l … 8+3l weight code l (l = 0…15),
 *       54–61 byte k>>1 of the tile's second-order word SO = s_s | z_s<<16 | s_z<<32 | z_z<<48
 *   row_offsets   I32 [m+1] (CSR) or [m/16+1] (PTCSR: the length alone says which)
 *   col_vals      I32 [nnz or padded]  fp16 bits << 16 | permuted column (int16); an empty
 *                 CSR list may be F32 [0] (the packer's torch.zeros(0))
 *   in_perm       I32 [n/2]  uint16 pairs perm[2t] | perm[2t+1] << 16
 *
 * Words are handled as (low, high) uint32 halves: no BigInt in the loops.
 */
export interface SpqrHfArrays {
  denseWeights: PackedArray;
  rowOffsets: PackedArray;
  colVals: PackedArray;
  inPerm: PackedArray;
}

export interface SpqrHfBytes {
  denseWeights: Uint8Array;
  rowOffsets: Uint8Array;
  colVals: Uint8Array;
  inPerm: Uint8Array;
}

const TILE = 16;
const CODE_BITS = 3;

/** The layout holds exactly 3-bit codes in 16×16 tiles. */
export function checkHfSpqrParams(params: SpqrParams, m: number, n: number, tensor?: string): void {
  if (params.bits !== SPQR_DEFAULTS.bits || params.beta1 !== TILE || params.beta2 !== TILE) {
    throw new UsageError("BAD_ARGUMENT", `the SpQR HF layout holds 3-bit codes in 16x16 tiles only (bits ${params.bits}, beta1 ${params.beta1}, beta2 ${params.beta2})`, { tensor });
  }
  if (m % TILE !== 0 || n % TILE !== 0 || n > 65536 || m < TILE || n < TILE) {
    throw new UsageError("BAD_ARGUMENT", "SpQR layers need in and out features that are multiples of 16, in_features ≤ 65536", { tensor, actual: `${m}x${n}` });
  }
}

/** Element counts of the four arrays (the config's `shapes` values). */
export function hfSpqrShapes(m: number, n: number, nnz: number, storage: "csr" | "ptcsr", outliers?: SpqrOutliers): { denseWeights: number; rowOffsets: number; colVals: number; inPerm: number } {
  const colVals = storage === "csr" ? nnz : ptcsrLength(outliers!, m);
  return { denseWeights: (m / TILE) * (n / TILE) * TILE, rowOffsets: storage === "csr" ? m + 1 : m / TILE + 1, colVals, inPerm: n / 2 };
}

function ptcsrLength(outliers: SpqrOutliers, m: number): number {
  let total = 0;
  for (let block = 0; block < m / TILE; block++) total += TILE * blockWidth(outliers, block);
  return total;
}

/** Most outliers in any row of a 16-row block. */
function blockWidth(outliers: SpqrOutliers, block: number): number {
  let width = 0;
  for (let j = 0; j < TILE; j++) {
    const r = block * TILE + j;
    width = Math.max(width, outliers.rowOffsets[r + 1]! - outliers.rowOffsets[r]!);
  }
  return width;
}

/** Packs the representation into the HF arrays (bytes, little-endian). */
export function packHfSpqr(t: SpqrTensor, tensor?: string): SpqrHfBytes {
  const m = t.outFeatures;
  const n = t.inFeatures;
  checkHfSpqrParams(t.params, m, n, tensor);
  const tilesAcross = n / TILE;
  const rowTiles = m / TILE;
  const words = new Uint32Array(rowTiles * tilesAcross * TILE * 2);
  for (let ti = 0; ti < rowTiles; ti++) {
    for (let tj = 0; tj < tilesAcross; tj++) {
      const stat = tj * rowTiles + ti;
      const so = [t.scaleScale[stat]!, t.zeroScale[stat]!, t.scaleZero[stat]!, t.zeroZero[stat]!];
      for (let k = 0; k < TILE; k++) {
        const r = ti * TILE + k;
        const at = ((ti * tilesAcross + tj) * TILE + k) * 2;
        let low = (t.scaleCodes[tj * m + r]! & 7) | ((t.zeroCodes[tj * m + r]! & 7) << 3);
        let high = 0;
        for (let l = 0; l < TILE; l++) {
          const code = t.codes[r * n + tj * TILE + l]! & 7;
          const bit = 6 + CODE_BITS * l;
          if (bit + CODE_BITS <= 32) low |= code << bit;
          else if (bit >= 32) high |= code << (bit - 32);
          else {
            low |= code << bit;
            high |= code >>> (32 - bit);
          }
        }
        const byte = (so[k >> 2]! >>> (8 * ((k >> 1) & 1))) & 0xff;
        high |= byte << 22; // bits 54–61
        words[at] = low >>> 0;
        words[at + 1] = high >>> 0;
      }
    }
  }
  // The kernels read an outlier's column as a signed short.
  const wide = t.outliers.cols.findIndex((c) => c >= 32768);
  if (wide >= 0) throw new ConversionError("NOT_REPRESENTABLE", `outlier at permuted column ${t.outliers.cols[wide]}: the SpQR layout stores columns as int16 (< 32768)`, { tensor, expected: "< 32768", actual: t.outliers.cols[wide] });
  const storage = t.outlierStorage ?? "csr";
  const { rowOffsets, colVals } = storage === "csr" ? csrArrays(t.outliers) : ptcsrArrays(t.outliers, m);
  const inPerm = new Uint32Array(n / 2);
  for (let i = 0; i < n / 2; i++) inPerm[i] = (t.perm[2 * i]! | (t.perm[2 * i + 1]! << 16)) >>> 0;
  return { denseWeights: bytes(words), rowOffsets: bytes(rowOffsets), colVals: bytes(colVals), inPerm: bytes(inPerm) };
}

function bytes(a: Uint32Array | Int32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

const colVal = (outliers: SpqrOutliers, i: number) => ((outliers.values[i]! << 16) | outliers.cols[i]!) >>> 0;

function csrArrays(outliers: SpqrOutliers): { rowOffsets: Int32Array; colVals: Uint32Array } {
  const colVals = new Uint32Array(outliers.cols.length);
  for (let i = 0; i < colVals.length; i++) colVals[i] = colVal(outliers, i);
  return { rowOffsets: outliers.rowOffsets.slice(), colVals };
}

function ptcsrArrays(outliers: SpqrOutliers, m: number): { rowOffsets: Int32Array; colVals: Uint32Array } {
  const rowOffsets = new Int32Array(m / TILE + 1);
  const colVals = new Uint32Array(ptcsrLength(outliers, m));
  for (let block = 0; block < m / TILE; block++) {
    const base = rowOffsets[block]!;
    for (let j = 0; j < TILE; j++) {
      const r = block * TILE + j;
      for (let i = outliers.rowOffsets[r]!, slot = 0; i < outliers.rowOffsets[r + 1]!; i++, slot++) colVals[base + TILE * slot + j] = colVal(outliers, i);
    }
    rowOffsets[block + 1] = base + TILE * blockWidth(outliers, block);
  }
  return { rowOffsets, colVals };
}

/**
 * Unpacks the HF arrays of an [m, n] layer, validating everything a hostile file could get
 * wrong (word counts, offsets, columns, the permutation, the duplicated second-order bytes)
 * before any index is used: every error names the tensor and the byte offset.
 */
export function unpackHfSpqr(a: SpqrHfArrays, m: number, n: number): SpqrTensor {
  const params = SPQR_DEFAULTS;
  const rowTiles = m / TILE;
  const tilesAcross = n / TILE;
  expectArray(a.denseWeights, ["I64", "U64"], [rowTiles * tilesAcross * TILE]);
  expectArray(a.inPerm, ["I32"], [n / 2]);
  const words = viewAs(a.denseWeights.bytes, Uint32Array);
  const G = firstOrderGroups({ inFeatures: n, params });
  const codes = new Uint8Array(m * n);
  const scaleCodes = new Uint8Array(G * m);
  const zeroCodes = new Uint8Array(G * m);
  const stats = [new Uint16Array(G * rowTiles), new Uint16Array(G * rowTiles), new Uint16Array(G * rowTiles), new Uint16Array(G * rowTiles)] as const;
  for (let ti = 0; ti < rowTiles; ti++) {
    for (let tj = 0; tj < tilesAcross; tj++) {
      const stat = tj * rowTiles + ti;
      for (let k = 0; k < TILE; k++) {
        const r = ti * TILE + k;
        const word = (ti * tilesAcross + tj) * TILE + k;
        const low = words[2 * word]!;
        const high = words[2 * word + 1]!;
        scaleCodes[tj * m + r] = low & 7;
        zeroCodes[tj * m + r] = (low >>> 3) & 7;
        for (let l = 0; l < TILE; l++) {
          const bit = 6 + CODE_BITS * l;
          const code = bit + CODE_BITS <= 32 ? low >>> bit : bit >= 32 ? high >>> (bit - 32) : (low >>> bit) | (high << (32 - bit));
          codes[r * n + tj * TILE + l] = code & 7;
        }
        const byte = (high >>> 22) & 0xff;
        const field = stats[k >> 2]!;
        const shift = 8 * ((k >> 1) & 1);
        if ((k & 1) === 0) field[stat] = field[stat]! | (byte << shift);
        else if (((field[stat]! >>> shift) & 0xff) !== byte) {
          throw new FormatError("PACKED_VALUE_INVALID", `tile (${ti}, ${tj}): rows ${k - 1} and ${k} carry different second-order bytes`, { file: a.denseWeights.file, tensor: a.denseWeights.name, byteOffset: (a.denseWeights.byteOffset ?? 0) + word * 8, expected: ((field[stat]! >>> shift) & 0xff).toString(16), actual: byte.toString(16) });
        }
      }
    }
  }
  const perm = decodeInPerm(a.inPerm, n);
  const { outliers, storage } = decodeOutliers(a.rowOffsets, a.colVals, m, n);
  return { params, outFeatures: m, inFeatures: n, perm, codes, scaleCodes, zeroCodes, scaleScale: stats[0], zeroScale: stats[1], scaleZero: stats[2], zeroZero: stats[3], outliers, outlierStorage: storage };
}

function decodeInPerm(array: PackedArray, n: number): Uint16Array {
  const pairs = viewAs(array.bytes, Uint32Array);
  const perm = new Uint16Array(n);
  const seen = new Uint8Array(n);
  for (let j = 0; j < n; j++) {
    const value = j % 2 === 0 ? pairs[j >> 1]! & 0xffff : pairs[j >> 1]! >>> 16;
    if (value >= n || seen[value] === 1) {
      throw new FormatError("PACKED_VALUE_INVALID", `in_perm is not a permutation of 0…${n - 1}: entry ${j} is ${value}${value < n ? " again" : ""}`, { file: array.file, tensor: array.name, byteOffset: (array.byteOffset ?? 0) + 2 * j, expected: `a permutation of 0…${n - 1}`, actual: value });
    }
    seen[value] = 1;
    perm[j] = value;
  }
  return perm;
}

function decodeOutliers(rowOffsetsArray: PackedArray, colValsArray: PackedArray, m: number, n: number): { outliers: SpqrOutliers; storage: "csr" | "ptcsr" } {
  const where = (array: PackedArray, index: number, bytesPer = 4) => ({ file: array.file, tensor: array.name, byteOffset: (array.byteOffset ?? 0) + index * bytesPer });
  if (rowOffsetsArray.dtype !== "I32" || rowOffsetsArray.shape.length !== 1) throw new FormatError("PACKED_DTYPE_MISMATCH", "row_offsets must be I32 [m+1] or [m/16+1]", { ...where(rowOffsetsArray, 0), expected: "I32", actual: `${rowOffsetsArray.dtype} [${rowOffsetsArray.shape.join(", ")}]` });
  const length = rowOffsetsArray.shape[0]!;
  if (length !== m + 1 && length !== m / TILE + 1) throw new FormatError("PACKED_SHAPE_MISMATCH", "row_offsets length is neither m+1 (CSR) nor m/16+1 (PTCSR)", { ...where(rowOffsetsArray, 0), expected: `${m + 1} or ${m / TILE + 1}`, actual: length });
  const storage = length === m + 1 ? "csr" : "ptcsr";
  const emptyF32 = colValsArray.dtype === "F32" && colValsArray.shape.length === 1 && colValsArray.shape[0] === 0;
  if (!emptyF32 && (colValsArray.dtype !== "I32" || colValsArray.shape.length !== 1)) throw new FormatError("PACKED_DTYPE_MISMATCH", "col_vals must be I32 [entries]", { ...where(colValsArray, 0), expected: "I32", actual: `${colValsArray.dtype} [${colValsArray.shape.join(", ")}]` });
  const offsets = viewAs(rowOffsetsArray.bytes, Int32Array);
  const entries = emptyF32 ? new Uint32Array(0) : viewAs(colValsArray.bytes, Uint32Array);
  if (offsets[0] !== 0) throw new FormatError("PACKED_VALUE_INVALID", "row_offsets must start at 0", { ...where(rowOffsetsArray, 0), expected: 0, actual: offsets[0] });
  for (let i = 1; i < length; i++) {
    const step = offsets[i]! - offsets[i - 1]!;
    if (step < 0) throw new FormatError("PACKED_VALUE_INVALID", "row_offsets decreases", { ...where(rowOffsetsArray, i), expected: `≥ ${offsets[i - 1]}`, actual: offsets[i] });
    if (storage === "ptcsr" && step % TILE !== 0) throw new FormatError("PACKED_VALUE_INVALID", "PTCSR block sizes must be multiples of 16", { ...where(rowOffsetsArray, i), expected: `${offsets[i - 1]} + a multiple of 16`, actual: offsets[i] });
  }
  if (offsets[length - 1] !== entries.length) throw new FormatError("PACKED_SHAPE_MISMATCH", "the last row offset must equal the number of col_vals", { ...where(rowOffsetsArray, length - 1), expected: entries.length, actual: offsets[length - 1] });
  const rowOffsets = new Int32Array(m + 1);
  const order: number[] = []; // entry index of each outlier, grouped by row
  if (storage === "csr") {
    for (let r = 0; r < m; r++) {
      for (let i = offsets[r]!; i < offsets[r + 1]!; i++) order.push(i);
      rowOffsets[r + 1] = order.length;
    }
  } else {
    for (let block = 0; block < m / TILE; block++) {
      const width = (offsets[block + 1]! - offsets[block]!) / TILE;
      for (let j = 0; j < TILE; j++) {
        // A row's list ends at its first zero word (the kernel's terminator); the rest must be padding.
        let ended = false;
        for (let slot = 0; slot < width; slot++) {
          const i = offsets[block]! + TILE * slot + j;
          if (entries[i] === 0) ended = true;
          else if (ended) throw new FormatError("PACKED_VALUE_INVALID", "PTCSR entry after its row's terminating zero", { ...where(colValsArray, i), expected: 0, actual: entries[i] });
          else order.push(i);
        }
        rowOffsets[block * TILE + j + 1] = order.length;
      }
    }
  }
  const cols = new Uint16Array(order.length);
  const values = new Uint16Array(order.length);
  for (let k = 0; k < order.length; k++) {
    const entry = entries[order[k]!]!;
    const col = entry & 0xffff;
    // The kernel reads the column as a signed short: 32768 and above are negative there.
    if (col >= n || col >= 32768) throw new FormatError("PACKED_VALUE_INVALID", `outlier column ${col} is outside 0…${Math.min(n, 32768) - 1}`, { ...where(colValsArray, order[k]!), expected: `< ${Math.min(n, 32768)}`, actual: col });
    cols[k] = col;
    values[k] = entry >>> 16;
  }
  return { outliers: { rowOffsets, cols, values }, storage };
}
