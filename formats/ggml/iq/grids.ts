/**
 * The i-quant lookup tables, decoded once at module load from the hex data in grid-data.ts into
 * ggml's own byte layout: entry i of a grid occupies [i·width, (i+1)·width), and byte k there is
 * byte k of ggml's little-endian u64 (u32 for the IQ3 grids) entry i in ggml/src/ggml-common.h.
 * The iq1s_grid bytes are int8 (−1, 0, +1), the others small positive magnitudes, so every table
 * is an Int8Array.
 *
 * Decoding checks the data against the table sizes of ggml-common.h (../shared/ref/gguf-onnx.md
 * §1.3, "Grid-table sizes") and refuses any code outside a grid's level map, so a damaged data
 * file fails at import rather than decoding garbage. Each grid has exactly 2^indexBits entries,
 * and the codecs mask every index to those bits: no index read from a file can leave a table.
 */
import {
  IQ1S_GRID_HEX,
  IQ2S_GRID_HEX,
  IQ2XS_GRID_HEX,
  IQ2XXS_GRID_HEX,
  IQ3S_GRID_HEX,
  IQ3XXS_GRID_HEX,
  KSIGNS_IQ2XS_HEX,
} from "./grid-data.js";

/** How one hex string packs a grid (gguf-py's `grid_shape`, `grid_map` and slot width). */
interface GridSpec {
  /** ggml-common.h's name for the table. */
  readonly name: string;
  /** Entry count, as ggml-common.h declares the table. */
  readonly entries: number;
  readonly hex: string;
  /** Width of the index a block stores; the table must have exactly 2^indexBits entries. */
  readonly indexBits: number;
  /** Bytes per entry: 8 for a u64 table, 4 for a u32 table. */
  readonly width: number;
  /** Bits per packed code: 2 (three levels) or 4 (eight levels, top bit always clear). */
  readonly slotBits: 2 | 4;
  /** Code → byte value (gguf-py's `grid_map`). */
  readonly levels: readonly number[];
}

/** The three magnitudes of the IQ2 grids. */
const IQ2_LEVELS = [0x08, 0x19, 0x2b];

/** Grid index widths, each fixed by the block layout that stores the index (see the codecs). */
export const IQ2XXS_INDEX_BITS = 8;
export const IQ2XS_INDEX_BITS = 9;
export const IQ2S_INDEX_BITS = 10;
export const IQ3XXS_INDEX_BITS = 8;
export const IQ3S_INDEX_BITS = 9;
/** NGRID_IQ1S = 2048. */
export const IQ1S_INDEX_BITS = 11;

function decodeGrid(spec: GridSpec): Int8Array {
  if (spec.entries !== 1 << spec.indexBits) {
    throw new Error(`${spec.name}: ${spec.entries} entries cannot be indexed by exactly ${spec.indexBits} bits`);
  }
  const values = spec.entries * spec.width;
  const slotsPerByte = 8 / spec.slotBits;
  const slotMask = (1 << spec.slotBits) - 1;
  if (!/^[0-9a-f]*$/.test(spec.hex) || spec.hex.length !== (values / slotsPerByte) * 2) {
    throw new Error(`${spec.name}: grid data is not ${spec.entries} entries of ${spec.width} bytes in hex (${spec.hex.length} characters)`);
  }
  const table = new Int8Array(values);
  for (let i = 0; i < values / slotsPerByte; i++) {
    const byte = Number.parseInt(spec.hex.slice(2 * i, 2 * i + 2), 16);
    for (let s = 0; s < slotsPerByte; s++) {
      const code = (byte >> (s * spec.slotBits)) & slotMask;
      const level = spec.levels[code];
      if (level === undefined) throw new Error(`${spec.name}: grid data holds code ${code} at value ${i * slotsPerByte + s}, outside its ${spec.levels.length} levels`);
      table[i * slotsPerByte + s] = level;
    }
  }
  return table;
}

/** iq2xxs_grid: 256 × 8 magnitudes in {8, 25, 43}. */
export const IQ2XXS_GRID = decodeGrid({
  name: "iq2xxs_grid",
  entries: 256,
  hex: IQ2XXS_GRID_HEX,
  indexBits: IQ2XXS_INDEX_BITS,
  width: 8,
  slotBits: 2,
  levels: IQ2_LEVELS,
});
/** iq2xs_grid: 512 × 8 magnitudes in {8, 25, 43}. */
export const IQ2XS_GRID = decodeGrid({
  name: "iq2xs_grid",
  entries: 512,
  hex: IQ2XS_GRID_HEX,
  indexBits: IQ2XS_INDEX_BITS,
  width: 8,
  slotBits: 2,
  levels: IQ2_LEVELS,
});
/** iq2s_grid: 1024 × 8 magnitudes in {8, 25, 43}. */
export const IQ2S_GRID = decodeGrid({
  name: "iq2s_grid",
  entries: 1024,
  hex: IQ2S_GRID_HEX,
  indexBits: IQ2S_INDEX_BITS,
  width: 8,
  slotBits: 2,
  levels: IQ2_LEVELS,
});
/** iq3xxs_grid: 256 × 4 magnitudes in {4, 12, ..., 52, 62}. */
export const IQ3XXS_GRID = decodeGrid({
  name: "iq3xxs_grid",
  entries: 256,
  hex: IQ3XXS_GRID_HEX,
  indexBits: IQ3XXS_INDEX_BITS,
  width: 4,
  slotBits: 4,
  levels: [0x04, 0x0c, 0x14, 0x1c, 0x24, 0x2c, 0x34, 0x3e],
});
/** iq3s_grid: 512 × 4 magnitudes in {1, 3, ..., 15}. */
export const IQ3S_GRID = decodeGrid({
  name: "iq3s_grid",
  entries: 512,
  hex: IQ3S_GRID_HEX,
  indexBits: IQ3S_INDEX_BITS,
  width: 4,
  slotBits: 4,
  levels: [0x01, 0x03, 0x05, 0x07, 0x09, 0x0b, 0x0d, 0x0f],
});
/** iq1s_grid: 2048 × 8 values in {−1, 0, +1}, shared by IQ1_S and IQ1_M. */
export const IQ1S_GRID = decodeGrid({
  name: "iq1s_grid",
  entries: 2048,
  hex: IQ1S_GRID_HEX,
  indexBits: IQ1S_INDEX_BITS,
  width: 8,
  slotBits: 2,
  levels: [-1, 0, 1],
});

/**
 * ksigns_iq2xs: 128 eight-bit sign masks indexed by a 7-bit field; bit 7 is the parity of bits
 * 0..6, so every mask flips an even number of the eight signs. Checked entry by entry, which
 * also pins the table to exactly 128 entries.
 */
export const KSIGNS_IQ2XS: Uint8Array = (() => {
  const hex = KSIGNS_IQ2XS_HEX;
  if (!/^[0-9a-f]{256}$/.test(hex)) throw new Error(`ksigns_iq2xs: data is not 128 bytes in hex (${hex.length} characters)`);
  const table = new Uint8Array(128);
  for (let i = 0; i < 128; i++) {
    const mask = Number.parseInt(hex.slice(2 * i, 2 * i + 2), 16);
    let parity = 0;
    for (let b = 0; b < 7; b++) parity ^= (i >> b) & 1;
    if (mask !== (i | (parity << 7))) throw new Error(`ksigns_iq2xs: entry ${i} is ${mask}, not ${i} with its parity bit`);
    table[i] = mask;
  }
  return table;
})();
