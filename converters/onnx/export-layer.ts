import { isTrivialGIdx, type IntGroupTensor } from "../../formats/int-group/types.js";
import { bytesOf } from "../../formats/packed-array.js";
import { writeFileAtomic } from "../io/atomic.js";
import { encodeModel, initializer, intAttribute, modelProto, MS_DOMAIN, tensorValueInfo, type ModelInit, type NodeInit, type TensorInit } from "./model.js";
import { groupOrdered } from "./act-order.js";
import { matMulNBitsGeometry, toMatMulNBits } from "./matmul-nbits.js";

/**
 * One integer-group linear as a one-node ONNX model, `Y = MatMulNBits(A, B, scales[, zp])`,
 * with A float32 [batch, K] and Y float32 [batch, N]. It is the unit the whole-decoder export
 * will repeat per projection, and the smallest thing onnxruntime can run to prove the packing.
 *
 * What MatMulNBits cannot carry (the int-group scale dtype, the sym flag, the width of codes
 * narrower than its fields) is recorded in the node's metadata_props under the keys below, so
 * import.ts gives back the same IntGroupTensor.
 * accuracy_level is left out (0: compute in A's type), so fp32 inputs give fp32-accurate output.
 */

export const METADATA_SCALE_DTYPE = "lmpack.scale_dtype";
export const METADATA_SYM = "lmpack.sym";
/** The codes' own width when narrower than the MatMulNBits fields (3-bit codes in 4-bit fields). */
export const METADATA_CODE_BITS = "lmpack.bits";
/** Names of the graph's input and output. */
export const LAYER_INPUT = "A";
export const LAYER_OUTPUT = "Y";
/** Symbolic batch dimension of A and Y. */
export const BATCH_DIM = "batch";

export interface LayerExportOptions {
  /** Tensor (layer) name: names the node and prefixes its initialisers; "linear" when omitted. */
  tensorName?: string;
}

/** Initialiser of an act-order layer's column order (act-order.ts), int64 [K]. */
export const INPUT_ORDER_SUFFIX = ".input_order";

/**
 * The nodes and initialisers computing `output` = `input` · Wᵀ for `t`, named after `tensorName`:
 * one MatMulNBits node, preceded for an act-order layer by a Gather of the input's columns into
 * group order.
 */
export function matMulNBitsNode(t: IntGroupTensor, tensorName: string, input: string, output: string): { nodes: NodeInit[]; initializers: TensorInit[] } {
  const { tensor: ordered, order } = groupOrdered(t, tensorName);
  const w = toMatMulNBits(ordered, tensorName);
  const { kBlocks, blobBytes, zeroPointBytesPerRow } = matMulNBitsGeometry(w.K, w.bits, w.blockSize);
  const initializers = [initializer(`${tensorName}.B`, "U8", [w.N, kBlocks, blobBytes], w.b), initializer(`${tensorName}.scales`, "F32", [w.N, kBlocks], bytesOf(w.scales))];
  const nodes: NodeInit[] = [];
  let a = input;
  if (order !== undefined) {
    const orderName = `${tensorName}${INPUT_ORDER_SUFFIX}`;
    initializers.push(initializer(orderName, "I64", [w.K], new Uint8Array(BigInt64Array.from(order, (k) => BigInt(k)).buffer)));
    a = `${tensorName}/input_in_group_order`;
    nodes.push({ name: `${tensorName}/group_order`, opType: "Gather", input: [input, orderName], output: [a], attribute: [intAttribute("axis", -1)] });
  }
  const inputs = [a, `${tensorName}.B`, `${tensorName}.scales`];
  if (w.zeroPoints !== undefined) {
    initializers.push(initializer(`${tensorName}.zero_points`, "U8", [w.N, zeroPointBytesPerRow], w.zeroPoints));
    inputs.push(`${tensorName}.zero_points`);
  }
  const node: NodeInit = {
    name: tensorName,
    opType: "MatMulNBits",
    domain: MS_DOMAIN,
    input: inputs,
    output: [output],
    attribute: [intAttribute("K", w.K), intAttribute("N", w.N), intAttribute("bits", w.bits), intAttribute("block_size", w.blockSize)],
    metadataProps: [
      { key: METADATA_SCALE_DTYPE, value: t.params.scaleDtype },
      { key: METADATA_SYM, value: String(t.params.sym) },
      { key: METADATA_CODE_BITS, value: String(t.params.bits) },
    ],
  };
  nodes.push(node);
  return { nodes, initializers };
}

/** The per-layer model (see above). Throws ConversionError when `t` has no exact MatMulNBits image. */
export function matMulNBitsLayerModel(t: IntGroupTensor, options: LayerExportOptions = {}): ModelInit {
  const tensorName = options.tensorName ?? "linear";
  const { nodes, initializers } = matMulNBitsNode(t, tensorName, LAYER_INPUT, LAYER_OUTPUT);
  return modelProto(
    {
      name: tensorName,
      node: nodes,
      initializer: initializers,
      input: [tensorValueInfo(LAYER_INPUT, "F32", [BATCH_DIM, t.inFeatures])],
      output: [tensorValueInfo(LAYER_OUTPUT, "F32", [BATCH_DIM, t.outFeatures])],
    },
    `${t.params.bits}-bit ${t.params.sym ? "symmetric" : "asymmetric"} integer groups of ${t.params.groupSize}${isTrivialGIdx(t.gIdx, t.params.groupSize) ? "" : " (act-order)"}, exported by lmpack`,
  );
}

/** The per-layer model's bytes. */
export function encodeMatMulNBitsLayer(t: IntGroupTensor, options: LayerExportOptions = {}): Uint8Array {
  return encodeModel(matMulNBitsLayerModel(t, options));
}

/** Writes the per-layer model to `path` atomically; returns the bytes written. */
export async function writeMatMulNBitsLayer(path: string, t: IntGroupTensor, options: LayerExportOptions = {}): Promise<number> {
  const bytes = encodeMatMulNBitsLayer(t, options);
  await writeFileAtomic(path, bytes);
  return bytes.length;
}
