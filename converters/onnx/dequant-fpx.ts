import { FormatError } from "../../formats/errors.js";
import { fitsTcLayout, regionsOf, regionTableForKernel, tcPackedBytes, TC_COL_MULTIPLE, TC_ROW_MULTIPLE } from "../../formats/fpx/tc-layout.js";
import type { FpxTensor } from "../../formats/fpx/types.js";
import type { DequantWeight } from "./dequant-layer.js";
import { addCast, addConstant, addDisjointOr, addInitializer, addLowBits, addNode, addReshape, addSlice, intAttribute, intsAttribute, stringAttribute, type GraphParts } from "./model.js";

/**
 * An FPx layer's dequantization (FP6-LLM / torchao tensor-core layout, per-row fp16 scales) as
 * standard ONNX ops (opset 17), computing formats/fpx/reference.ts's W = f32(decode(code) ·
 * f32(scale)) bit for bit. The initialisers are the packed layout bytes as stored (one uint32
 * view of the whole buffer) and the fp16 scales, plus two shape-independent layout tables per
 * bit region (1 KiB each, shared by every layer of that width):
 *
 *   region y (the next y bits of every code, from the MSB; regions 1, 2, 4 in buffer order)
 *     [M/64, N/16, 32·y] words, one chunk per (64-row slab, 16-column tile); the word and the
 *     bit shift of element (r, c) depend only on (r mod 64, c mod 16): table word[64][16] and
 *     shift[64][16] (uint8), inverted from tc-layout.ts's gather table
 *   code  = Σ_y ((Gather(chunk, word) >> shift) & (2^y − 1)) << (bits of the regions after y)
 *   W     = Gather(decode table [2^nbits] float32, code) · f32(scale[r])
 *
 * The decode table holds every code's value (format.ts); the product of a value of at most
 * mbits + 1 significant bits and an 11-bit fp16 scale is exact in float32, as in the reference.
 */

const SLAB_ROWS = 64;
const TILE_COLS = 16;
const DIRECTION = { right: stringAttribute("direction", "RIGHT"), left: stringAttribute("direction", "LEFT") } as const;

export function fpxDequantSubgraph(g: GraphParts, t: FpxTensor): DequantWeight {
  const { outFeatures: M, inFeatures: N, format } = t;
  const nbits = format.nbits;
  if (!fitsTcLayout(M, N)) throw new FormatError("PACKED_SHAPE_MISMATCH", `the tensor-core FPx layout needs rows % ${TC_ROW_MULTIPLE} = 0 and columns % ${TC_COL_MULTIPLE} = 0`, { expected: `multiples of ${TC_ROW_MULTIPLE}x${TC_COL_MULTIPLE}`, actual: `${M}x${N}` });
  const packedBytes = tcPackedBytes(M, N, nbits);
  if (t.packed.length !== packedBytes || t.scales.length !== M) {
    throw new FormatError("PACKED_SHAPE_MISMATCH", "FPx packed codes or scales do not match the layer shape", { expected: `${packedBytes} bytes and ${M} scales`, actual: `${t.packed.length} bytes and ${t.scales.length} scales` });
  }
  const packed = addInitializer(g, "packed", "U32", [packedBytes / 4], t.packed);
  const [slabs, tiles] = [M / SLAB_ROWS, N / TILE_COLS];
  let code: string | undefined;
  let wordAt = 0;
  let used = 0;
  for (const y of regionsOf(nbits)) {
    const regionWords = (M * N * y) / 32;
    const chunks = addReshape(g, addSlice(g, packed, 0, wordAt, wordAt + regionWords), [slabs, tiles, 32 * y]);
    const { word, shift } = regionTables(y);
    const picked = addNode(g, "Gather", [chunks, addCast(g, addInitializer(g, `tc_word_${y}bit`, "U8", [SLAB_ROWS, TILE_COLS], word), "I64")], [intAttribute("axis", 2)]);
    const shifted = addNode(g, "BitShift", [picked, addCast(g, addInitializer(g, `tc_shift_${y}bit`, "U8", [SLAB_ROWS, TILE_COLS], shift), "U32")], [DIRECTION.right]);
    let part = addLowBits(g, shifted, y, "U32");
    const lowBit = nbits - used - y;
    if (lowBit > 0) part = addNode(g, "BitShift", [part, addConstant(g, "U32", [], [lowBit])], [DIRECTION.left]);
    code = code === undefined ? part : addDisjointOr(g, code, part);
    wordAt += regionWords;
    used += y;
  }
  // [slab, tile, r mod 64, c mod 16] → [M, N].
  const codes = addReshape(g, addNode(g, "Transpose", [code!], [intsAttribute("perm", [0, 2, 1, 3])]), [M, N]);
  const values = addNode(g, "Gather", [addConstant(g, "F32", [format.values.length], [...format.values]), addCast(g, codes, "I64")]);
  const scale = addCast(g, addInitializer(g, "scales", "F16", [M, 1], new Uint8Array(t.scales.buffer, t.scales.byteOffset, t.scales.byteLength)), "F32");
  return { weight: addNode(g, "Mul", [values, scale]), layout: "out-in", storedBytes: packedBytes + 2 * M };
}

const tables = new Map<number, { word: Uint8Array; shift: Uint8Array }>();

/** Word (0 … 32y−1) and bit shift of element (r, c) of a chunk, from tc-layout.ts's gather table. */
function regionTables(y: number): { word: Uint8Array; shift: Uint8Array } {
  const hit = tables.get(y);
  if (hit !== undefined) return hit;
  const { offsets, shifts } = regionTableForKernel(y); // per (word, slot): element r·16 + c
  const perWord = 32 / y;
  const word = new Uint8Array(SLAB_ROWS * TILE_COLS);
  const shift = new Uint8Array(SLAB_ROWS * TILE_COLS);
  for (let at = 0; at < offsets.length; at++) {
    word[offsets[at]!] = Math.floor(at / perWord);
    shift[offsets[at]!] = shifts[at]!;
  }
  const result = { word, shift };
  tables.set(y, result);
  return result;
}
