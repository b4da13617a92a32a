import { F16_VALUE } from "../../formats/ggml/block-math.js";
import type { IntGroupTensor } from "../../formats/int-group/types.js";

/**
 * The way back from int-to-ggml.ts: Q4_0, Q8_0 and Q4_1 blocks read as integer group codes, so
 * a GGUF made from a GPTQ/AWQ/AutoRound checkpoint converts back to those layouts code for code.
 * Every block holds 32 columns with its own scale. A file lmpack wrote from integer groups of
 * G columns records G (`lmpack.int_group.group_size`): the blocks are then read back as groups of
 * G, after checking that every block of a group carries the group's scale, so a GPTQ g128
 * export comes back as g128, not g32. Proofs of exactness: int-to-ggml.ts.
 */

export type IntGgmlType = "Q4_0" | "Q8_0" | "Q4_1";

/** Metadata key (UINT32): the integer group size the file's Q4_0/Q8_0 codes came from. */
export const INT_GROUP_SIZE_KEY = "lmpack.int_group.group_size";

const TYPE_SIZE: Record<IntGgmlType, number> = { Q4_0: 18, Q8_0: 34, Q4_1: 20 };

/**
 * Integer codes of a [rows][cols] tensor stored as `type` blocks (GGUF row r at rowOrder(r) in
 * the result; identity when undefined), or undefined when a Q4_1 block's min is not −zero·scale
 * for an integer zero, or when the blocks of a `groupSize` group disagree.
 */
export function ggmlToIntGroup(type: IntGgmlType, bytes: Uint8Array, rows: number, cols: number, rowOrder?: (ggufRow: number) => number, groupSize = 32): IntGroupTensor | undefined {
  const blocksPerRow = cols / 32;
  const typeSize = TYPE_SIZE[type];
  const codes = new Uint8Array(rows * cols);
  const blockScales = new Float32Array(rows * blocksPerRow);
  const blockZeros = new Uint16Array(rows * blocksPerRow);
  for (let r = 0; r < rows; r++) {
    const n = rowOrder === undefined ? r : rowOrder(r);
    for (let b = 0; b < blocksPerRow; b++) {
      const at = (r * blocksPerRow + b) * typeSize;
      const d = F16_VALUE[bytes[at]! | (bytes[at + 1]! << 8)]!;
      const out = n * cols + b * 32;
      blockScales[n * blocksPerRow + b] = d;
      if (type === "Q8_0") {
        for (let j = 0; j < 32; j++) codes[out + j] = ((bytes[at + 2 + j]! << 24) >> 24) + 128;
        blockZeros[n * blocksPerRow + b] = 128;
        continue;
      }
      let qs = at + 2;
      let zero = 8;
      if (type === "Q4_1") {
        const m = F16_VALUE[bytes[at + 2]! | (bytes[at + 3]! << 8)]!;
        // m = −zero·d with an integer zero in 0 … 16, checked exactly (both are fp16 values).
        zero = d === 0 ? (m === 0 ? 0 : NaN) : -m / d;
        if (!(Number.isInteger(zero) && zero >= 0 && zero <= 16 && -zero * d === m)) return undefined;
        qs = at + 4;
      }
      blockZeros[n * blocksPerRow + b] = zero;
      for (let j = 0; j < 16; j++) {
        codes[out + j] = bytes[qs + j]! & 0x0f;
        codes[out + j + 16] = bytes[qs + j]! >> 4;
      }
    }
  }
  const blocksPerGroup = groupSize / 32;
  if (!uniformGroups(blockScales, blockZeros, rows, blocksPerRow, blocksPerGroup)) return undefined;
  const groups = blocksPerRow / blocksPerGroup;
  const scales = new Float32Array(groups * rows);
  const zeros = new Uint16Array(groups * rows);
  for (let n = 0; n < rows; n++) {
    for (let g = 0; g < groups; g++) {
      scales[g * rows + n] = blockScales[n * blocksPerRow + g * blocksPerGroup]!;
      zeros[g * rows + n] = blockZeros[n * blocksPerRow + g * blocksPerGroup]!;
    }
  }
  const bits = type === "Q8_0" ? 8 : 4;
  const sym = zeros.every((z) => z === (type === "Q8_0" ? 128 : 8));
  return { params: { bits, groupSize: blocksPerGroup * 32, sym, scaleDtype: "F16" }, outFeatures: rows, inFeatures: cols, codes, scales, zeros, gIdx: undefined };
}

/** Whether every run of `size` consecutive blocks shares scale and zero on every row. */
function uniformGroups(scales: Float32Array, zeros: Uint16Array, rows: number, blocksPerRow: number, size: number): boolean {
  if (!Number.isInteger(size) || size < 1 || blocksPerRow % size !== 0) return false;
  for (let n = 0; n < rows; n++) {
    for (let b = 0; b < blocksPerRow; b++) {
      const first = n * blocksPerRow + b - (b % size);
      // Object.is: a −0 scale and a +0 scale are different fp16 values.
      if (!Object.is(scales[n * blocksPerRow + b], scales[first]) || zeros[n * blocksPerRow + b] !== zeros[first]) return false;
    }
  }
  return true;
}
