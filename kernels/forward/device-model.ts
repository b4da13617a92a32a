import type { Linear, LlamaWeights } from "../../model/llama-weights.js";
import type { DeviceArray } from "./launch.js";

/** The model's weights on the device (gpu-forward.ts), each linear beside its host shape. */

/** The linears of a decoder layer, by their LlamaWeights / DeviceLayer keys. */
export const LINEAR_KEYS = ["q", "k", "v", "o", "gate", "up", "down"] as const;

export interface DeviceLinear {
  inFeatures: number;
  outFeatures: number;
  weight: DeviceArray;
  bias: DeviceArray | undefined;
}

export interface DeviceLayer {
  inputNorm: DeviceArray;
  q: DeviceLinear;
  k: DeviceLinear;
  v: DeviceLinear;
  o: DeviceLinear;
  postAttentionNorm: DeviceArray;
  gate: DeviceLinear;
  up: DeviceLinear;
  down: DeviceLinear;
}

export interface DeviceModel {
  embed: DeviceArray;
  head: DeviceArray;
  finalNorm: DeviceArray;
  layers: DeviceLayer[];
}

/**
 * Uploads every weight once (float64, as LlamaWeights holds them; a tied head shares the
 * embedding's buffer) and records, per linear, the host array it came from in `uploadedFrom`.
 */
export function uploadModel(weights: LlamaWeights, tiedHead: boolean, upload: (values: Float64Array) => DeviceArray, uploadedFrom: Map<DeviceLinear, Float64Array>): DeviceModel {
  const linear = (l: Linear): DeviceLinear => {
    const device = { inFeatures: l.inFeatures, outFeatures: l.outFeatures, weight: upload(l.weight), bias: l.bias === undefined ? undefined : upload(l.bias) };
    uploadedFrom.set(device, l.weight);
    return device;
  };
  const embed = upload(weights.embed);
  return {
    embed,
    head: tiedHead ? embed : upload(weights.head),
    finalNorm: upload(weights.finalNorm),
    layers: weights.layers.map((l) => ({
      inputNorm: upload(l.inputNorm), q: linear(l.q), k: linear(l.k), v: linear(l.v), o: linear(l.o),
      postAttentionNorm: upload(l.postAttentionNorm), gate: linear(l.gate), up: linear(l.up), down: linear(l.down),
    })),
  };
}
