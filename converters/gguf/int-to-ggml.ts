import { f64ToF16Bit } from "../../formats/dense/float-bits.js";
import { F16_VALUE, writeF16 } from "../../formats/ggml/block-math.js";
import { isTrivialGIdx, type IntGroupTensor } from "../../formats/int-group/types.js";

/**
 * Integer group codes carried into ggml blocks without touching a float (issue 7 §3). Each
 * mapping is exact: the block decodes, in ggml's float32 arithmetic, to exactly the value the
 * integer layout's reference dequant gives. Proofs:
 *
 *  Q4_0  (bits 4, every zero 8, fp16 scales, group a multiple of 32, trivial g_idx):
 *        ggml: (q − 8)·d.  int-group: (code − 8)·scale.  With q = code and d = scale (an fp16
 *        value, so storing it is exact) the two are the same product of the same operands.
 *  Q8_0  (bits 8, every zero 128, fp16 scales, group a multiple of 32, trivial g_idx):
 *        ggml: qs·d with qs = code − 128 ∈ [−128, 127] (int8).  Same product as (code − 128)·scale.
 *  Q4_1  (bits 4, any zeros, fp16 scales, group a multiple of 32, trivial g_idx) when every
 *        m = −zero·scale is an fp16 value: ggml computes d·q + m in float32. d·q and m are exact
 *        (an fp16 times an integer below 2^5 needs at most 16 significant bits), and their sum
 *        s·(q − z) needs at most 16 bits too, so the one float32 rounding of the sum is exact:
 *        the result equals (code − zero)·scale bit for bit.
 * Anything else (3- or 2-bit codes, act-order, bf16/f32 scales, groups not a multiple of 32,
 * an m that fp16 cannot hold) has no exact ggml image and is requantized by the caller.
 */

export type ExactGgmlType = "Q4_0" | "Q8_0" | "Q4_1";

/** The exact ggml type for this tensor when `wanted` can hold it, else undefined (with why). */
export function exactGgmlType(t: IntGroupTensor, wanted: string): { type: ExactGgmlType | undefined; why: string } {
  const p = t.params;
  if (p.scaleDtype !== "F16") return { type: undefined, why: `${p.scaleDtype} scales (ggml blocks store fp16)` };
  if (p.groupSize % 32 !== 0 || t.inFeatures % 32 !== 0) return { type: undefined, why: `group size ${p.groupSize} is not a multiple of 32` };
  if (!isTrivialGIdx(t.gIdx, p.groupSize)) return { type: undefined, why: "act-order g_idx (a block's columns would need different scales)" };
  const allZeros = (z: number): boolean => t.zeros.every((v) => v === z);
  if (wanted === "Q4_0" && p.bits === 4 && allZeros(8)) return { type: "Q4_0", why: "" };
  if (wanted === "Q8_0" && p.bits === 8 && allZeros(128)) return { type: "Q8_0", why: "" };
  if (wanted === "Q4_1" && p.bits === 4 && minsAreHalf(t)) return { type: "Q4_1", why: "" };
  return { type: undefined, why: `${p.bits}-bit ${p.sym ? "sym" : "asym"} codes have no exact ${wanted} image` };
}

function minsAreHalf(t: IntGroupTensor): boolean {
  for (let i = 0; i < t.scales.length; i++) {
    const m = -t.zeros[i]! * t.scales[i]!;
    if (F16_VALUE[f64ToF16Bit(m)] !== m) return false;
  }
  return true;
}

/**
 * The blocks of `t` in `type`, rows in the order `rowOrder` gives (GGUF row r holds source row
 * rowOrder[r]; identity when undefined), each row inFeatures/32 blocks.
 */
export function intGroupToGgml(t: IntGroupTensor, type: ExactGgmlType, rowOrder?: (row: number) => number): Uint8Array {
  const K = t.inFeatures;
  const N = t.outFeatures;
  const blocksPerRow = K / 32;
  const typeSize = type === "Q4_0" ? 18 : type === "Q8_0" ? 34 : 20;
  const out = new Uint8Array(N * blocksPerRow * typeSize);
  for (let r = 0; r < N; r++) {
    const n = rowOrder === undefined ? r : rowOrder(r);
    for (let b = 0; b < blocksPerRow; b++) {
      const at = (r * blocksPerRow + b) * typeSize;
      const g = Math.floor((b * 32) / t.params.groupSize);
      const scale = t.scales[g * N + n]!;
      const codes = t.codes.subarray(n * K + b * 32, n * K + b * 32 + 32);
      writeF16(out, at, scale);
      if (type === "Q8_0") {
        for (let j = 0; j < 32; j++) out[at + 2 + j] = (codes[j]! - 128) & 0xff;
        continue;
      }
      let qs = at + 2;
      if (type === "Q4_1") {
        writeF16(out, at + 2, -t.zeros[g * N + n]! * scale);
        qs = at + 4;
      }
      // ggml's nibble order: element j in the low nibble of byte j, element j + 16 in its high nibble.
      for (let j = 0; j < 16; j++) out[qs + j] = codes[j]! | (codes[j + 16]! << 4);
    }
  }
  return out;
}
