import { ConversionError, FormatError } from "../../formats/errors.js";
import { groupCount, isTrivialGIdx, type IntGroupTensor } from "../../formats/int-group/types.js";

/**
 * Act-order (GPTQ desc_act) layers in MatMulNBits, exactly. Such a layer quantizes its columns in
 * an order of its own, so column k belongs to group g_idx[k] rather than ⌊k / group size⌋.
 * MatMulNBits's g_idx input is deprecated (onnxruntime's quantizer no longer writes it), so the
 * exporter instead sorts the columns by group:
 *
 *   order   the columns sorted by g_idx, stable: order[j] = source column of position j
 *   W'      W'[n][j] = W[n][order[j]], whose groups are contiguous blocks of group size
 *   y       = x · Wᵀ = x[order] · W'ᵀ, so the graph Gathers x along its last axis first
 *
 * which holds exactly when every group has exactly group-size columns (the last one the
 * remainder), as GPTQ's g_idx = ⌊perm⁻¹[k] / group size⌋ always does. `restoreActOrder` is the
 * inverse: the importer gives back the same codes and g_idx.
 */

export interface GroupOrdered {
  /** The layer with its columns in group order (gIdx undefined). */
  tensor: IntGroupTensor;
  /** order[j] = source column now at position j; undefined when the layer was already in order. */
  order: Int32Array | undefined;
}

export function groupOrdered(t: IntGroupTensor, tensor: string): GroupOrdered {
  const { gIdx, inFeatures: K, outFeatures: N } = t;
  const groupSize = t.params.groupSize;
  if (gIdx === undefined || isTrivialGIdx(gIdx, groupSize)) return { tensor: { ...t, gIdx: undefined }, order: undefined };
  const groups = groupCount(K, groupSize);
  const counts = new Int32Array(groups);
  for (let k = 0; k < K; k++) {
    const g = gIdx[k]!;
    if (!(g >= 0 && g < groups)) throw new FormatError("PACKED_VALUE_INVALID", `g_idx[${k}] = ${g} is not a group of ${groups}`, { tensor, expected: `0 … ${groups - 1}`, actual: g });
    counts[g]!++;
  }
  const starts = new Int32Array(groups);
  for (let g = 0; g < groups; g++) {
    const expected = Math.min(groupSize, K - g * groupSize);
    if (counts[g] !== expected) {
      throw new ConversionError("NOT_REPRESENTABLE", `act-order group ${g} has ${counts[g]} columns, not ${expected}: reordering cannot make MatMulNBits blocks of it`, { tensor, expected, actual: counts[g] });
    }
    starts[g] = g * groupSize;
  }
  const order = new Int32Array(K);
  for (let k = 0; k < K; k++) order[starts[gIdx[k]!]!++] = k;
  const codes = new Uint8Array(N * K);
  for (let n = 0; n < N; n++) {
    const row = n * K;
    for (let j = 0; j < K; j++) codes[row + j] = t.codes[row + order[j]!]!;
  }
  return { tensor: { ...t, codes, gIdx: undefined }, order };
}

/** The inverse of groupOrdered: codes back in source column order, with g_idx. */
export function restoreActOrder(t: IntGroupTensor, order: Int32Array, tensor: string, file?: string): IntGroupTensor {
  const { inFeatures: K, outFeatures: N } = t;
  const where = { file, tensor };
  if (order.length !== K) throw new FormatError("PACKED_SHAPE_MISMATCH", "column order length differs from the layer's input features", { ...where, expected: K, actual: order.length });
  const seen = new Uint8Array(K);
  for (let j = 0; j < K; j++) {
    const k = order[j]!;
    if (!(k >= 0 && k < K) || seen[k] !== 0) throw new FormatError("PACKED_VALUE_INVALID", `column order is not a permutation of 0 … ${K - 1} (entry ${j} = ${k})`, where);
    seen[k] = 1;
  }
  const codes = new Uint8Array(N * K);
  const gIdx = new Int32Array(K);
  for (let j = 0; j < K; j++) gIdx[order[j]!] = Math.floor(j / t.params.groupSize);
  for (let n = 0; n < N; n++) {
    const row = n * K;
    for (let j = 0; j < K; j++) codes[row + order[j]!] = t.codes[row + j]!;
  }
  return { ...t, codes, gIdx };
}
