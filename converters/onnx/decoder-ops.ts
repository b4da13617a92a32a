import { bytesOf } from "../../formats/packed-array.js";
import type { IntGroupTensor } from "../../formats/int-group/types.js";
import { onnx } from "../../schemas/gen/onnx.js";
import { matMulNBitsNode } from "./export-layer.js";
import type { GraphBuilder } from "./decoder-builder.js";
import { intAttribute } from "./model.js";

/**
 * The decoder's building blocks other than attention, in standard ONNX ops where one exists
 * (opset 21 has no RMSNormalization and no SiLU, so both are spelled out as onnxruntime-genai's
 * builder and transformers' modules compute them):
 *
 *   RMSNorm(x) = x / √(mean(x²) + ε) · γ      Pow → ReduceMean → Add → Sqrt → Div → Mul, the
 *                                             pattern onnxruntime's SimplifiedLayerNormFusion
 *                                             turns back into one fused kernel at load time
 *   linear(x)  = x · Wᵀ (+ b)                 MatMul on the transposed float weight, or
 *                                             com.microsoft.MatMulNBits on integer groups
 *   SwiGLU(x)  = down((g · σ(g)) ⊙ up(x)), g = gate(x)
 */

/** A linear layer as the graph receives it: float weights, or integer groups carried over exactly. */
export type LinearWeights = DenseLinear | IntGroupLinear;

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

export interface RmsNormWeights {
  name: string;
  gamma: Float32Array;
  eps: number;
}

export async function rmsNorm(g: GraphBuilder, x: string, norm: RmsNormWeights): Promise<string> {
  const squares = g.op1("Pow", [x, g.floats("two", [2], [])]);
  const mean = g.op1("ReduceMean", [squares, g.int64s("last_axis", [-1])], { attributes: [intAttribute("keepdims", 1)] });
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
  } else {
    y = `${layer.name}/out`;
    const { node, initializers } = matMulNBitsNode(layer.tensor, layer.name, x, y);
    for (const t of initializers) {
      // matMulNBitsNode makes uint8 B / zero_points and float32 scales, inline; route them through the store.
      const dtype = t.dataType === onnx.TensorProto.DataType.FLOAT ? "F32" : "U8";
      await g.weight(t.name!, dtype, t.dims as number[], t.rawData!);
    }
    g.node(node);
  }
  if (layer.bias === undefined) return y;
  return g.op1("Add", [y, await g.weight(`${layer.name}.bias`, "F32", [layer.bias.length], bytesOf(layer.bias))]);
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
