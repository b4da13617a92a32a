import { checkHfSpqrParams, packHfSpqr } from "../../formats/spqr/hf-layout.js";
import type { SpqrTensor } from "../../formats/spqr/types.js";
import type { DequantWeight } from "./dequant-layer.js";
import { addCast, addConstant, addDisjointOr, addInitializer, addInversePermutation, addLowBits, addNode, addReshape, addRoundTo16, addSlice, intAttribute, intsAttribute, stringAttribute, type GraphParts } from "./model.js";

/**
 * A SpQR layer's dequantization as standard ONNX ops (opset 17), computing the weight of
 * formats/spqr/reference.ts (SpQR's host `dequantize_compressed`) bit for bit. The
 * initialisers are the four arrays of the HF layout (hf-layout.ts) as stored, reinterpreted
 * only in element type: dense_weights (uint64), row_offsets (int32), col_vals (uint32),
 * in_perm (its uint16 pairs as uint16 [n]). Everything else happens in the graph:
 *
 *   word (tile ti, tj; row k)  → scale code bits 0–2, zero code bits 3–5, weight code l at
 *                                6 + 3l, byte k>>1 of the tile's second-order word at 54–61
 *   second-order stats         the even rows' bytes, paired into fp16 bit patterns and decoded
 *                                arithmetically (no bit-cast op in opset 17: see f16FromBits)
 *   s = h(s_s · h(qs − s_z)),  z = h(z_s · h(qz − z_z)),  Wp = h(s · h(q − z))
 *   outliers                   Wp[r][c] += f32(v), a ScatterElements "add" in float32; each
 *                                entry's row comes from row_offsets by a prefix count
 *   W = h(Wp), then W[:, perm[j]] = Wp[:, j]  (a Gather with the inverse, computed in the graph)
 *
 * h() is the reference's fp16 step: a float32 operation, then one round to fp16. onnxruntime
 * computes the same float32 operation and Cast rounds to nearest even, so every step matches.
 * PTCSR padding entries are scattered too: each is the word 0 (+0 at column 0 of its row),
 * which is exactly the host reference's quirk (a dense −0 there becomes +0).
 */

const TILE = 16;
const DIRECTION = { right: stringAttribute("direction", "RIGHT"), left: stringAttribute("direction", "LEFT") } as const;

export function spqrDequantSubgraph(g: GraphParts, t: SpqrTensor): DequantWeight {
  const m = t.outFeatures;
  const n = t.inFeatures;
  checkHfSpqrParams(t.params, m, n);
  const stored = packHfSpqr(t);
  const storedBytes = stored.denseWeights.length + stored.rowOffsets.length + stored.colVals.length + stored.inPerm.length;
  const [rowTiles, colTiles] = [m / TILE, n / TILE];
  const u64 = (value: number) => addConstant(g, "U64", [], [value]);
  const bits = (x: string, shift: number, width: number) => addLowBits(g, shift === 0 ? x : addNode(g, "BitShift", [x, u64(shift)], [DIRECTION.right]), width, "U64");
  const round = (x: string) => addRoundTo16(g, x, "F16");
  const op = (type: string, a: string, b: string) => addNode(g, type, [a, b]);

  // [tile row, tile column, row in tile, 1]: one word per row of a 16×16 tile.
  const words = addInitializer(g, "dense_weights", "U64", [rowTiles, colTiles, TILE, 1], stored.denseWeights);
  const codeShifts = addConstant(g, "U64", [TILE], Array.from({ length: TILE }, (_, l) => 6 + 3 * l));
  const codes = addCast(g, addLowBits(g, addNode(g, "BitShift", [words, codeShifts], [DIRECTION.right]), 3, "U64"), "F32");
  const [scaleScale, zeroScale, scaleZero, zeroZero] = secondOrderStats(g, words, bits);
  const scale = round(op("Mul", scaleScale, round(op("Sub", addCast(g, bits(words, 0, 3), "F32"), scaleZero))));
  const zero = round(op("Mul", zeroScale, round(op("Sub", addCast(g, bits(words, 3, 3), "F32"), zeroZero))));
  const dense = round(op("Mul", scale, round(op("Sub", codes, zero)))); // [ti, tj, k, l]
  let permuted = addReshape(g, addNode(g, "Transpose", [dense], [intsAttribute("perm", [0, 2, 1, 3])]), [m, n]);

  const entries = stored.colVals.length / 4;
  if (entries > 0) permuted = addOutliers(g, permuted, t, stored.rowOffsets, stored.colVals, entries);

  const perm = addCast(g, addInitializer(g, "in_perm", "U16", [n], stored.inPerm), "I64");
  const weight = addNode(g, "Gather", [round(permuted), addInversePermutation(g, perm, n)], [intAttribute("axis", 1)]);
  return { weight, layout: "out-in", storedBytes };
}

/**
 * s_s, z_s, s_z, z_z as float32 [ti, tj, 1, 1]. Row k of a tile carries byte k>>1 of
 * SO = s_s | z_s<<16 | s_z<<32 | z_z<<48 (rows 2i and 2i+1 the same byte), so statistic i is
 * the bytes of rows 4i (low) and 4i + 2 (high).
 */
function secondOrderStats(g: GraphParts, words: string, bits: (x: string, shift: number, width: number) => string): [string, string, string, string] {
  const bytes = bits(words, 54, 8); // [ti, tj, 16, 1]
  const pick = (rows: number[]) => addNode(g, "Gather", [bytes, addConstant(g, "I64", [rows.length], rows)], [intAttribute("axis", 2)]);
  const low = pick([0, 4, 8, 12]);
  const high = pick([2, 6, 10, 14]);
  const pattern = addDisjointOr(g, low, addNode(g, "BitShift", [high, addConstant(g, "U64", [], [8])], [DIRECTION.left]));
  const values = f16FromBits(g, addCast(g, pattern, "U32")); // [ti, tj, 4, 1]
  const stat = (i: number) => addSlice(g, values, 2, i, i + 1);
  return [stat(0), stat(1), stat(2), stat(3)];
}

/**
 * The value of fp16 bit patterns (uint32 < 2¹⁶) as float32, exactly:
 * (−1)^sign · 2^(max(e,1) − 25) · (mantissa + (e > 0 ? 1024 : 0)), a power of two times an
 * integer below 2¹¹; e = 31 gives ±∞ for mantissa 0 and NaN otherwise.
 */
function f16FromBits(g: GraphParts, pattern: string): string {
  const u32 = (value: number) => addConstant(g, "U32", [], [value]);
  const field = (shift: number, width: number) => addLowBits(g, addNode(g, "BitShift", [pattern, u32(shift)], [DIRECTION.right]), width, "U32");
  const exponent = addCast(g, field(10, 5), "I64");
  const powers = Array.from({ length: 32 }, (_, e) => (e === 31 ? Infinity : 2 ** (Math.max(e, 1) - 25)));
  const hidden = Array.from({ length: 32 }, (_, e) => (e === 0 ? 0 : 1024));
  const significand = addCast(g, addDisjointOr(g, field(0, 10), addNode(g, "Gather", [addConstant(g, "U32", [32], hidden), exponent])), "F32");
  const magnitude = addNode(g, "Mul", [addNode(g, "Gather", [addConstant(g, "F32", [32], powers), exponent]), significand]);
  const nan = addNode(g, "And", [addNode(g, "IsInf", [magnitude]), addNode(g, "Greater", [significand, addConstant(g, "F32", [], [1024])])]);
  const sign = addNode(g, "Gather", [addConstant(g, "F32", [2], [1, -1]), addCast(g, field(15, 1), "I64")]);
  return addNode(g, "Mul", [addNode(g, "Where", [nan, addConstant(g, "F32", [], [Number.NaN]), magnitude]), sign]);
}

/**
 * Wp + the outliers, in float32, by a ScatterElements "add" over the flattened [m·n] weight (in
 * entry order, so a position's additions happen in the reference's order). Entry i's row:
 *   CSR    #{r ∈ 1 … m : row_offsets[r] ≤ i}, a prefix count (CumSum of marks at each offset)
 *   PTCSR  block b the same way over the m/16 + 1 block offsets, then row 16b + (i − off[b]) mod 16
 * Its column is the low 16 bits of the col_vals word, its value the fp16 in the high 16 bits.
 */
function addOutliers(g: GraphParts, permuted: string, t: SpqrTensor, rowOffsetBytes: Uint8Array, colValBytes: Uint8Array, entries: number): string {
  const m = t.outFeatures;
  const n = t.inFeatures;
  const i64 = (value: number) => addConstant(g, "I64", [], [value]);
  const op = (type: string, a: string, b: string) => addNode(g, type, [a, b]);
  const offsetCount = rowOffsetBytes.length / 4;
  const offsets = addCast(g, addInitializer(g, "row_offsets", "I32", [offsetCount], rowOffsetBytes), "I64");
  // Marks in a vector one longer than the entries: offsets equal to the count land in the spare slot.
  const starts = addSlice(g, offsets, 0, 1, offsetCount);
  const zeros = addNode(g, "Expand", [i64(0), addConstant(g, "I64", [1], [entries + 1])]);
  const ones = addNode(g, "Expand", [i64(1), addConstant(g, "I64", [1], [offsetCount - 1])]);
  const marks = addNode(g, "ScatterElements", [zeros, starts, ones], [intAttribute("axis", 0), stringAttribute("reduction", "add")]);
  const owner = addSlice(g, addNode(g, "CumSum", [marks, i64(0)]), 0, 0, entries);
  let rows = owner;
  if (offsetCount !== m + 1) {
    const slot = op("Sub", addNode(g, "Range", [i64(0), i64(entries), i64(1)]), addNode(g, "Gather", [offsets, owner]));
    rows = op("Add", op("Mul", owner, i64(TILE)), addNode(g, "Mod", [slot, i64(TILE)]));
  }
  const colVals = addInitializer(g, "col_vals", "U32", [entries], colValBytes);
  const u32 = (value: number) => addConstant(g, "U32", [], [value]);
  const columns = addCast(g, addLowBits(g, colVals, 16, "U32"), "I64");
  const values = f16FromBits(g, addNode(g, "BitShift", [colVals, u32(16)], [DIRECTION.right]));
  const positions = op("Add", op("Mul", rows, i64(n)), columns);
  const flat = addNode(g, "ScatterElements", [addReshape(g, permuted, [m * n]), positions, values], [intAttribute("axis", 0), stringAttribute("reduction", "add")]);
  return addReshape(g, flat, [m, n]);
}
