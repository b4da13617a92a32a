import type { FpxTensor } from "../../formats/fpx/types.js";
import type { SpqrTensor } from "../../formats/spqr/types.js";
import type { VptqSemantics } from "../../formats/vptq/reference.js";
import type { VptqTensor } from "../../formats/vptq/types.js";
import { writeFileAtomic } from "../io/atomic.js";
import { fpxDequantSubgraph } from "./dequant-fpx.js";
import { spqrDequantSubgraph } from "./dequant-spqr.js";
import { vptqDequantSubgraph } from "./dequant-vptq.js";
import { BATCH_DIM, LAYER_INPUT, LAYER_OUTPUT } from "./export-layer.js";
import { addNode, encodeModel, graphParts, intsAttribute, modelProto, tensorValueInfo, type GraphParts, type ModelInit } from "./model.js";

/**
 * One VPTQ, SpQR or FPx linear as an ONNX model of standard ops (opset 17, no contrib op):
 *
 *   Y = MatMul(A, Wᵀ),  W = the format's dequantization subgraph (dequant-<format>.ts)
 *
 * with A float32 [batch, in] and Y float32 [batch, out]. The subgraph computes, from the packed
 * arrays as lmpack stores them, the same float32 weight as the format's reference.ts, bit for
 * bit. `exposeWeight` adds W itself [out, in] as a second output (the tests compare it with the
 * reference). Every input of the subgraph is an initialiser, so onnxruntime constant-folds it
 * when the session is created: the model carries the packed bytes, the session holds the
 * float32 weight (dequantize at load; a fused kernel is a separate matter).
 */

/** One packed linear, in lmpack's representation of its format. */
export type PackedLinear =
  | { format: "vptq"; tensor: VptqTensor; semantics?: VptqSemantics }
  | { format: "spqr"; tensor: SpqrTensor }
  | { format: "fpx"; tensor: FpxTensor };

/** What a dequantization subgraph hands back. */
export interface DequantWeight {
  /** Name of the float32 weight tensor. */
  weight: string;
  /** [out, in] as the HF layout, or already transposed [in, out] where that is the natural order. */
  layout: "out-in" | "in-out";
  /** Bytes of the format's stored arrays (lmpack's packed size), all of which are initialisers. */
  storedBytes: number;
}

/** Name of the optional weight output. */
export const WEIGHT_OUTPUT = "W";

export interface DequantLayerOptions {
  /** Names the graph and prefixes its initialisers; "linear" when omitted. */
  tensorName?: string;
  /** Also output W [out, in]. */
  exposeWeight?: boolean;
}

export interface DequantLayer {
  model: ModelInit;
  outFeatures: number;
  inFeatures: number;
  /** Bytes of all initialisers: the stored arrays plus small constants and layout tables. */
  initializerBytes: number;
  /** Bytes of the format's stored arrays (lmpack's packed size). */
  storedBytes: number;
}

/** Adds `layer`'s dequantization subgraph to `g`; returns its weight. */
export function dequantSubgraph(g: GraphParts, layer: PackedLinear): DequantWeight {
  return layer.format === "vptq" ? vptqDequantSubgraph(g, layer.tensor, { semantics: layer.semantics ?? "cuda" })
    : layer.format === "spqr" ? spqrDequantSubgraph(g, layer.tensor)
    : fpxDequantSubgraph(g, layer.tensor);
}

export function dequantLayer(layer: PackedLinear, options: DequantLayerOptions = {}): DequantLayer {
  const tensorName = options.tensorName ?? "linear";
  const g = graphParts(tensorName);
  const dequant = dequantSubgraph(g, layer);
  const { outFeatures, inFeatures } = layer.tensor;
  const transpose = (x: string) => addNode(g, "Transpose", [x], [intsAttribute("perm", [1, 0])]);
  const weightT = dequant.layout === "in-out" ? dequant.weight : transpose(dequant.weight);
  g.nodes.push({ name: `${tensorName}/MatMul`, opType: "MatMul", input: [LAYER_INPUT, weightT], output: [LAYER_OUTPUT] });
  const output = [tensorValueInfo(LAYER_OUTPUT, "F32", [BATCH_DIM, outFeatures])];
  if (options.exposeWeight ?? false) {
    const weight = dequant.layout === "out-in" ? dequant.weight : transpose(dequant.weight);
    g.nodes.push({ name: `${tensorName}/weight`, opType: "Identity", input: [weight], output: [WEIGHT_OUTPUT] });
    output.push(tensorValueInfo(WEIGHT_OUTPUT, "F32", [outFeatures, inFeatures]));
  }
  const semantics = layer.format === "vptq" ? ` (${layer.semantics ?? "cuda"} rounding)` : "";
  const model = modelProto(
    { name: tensorName, node: g.nodes, initializer: g.initializers, input: [tensorValueInfo(LAYER_INPUT, "F32", [BATCH_DIM, inFeatures])], output },
    `${layer.format} linear${semantics} dequantized by standard ONNX ops, exported by lmpack`,
  );
  const initializerBytes = g.initializers.reduce((sum, t) => sum + (t.rawData?.length ?? 0), 0);
  return { model, outFeatures, inFeatures, initializerBytes, storedBytes: dequant.storedBytes };
}

/** The per-layer model's bytes. */
export function encodeDequantLayer(layer: PackedLinear, options: DequantLayerOptions = {}): Uint8Array {
  return encodeModel(dequantLayer(layer, options).model);
}

/** Writes the per-layer model to `path` atomically; returns the bytes written. */
export async function writeDequantLayer(path: string, layer: PackedLinear, options: DequantLayerOptions = {}): Promise<number> {
  const bytes = encodeDequantLayer(layer, options);
  await writeFileAtomic(path, bytes);
  return bytes.length;
}
