import { packedGroupWords, packVptq } from "../../formats/vptq/hf-layout.js";
import type { VptqSemantics } from "../../formats/vptq/reference.js";
import { indexBits, vectorRows, type VptqFloat, type VptqTensor } from "../../formats/vptq/types.js";
import type { DequantWeight } from "./dequant-layer.js";
import { addCast, addConstant, addDisjointOr, addInitializer, addInversePermutation, addLowBits, addNode, addReshape, addRoundTo16, addSlice, intAttribute, intsAttribute, stringAttribute, type GraphParts } from "./model.js";

/**
 * A VPTQ layer's dequantization as standard ONNX ops (opset 17), computing the weight of
 * formats/vptq/reference.ts bit for bit, in either semantics. The initialisers are the arrays
 * as the VPTQ layout stores them (hf-layout.ts), unchanged: the packed index words (uint32
 * view of the int32 words), the 16-bit codebooks, the uint16 outlier indices and permutation,
 * the 16-bit scale and bias. Everything else is computed in the graph:
 *
 *   indices   field e of row (g, r) sits at stream bit e·tb: Gather the word(s) it touches,
 *             BitShift / Mod out the tb bits (a second word when the field straddles),
 *             main = low ib bits, residual = the rb bits above
 *   Qᵀ        Gather the centroid vectors ([G, num_idx, gs, vl]), c = h(main + res), transpose
 *             to [G·gs, num_idx·vl], drop the padding rows; outlier columns in front
 *   perm      Wᵀ[j] = Qᵀ[inv[j]], inv = the inverse of perm, computed in the graph
 *   norm      "cuda":  W = h(c·s + b), ONE rounding (the kernel's fused __hfma2)
 *             "torch": W = h(h(c·s) + b)
 *
 * The result is Wᵀ [in, out] in float32 (16-bit values, widened exactly).
 *
 * Why each step is exact (f16 and bf16 below: p = 11 or 8 significant bits):
 * - c·s: a product of two p-bit values has ≤ 2p ≤ 22 bits, exact in float32 (f16: |c·s| lies
 *   in [2⁻⁴⁸, 2³²], inside float32's normal range).
 * - h(a + b) of two 16-bit values: float32's sum followed by the cast is a double rounding,
 *   innocuous because 24 ≥ 2p + 1 (Figueroa, "When is double rounding innocuous?", 1995); a sum
 *   in the 16-bit subnormal range is exact in both formats.
 * - h(c·s + b) with ONE rounding: c·s has up to 22 bits, so float32's sum s₁ is not always the
 *   exact sum and the cast would round twice. `roundSumTo16` recovers it: TwoSum gives the
 *   exact error e (x + y = s₁ + e), and the cast of s₁ is the right answer except when s₁ is
 *   exactly a 16-bit midpoint and e ≠ 0, where the true sum lies on e's side of the midpoint.
 *   (No golden layer has such an element; test/onnx/dequant-subgraphs.test.ts crafts them.)
 * - bf16 shares float32's exponent range, so two conditions are bf16's alone: c·s must not
 *   underflow float32's normal range (|c·s| ≥ 2⁻¹²⁶ or 0) nor overflow it (|c·s| < 2¹²⁸);
 *   outside them float32 cannot hold the exact product and the result may differ from the
 *   reference's. f16 layers meet both always.
 */

export interface VptqSubgraphOptions {
  /** Rounding of the norm step; "cuda" (one rounding) by default, as the reference. */
  semantics?: VptqSemantics;
}

const DIRECTION = { right: stringAttribute("direction", "RIGHT"), left: stringAttribute("direction", "LEFT") } as const;

export function vptqDequantSubgraph(g: GraphParts, t: VptqTensor, options: VptqSubgraphOptions = {}): DequantWeight {
  const semantics = options.semantics ?? "cuda";
  const p = t.params;
  const out = t.outFeatures;
  const stored = packVptq(t);
  const storedBytes = [...stored.values()].reduce((sum, bytes) => sum + bytes.length, 0);
  const bytesOf = (suffix: Parameters<typeof stored.get>[0]) => stored.get(suffix)!;

  const blocks: string[] = [];
  if (p.outlierSize > 0) {
    const numOidx = vectorRows(out, p.outlierVectorLen);
    const centroids = addInitializer(g, "outlier_centroids.weight", t.dtype, [p.outlierNumCentroids, p.outlierVectorLen], bytesOf("outlier_centroids.weight"));
    const indices = addInitializer(g, "outlier_indices", "U16", [numOidx, p.outlierSize], bytesOf("outlier_indices"));
    const vectors = addNode(g, "Gather", [centroids, addCast(g, indices, "I64")], [intAttribute("axis", 0)]); // [numOidx, os, ovl]
    const columns = addReshape(g, addNode(g, "Transpose", [vectors], [intsAttribute("perm", [1, 0, 2])]), [p.outlierSize, numOidx * p.outlierVectorLen]);
    blocks.push(addCast(g, dropPadding(g, columns, numOidx * p.outlierVectorLen, out), "F32"));
  }
  if (p.groupSize > 0) blocks.push(mainColumns(g, t, bytesOf));
  let qT = blocks.length === 1 ? blocks[0]! : addNode(g, "Concat", blocks, [intAttribute("axis", 0)]);

  if (p.enablePerm) {
    const perm = addCast(g, addInitializer(g, "perm", "U16", [t.inFeatures], bytesOf("perm")), "I64");
    qT = addNode(g, "Gather", [qT, addInversePermutation(g, perm, t.inFeatures)], [intAttribute("axis", 0)]);
  }
  if (!p.enableNorm) return { weight: qT, layout: "in-out", storedBytes };

  const column = (suffix: "weight_scale" | "weight_bias") => addCast(g, addInitializer(g, suffix, t.dtype, [t.inFeatures, 1], bytesOf(suffix)), "F32");
  const product = addNode(g, "Mul", [qT, column("weight_scale")]); // exact: ≤ 22 significant bits
  const bias = column("weight_bias");
  const weight = semantics === "cuda" ? roundSumTo16(g, product, bias, t.dtype) : addRoundTo16(g, addNode(g, "Add", [addRoundTo16(g, product, t.dtype), bias]), t.dtype);
  return { weight, layout: "in-out", storedBytes };
}

/** Qᵀ of the non-outlier columns, float32 [G·gs, out]. */
function mainColumns(g: GraphParts, t: VptqTensor, bytesOf: (suffix: "centroids.weight" | "res_centroids.weight" | "indices") => Uint8Array): string {
  const p = t.params;
  const numIdx = vectorRows(t.outFeatures, p.vectorLen);
  const ib = indexBits(p.numCentroids);
  const rb = indexBits(p.numResCentroids);
  const rowWords = packedGroupWords(p.groupSize, p);
  const words = addInitializer(g, "indices", "U32", [p.groupNum, numIdx, rowWords], bytesOf("indices"));
  const merged = unpackFields(g, words, p.groupSize, ib + rb);
  const lookUp = (fields: string, suffix: "centroids.weight" | "res_centroids.weight", k: number) => {
    const codebook = addInitializer(g, suffix, t.dtype, [p.groupNum * k, p.vectorLen], bytesOf(suffix));
    let index = addCast(g, fields, "I64");
    // Codebook g's centroids start at row g·k of the stacked codebooks.
    if (p.groupNum > 1) index = addNode(g, "Add", [index, addConstant(g, "I64", [p.groupNum, 1, 1], Array.from({ length: p.groupNum }, (_, i) => i * k))]);
    return addCast(g, addNode(g, "Gather", [codebook, index], [intAttribute("axis", 0)]), "F32"); // [G, numIdx, gs, vl]
  };
  // Without a residual the fields are the main indices as they are (already masked to tb = ib bits).
  const mainIndex = rb === 0 ? merged : addLowBits(g, merged, ib, "U32");
  let vectors = lookUp(mainIndex, "centroids.weight", p.numCentroids);
  if (rb > 0) {
    const resIndex = addNode(g, "BitShift", [merged, addConstant(g, "U32", [], [ib])], [DIRECTION.right]);
    vectors = addRoundTo16(g, addNode(g, "Add", [vectors, lookUp(resIndex, "res_centroids.weight", p.numResCentroids)]), t.dtype);
  }
  const columns = addReshape(g, addNode(g, "Transpose", [vectors], [intsAttribute("perm", [0, 2, 1, 3])]), [p.groupNum * p.groupSize, numIdx * p.vectorLen]);
  return dropPadding(g, columns, numIdx * p.vectorLen, t.outFeatures);
}

function dropPadding(g: GraphParts, columns: string, paddedRows: number, out: number): string {
  return paddedRows === out ? columns : addSlice(g, columns, 1, 0, out);
}

/**
 * The tb-bit fields 0 … count−1 of every row of `words` (uint32 [..., rowWords], LSB-first
 * stream, each row starting on a fresh word) as uint32 [..., count]. Field e starts at bit
 * e·tb: word w₀ = ⌊e·tb/32⌋, shift e·tb mod 32; when it straddles into w₀ + 1, that word's low
 * bits go above, shifted left by 32 − shift (1 … 31: never a full-width shift, which BitShift
 * leaves undefined), times 0 or 1 to drop that part for fields that do not straddle.
 */
function unpackFields(g: GraphParts, words: string, count: number, tb: number): string {
  const i64 = (value: number) => addConstant(g, "I64", [], [value]);
  const bit = addNode(g, "Mul", [addNode(g, "Range", [i64(0), i64(count), i64(1)]), i64(tb)]);
  const first = addNode(g, "Div", [bit, i64(32)]);
  const shift = addNode(g, "Mod", [bit, i64(32)]);
  const gather = (index: string) => addNode(g, "Gather", [words, index], [intAttribute("axis", -1)]);
  let fields = addNode(g, "BitShift", [gather(first), addCast(g, shift, "U32")], [DIRECTION.right]);
  const straddles = Array.from({ length: count }, (_, e) => ((e * tb) % 32) + tb > 32).some(Boolean);
  if (straddles) {
    const straddle = addNode(g, "Greater", [addNode(g, "Add", [shift, i64(tb)]), i64(32)]);
    const second = addNode(g, "Add", [first, addCast(g, straddle, "I64")]);
    const up = addCast(g, addNode(g, "Where", [straddle, addNode(g, "Sub", [i64(32), shift]), i64(0)]), "U32");
    const keep = addCast(g, straddle, "U32");
    const high = addNode(g, "Mul", [addNode(g, "BitShift", [gather(second), up], [DIRECTION.left]), keep]);
    fields = addDisjointOr(g, fields, high);
  }
  return tb === 32 ? fields : addLowBits(g, fields, tb, "U32");
}

/** Largest finite value and the overflow midpoint (ties to even go to ∞ from there) of each 16-bit type. */
const LIMITS: Record<VptqFloat, { max: number; overflowTie: number }> = {
  F16: { max: 65504, overflowTie: 65520 },
  BF16: { max: 2 ** 127 * (2 - 2 ** -7), overflowTie: 2 ** 127 * (2 - 2 ** -8) },
};

/**
 * h(x + y) with one rounding to `dtype`, for float32 x, y whose float32 operations do not
 * overflow (f16 operands always). With s₁ = fl(x + y) and e its exact error (TwoSum, six adds),
 * h = h(s₁) is the answer unless s₁ is a midpoint of two 16-bit neighbours: then d = s₁ − h is
 * half their gap, n = s₁ + d is the other neighbour, and the true sum s₁ + e lies on n's side
 * iff e and d have the same sign (e = 0: the tie, which the cast breaks to even). A float32
 * s₁ that is not a midpoint gives the same cast as s₁ + e, since no 16-bit midpoint lies
 * strictly between float32 neighbours. All differences here are exact (Sterbenz); at the top
 * of the range h = ∞ is clamped to the largest finite value for d and n, and the overflow
 * midpoint is recognised by value.
 */
function roundSumTo16(g: GraphParts, x: string, y: string, dtype: VptqFloat): string {
  const op = (type: string, ...inputs: string[]) => addNode(g, type, inputs);
  const f32 = (value: number) => addConstant(g, "F32", [], [value]);
  const { max, overflowTie } = LIMITS[dtype];
  const sum = op("Add", x, y);
  const yPart = op("Sub", sum, x);
  const error = op("Add", op("Sub", x, op("Sub", sum, yPart)), op("Sub", y, yPart));
  const nearest = addRoundTo16(g, sum, dtype);
  const clamped = op("Clip", nearest, f32(-max), f32(max));
  const half = op("Sub", sum, clamped);
  const neighbour = op("Add", sum, half);
  const neighbourRounded = addRoundTo16(g, neighbour, dtype);
  const onGrid = op("And", op("Equal", neighbourRounded, neighbour), op("Not", op("IsInf", neighbour)));
  const midpoint = op("And", op("Not", op("Equal", half, f32(0))), op("Or", onGrid, op("Equal", op("Abs", sum), f32(overflowTie))));
  const side = op("Mul", op("Sign", error), op("Sign", half));
  const up = op("And", midpoint, op("Greater", side, f32(0)));
  const down = op("And", midpoint, op("Less", side, f32(0)));
  return op("Where", up, neighbourRounded, op("Where", down, clamped, nearest));
}
