import { FormatError } from "../errors.js";

/**
 * FP6-LLM's tensor-core "4+2" (FP5: "4+1") pre-packed weight layout, as torchao's
 * `pack_tc_floatx` / `unpack_tc_floatx` (pytorch/ao@aa252872, floatx_tensor_core_layout.py) and
 * usyd-fsalab/fp6_llm `weight_matrix_prepacking_x_bit` produce it (../shared/ref/signround-gptq-fp6.md B3).
 *
 * The buffer holds one region per set bit of nbits, in the order 1, 2, 4 bits; region y holds
 * the next y bits of every code, from the MSB down, as little-endian uint32 words. Inside a
 * region each (64-row slab a, 16-column tile f) is one contiguous chunk of 32·y words at word
 * (a·N/16 + f)·32·y, where the position of element (r, c) follows the mma.m16n8k16 A-fragment
 * lane order, lane-interleaved words, and a slot permutation inside each word. Since that
 * position inside a chunk depends only on (r mod 64, c mod 16), one table per (y, N) lists,
 * word by word, the elements each word takes and their bit shifts; packing is then a gather.
 */

/**
 * Rows and columns the layout needs (torchao asserts both). FP6-LLM's own CUDA kernel further
 * asks for out_features % 256 (its README); that is a kernel limit, not a layout one.
 */
export const TC_ROW_MULTIPLE = 64;
export const TC_COL_MULTIPLE = 64;

const SLAB_ROWS = 64;
const TILE_COLS = 16;
const LANES = 32;

/** torchao's undo tables: slot s of a word holds the field at bit 32 − y·(INV_y[s] + 1). */
const INV: Record<number, readonly number[]> = {
  1: [16, 0, 24, 8, 17, 1, 25, 9, 18, 2, 26, 10, 19, 3, 27, 11, 20, 4, 28, 12, 21, 5, 29, 13, 22, 6, 30, 14, 23, 7, 31, 15],
  2: [8, 0, 12, 4, 9, 1, 13, 5, 10, 2, 14, 6, 11, 3, 15, 7],
  4: [4, 0, 6, 2, 5, 1, 7, 3],
};

/** Whether an [M, N] matrix fits the layout. */
export function fitsTcLayout(M: number, N: number): boolean {
  return M > 0 && N > 0 && M % TC_ROW_MULTIPLE === 0 && N % TC_COL_MULTIPLE === 0;
}

/** Bytes of the packed form of an [M, N] matrix of nbits codes. */
export function tcPackedBytes(M: number, N: number, nbits: number): number {
  return (M * N * nbits) / 8;
}

/** Region widths for nbits, in buffer order. */
export function regionsOf(nbits: number): number[] {
  return [1, 2, 4].filter((y) => (nbits & y) !== 0);
}

export interface RegionTable {
  /** Per word of a chunk (32·y words), per slot (32/y): the element's offset from the chunk's first element. */
  offsets: Int32Array;
  /** Bit shift of each slot (same indexing). */
  shifts: Uint8Array;
}

const tables = new Map<string, RegionTable>();

/** Gather table of region y for row length N (cached: a model has a handful of widths). */
function regionTable(y: number, N: number): RegionTable {
  const key = `${y}:${N}`;
  const hit = tables.get(key);
  if (hit !== undefined) return hit;
  const perWord = 32 / y;
  const words = LANES * y;
  const offsets = new Int32Array(words * perWord);
  const shifts = new Uint8Array(words * perWord);
  const inv = INV[y]!;
  for (let r = 0; r < SLAB_ROWS; r++) {
    for (let c = 0; c < TILE_COLS; c++) {
      const k = (r >> 4) & 3, d = (r >> 3) & 1, e = r & 7;
      const g = (c >> 3) & 1, h = c & 7;
      const lane = e * 4 + (h >> 1);
      const p = (((k * 2 + g) * 2 + d) * 2) + (h & 1); // index in the lane's stream of this chunk
      const word = Math.floor(p / perWord) * LANES + lane;
      const slot = p % perWord;
      offsets[word * perWord + slot] = r * N + c;
      shifts[word * perWord + slot] = 32 - y * (inv[slot]! + 1);
    }
  }
  const table = { offsets, shifts };
  tables.set(key, table);
  return table;
}

/** The gather table of region y for one 16-column tile (offset = row·16 + column): the SIMD packer's source. */
export function regionTableForKernel(y: number): RegionTable {
  return regionTable(y, TILE_COLS);
}

function checkShape(M: number, N: number, nbits: number): void {
  if (!fitsTcLayout(M, N)) throw new FormatError("PACKED_SHAPE_MISMATCH", `the tensor-core FPx layout needs rows % ${TC_ROW_MULTIPLE} = 0 and columns % ${TC_COL_MULTIPLE} = 0`, { expected: `multiples of ${TC_ROW_MULTIPLE}x${TC_COL_MULTIPLE}`, actual: `${M}x${N}` });
  if (!Number.isInteger(nbits) || nbits < 2 || nbits > 7) throw new FormatError("PACKED_VALUE_INVALID", "the tensor-core FPx layout packs 2..7-bit codes", { expected: "2..7", actual: nbits });
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** Packs row-major codes [M, N] (low nbits of each byte) into the layout. */
export function packTc(codes: Uint8Array, M: number, N: number, nbits: number): Uint8Array {
  checkShape(M, N, nbits);
  if (codes.length !== M * N) throw new FormatError("PACKED_SHAPE_MISMATCH", "codes do not match the matrix shape", { expected: M * N, actual: codes.length });
  if (!LITTLE_ENDIAN) throw new FormatError("DTYPE_UNSUPPORTED", "the FPx packer assumes a little-endian host");
  let high = 0;
  for (let i = 0; i < codes.length; i++) high |= codes[i]!;
  if (high >> nbits !== 0) {
    const at = codes.findIndex((c) => c >> nbits !== 0);
    throw new FormatError("PACKED_VALUE_INVALID", `code wider than ${nbits} bits at row ${Math.floor(at / N)}, column ${at % N}`, { expected: `< ${1 << nbits}`, actual: codes[at] });
  }
  const out = new Uint8Array(tcPackedBytes(M, N, nbits));
  let regionByte = 0;
  let used = 0;
  const chunksPerSlab = N / TILE_COLS;
  for (const y of regionsOf(nbits)) {
    const region = new Uint32Array(out.buffer, regionByte, (M * N * y) / 32);
    const { offsets, shifts } = regionTable(y, N);
    const lowBit = nbits - used - y;
    const mask = (1 << y) - 1;
    const perWord = 32 / y;
    const wordsPerChunk = LANES * y;
    let wordAt = 0;
    for (let slab = 0; slab < M / SLAB_ROWS; slab++) {
      for (let tile = 0; tile < chunksPerSlab; tile++) {
        const base = slab * SLAB_ROWS * N + tile * TILE_COLS;
        for (let w = 0, t = 0; w < wordsPerChunk; w++) {
          let word = 0;
          for (let s = 0; s < perWord; s++, t++) word |= ((codes[base + offsets[t]!]! >>> lowBit) & mask) << shifts[t]!;
          region[wordAt++] = word;
        }
      }
    }
    regionByte += (M * N * y) / 8;
    used += y;
  }
  return out;
}

/** Unpacks the layout into row-major codes [M, N]; `into` (M·N bytes) is reused when given. */
export function unpackTc(packed: Uint8Array, M: number, N: number, nbits: number, into?: Uint8Array): Uint8Array {
  checkShape(M, N, nbits);
  if (packed.length !== tcPackedBytes(M, N, nbits)) throw new FormatError("PACKED_SHAPE_MISMATCH", "packed FPx buffer has the wrong size", { expected: tcPackedBytes(M, N, nbits), actual: packed.length });
  if (!LITTLE_ENDIAN) throw new FormatError("DTYPE_UNSUPPORTED", "the FPx unpacker assumes a little-endian host");
  const aligned = packed.byteOffset % 4 === 0 ? packed : packed.slice();
  const codes = into ?? new Uint8Array(M * N);
  codes.fill(0);
  let regionByte = aligned.byteOffset;
  let used = 0;
  const chunksPerSlab = N / TILE_COLS;
  for (const y of regionsOf(nbits)) {
    const region = new Uint32Array(aligned.buffer, regionByte, (M * N * y) / 32);
    const { offsets, shifts } = regionTable(y, N);
    const lowBit = nbits - used - y;
    const mask = (1 << y) - 1;
    const perWord = 32 / y;
    const wordsPerChunk = LANES * y;
    let wordAt = 0;
    for (let slab = 0; slab < M / SLAB_ROWS; slab++) {
      for (let tile = 0; tile < chunksPerSlab; tile++) {
        const base = slab * SLAB_ROWS * N + tile * TILE_COLS;
        for (let w = 0, t = 0; w < wordsPerChunk; w++) {
          const word = region[wordAt++]!;
          for (let s = 0; s < perWord; s++, t++) {
            const at = base + offsets[t]!;
            codes[at] = codes[at]! | (((word >>> shifts[t]!) & mask) << lowBit);
          }
        }
      }
    }
    regionByte += (M * N * y) / 8;
    used += y;
  }
  return codes;
}
