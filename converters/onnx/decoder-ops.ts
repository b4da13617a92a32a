import { bytesOf } from "../../formats/packed-array.js";
import type { IntGroupTensor } from "../../formats/int-group/types.js";
import { matMulNBitsNode } from "./export-layer.js";
import type { GraphBuilder } from "./decoder-builder.js";
import { dequantSubgraph, type PackedLinear } from "./dequant-layer.js";
import { dtypeOfInitializer, graphParts, intAttribute, intsAttribute } from "./model.js";

/**
 * The decoder's building blocks other than attention, in standard ONNX ops where one exists
 * (opset 17 has no RMSNormalization and no SiLU, so both are spelled out as onnxruntime-genai's
 * builder and transformers' modules compute them):
 *
 *   RMSNorm(x) = x / √(mean(x²) + ε) · γ      Pow → ReduceMean → Add → Sqrt → Div → Mul, the
 *                                             pattern onnxruntime's SimplifiedLayerNormFusion
 *                                             turns back into one fused kernel at load time
 *   linear(x)  = x · Wᵀ (+ b)                 MatMul on the transposed float weight, or
 *                                             com.microsoft.MatMulNBits on integer groups
 *   SwiGLU(x)  = down((g · σ(g)) ⊙ up(x)), g = gate(x)
 */

/**
 * A linear layer as the graph receives it: float weights, integer groups carried over exactly,
 * or a VPTQ / SpQR / FPx layer whose stored arrays the graph dequantizes (dequant-*.ts).
 */
export type LinearWeights = DenseLinear | IntGroupLinear | DequantLinear;

export interface DenseLinear {
  kind: "dense";
  /** Module name, e.g. "model.layers.0.self_attn.q_proj". */
  name: string;
  outFeatures: number;
  inFeatures: number;
  /** float32 [out][in], the HF layout. */
  weight: Float32Array;
  bias: Float32Array | undefined;
}

export interface IntGroupLinear {
  kind: "int-group";
  name: string;
  tensor: IntGroupTensor;
  bias: Float32Array | undefined;
}

export interface DequantLinear {
  kind: "dequant";
  name: string;
  layer: PackedLinear;
  bias: Float32Array | undefined;
}

export interface RmsNormWeights {
  name: string;
  gamma: Float32Array;
  eps: number;
}

export async function rmsNorm(g: GraphBuilder, x: string, norm: RmsNormWeights): Promise<string> {
  const squares = g.op1("Pow", [x, g.floats("two", [2], [])]);
  const mean = g.op1("ReduceMean", [squares], { attributes: [intsAttribute("axes", [-1]), intAttribute("keepdims", 1)] });
  const rms = g.op1("Sqrt", [g.op1("Add", [mean, g.floats(`eps_${norm.eps}`, [norm.eps], [])])]);
  const normed = g.op1("Div", [x, rms]);
  const gamma = await g.weight(norm.name, "F32", [norm.gamma.length], bytesOf(norm.gamma));
  return g.op1("Mul", [normed, gamma]);
}

/** y = x · Wᵀ (+ b) for x [..., in]; returns y's name. */
export async function linear(g: GraphBuilder, x: string, layer: LinearWeights): Promise<string> {
  let y: string;
  if (layer.kind === "dense") {
    const weight = await g.weight(`${layer.name}.MatMul.weight`, "F32", [layer.inFeatures, layer.outFeatures], bytesOf(transpose(layer.weight, layer.outFeatures, layer.inFeatures)));
    y = g.op1("MatMul", [x, weight]);
  } else if (layer.kind === "dequant") {
    y = g.op1("MatMul", [x, await dequantWeightT(g, layer)]);
  } else {
    y = `${layer.name}/out`;
    const { nodes, initializers } = matMulNBitsNode(layer.tensor, layer.name, x, y);
    for (const t of initializers) {
      // matMulNBitsNode makes its initialisers inline; route them through the store.
      await g.weight(t.name!, dtypeOfInitializer(t), t.dims as number[], t.rawData!);
    }
    for (const node of nodes) g.node(node);
  }
  if (layer.bias === undefined) return y;
  return g.op1("Add", [y, await g.weight(`${layer.name}.bias`, "F32", [layer.bias.length], bytesOf(layer.bias))]);
}

/**
 * Moves a dequantization subgraph into the decoder: its nodes as they are, its initialisers
 * through the store (so big codes go to external data like any weight); returns Wᵀ [in, out].
 * Every input of the subgraph is an initialiser, so onnxruntime folds it into the float32
 * weight when the session is created.
 */
async function dequantWeightT(g: GraphBuilder, layer: DequantLinear): Promise<string> {
  const parts = graphParts(layer.name);
  const dequant = dequantSubgraph(parts, layer.layer);
  for (const t of parts.initializers) await g.weight(t.name!, dtypeOfInitializer(t), t.dims as number[], t.rawData!);
  for (const node of parts.nodes) g.node(node);
  return dequant.layout === "in-out" ? dequant.weight : g.op1("Transpose", [dequant.weight], { attributes: [intsAttribute("perm", [1, 0])] });
}

export interface MlpWeights {
  norm: RmsNormWeights;
  gate: LinearWeights;
  up: LinearWeights;
  down: LinearWeights;
}

/** The post-attention half of a layer: hidden + down(SiLU(gate(n)) ⊙ up(n)), n = RMSNorm(hidden). */
export async function mlpBlock(g: GraphBuilder, hidden: string, w: MlpWeights): Promise<string> {
  const x = await rmsNorm(g, hidden, w.norm);
  const gate = await linear(g, x, w.gate);
  const up = await linear(g, x, w.up);
  // SiLU(g) = g·σ(g): what transformers' ACT2FN["silu"] computes, and what onnxruntime fuses.
  const activated = g.op1("Mul", [g.op1("Mul", [gate, g.op1("Sigmoid", [gate])]), up]);
  return g.op1("Add", [hidden, await linear(g, activated, w.down)]);
}

/** [rows][cols] → [cols][rows]. */
export function transpose(values: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(values.length);
  for (let r = 0; r < rows; r++) {
    const row = r * cols;
    for (let c = 0; c < cols; c++) out[c * rows + r] = values[row + c]!;
  }
  return out;
}
