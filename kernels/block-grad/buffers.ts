import { BLOCK_LINEARS, type BlockContext, type BlockLinearKey } from "../../model/block-grad/forward.js";
import type { DeviceArray } from "../forward/launch.js";
import type { BlockGradPlan } from "./plan.js";

/**
 * The device buffers of one block's forward and backward (gpu-block-grad.ts), every activation
 * sized for the plan's maxTokens: a shorter window uses the first tokens rows (row strides are the
 * feature counts, so its [tokens][features] arrays are packed at the start), and the per-head
 * probabilities are packed as [heads][tokens][tokens] for the window's own token count.
 */

/** The frozen parts, uploaded once: norms, biases (when the linear has one) and the rotary table. */
export interface FrozenBlock {
  inputNorm: DeviceArray;
  postAttentionNorm: DeviceArray;
  bias: Record<BlockLinearKey, DeviceArray | undefined>;
  cos: DeviceArray;
  sin: DeviceArray;
}

/** What forward.ts's BlockTape holds, on the device, plus the block output. */
export interface DeviceTape {
  invRms1: DeviceArray;
  invRms2: DeviceArray;
  x1: DeviceArray;
  q: DeviceArray;
  k: DeviceArray;
  v: DeviceArray;
  /** [heads][tokens][tokens], zero above each diagonal. */
  probs: DeviceArray;
  attended: DeviceArray;
  h1: DeviceArray;
  x2: DeviceArray;
  gate: DeviceArray;
  up: DeviceArray;
  mixed: DeviceArray;
  output: DeviceArray;
}

/** backward.ts's intermediates. dGate doubles as ∂mixed (the SwiGLU backward rewrites it in place). */
export interface DeviceScratch {
  dOutput: DeviceArray;
  dGate: DeviceArray;
  dUp: DeviceArray;
  dX2: DeviceArray;
  dH1: DeviceArray;
  dAttended: DeviceArray;
  /** One head's [tokens][tokens] score gradient, reused head after head. */
  dScores: DeviceArray;
  dq: DeviceArray;
  dk: DeviceArray;
  dv: DeviceArray;
}

export interface BlockBuffers {
  frozen: FrozenBlock;
  weights: Record<BlockLinearKey, DeviceArray>;
  grads: Record<BlockLinearKey, DeviceArray>;
  tape: DeviceTape;
  scratch: DeviceScratch;
  /** One uint32, the kernels' status word. */
  status: DeviceArray;
}

/** Allocates every buffer through `alloc` (float64 elements, or 4-byte words for the status) and uploads the frozen parts through `upload`. */
export function allocateBlockBuffers(plan: BlockGradPlan, ctx: BlockContext, alloc: (elements: number, elementBytes: number) => DeviceArray, upload: (values: Float64Array) => DeviceArray): BlockBuffers {
  const T = plan.maxTokens;
  const { hidden: H, qWidth, kvWidth, intermediate: I, heads } = plan;
  const half = plan.headDim / 2;
  const f64 = (elements: number): DeviceArray => alloc(elements, 8);
  const perLinear = <V>(make: (key: BlockLinearKey) => V): Record<BlockLinearKey, V> => Object.fromEntries(BLOCK_LINEARS.map((key) => [key, make(key)])) as Record<BlockLinearKey, V>;
  const elementsOf = (key: BlockLinearKey): number => plan.shapes[key][0] * plan.shapes[key][1];
  const { layer, rope } = ctx;
  const frozen: FrozenBlock = {
    inputNorm: upload(layer.inputNorm),
    postAttentionNorm: upload(layer.postAttentionNorm),
    bias: perLinear((key) => (layer[key].bias === undefined ? undefined : upload(layer[key].bias!))),
    // The rows of the longest window only: the CPU reads positions 0 … tokens−1.
    cos: upload(rope.cos.subarray(0, T * half)),
    sin: upload(rope.sin.subarray(0, T * half)),
  };
  return {
    frozen,
    weights: perLinear((key) => f64(elementsOf(key))),
    grads: perLinear((key) => f64(elementsOf(key))),
    tape: {
      invRms1: f64(T), invRms2: f64(T), x1: f64(T * H), q: f64(T * qWidth), k: f64(T * kvWidth), v: f64(T * kvWidth), probs: f64(heads * T * T),
      attended: f64(T * qWidth), h1: f64(T * H), x2: f64(T * H), gate: f64(T * I), up: f64(T * I), mixed: f64(T * I), output: f64(T * H),
    },
    scratch: {
      dOutput: f64(T * H), dGate: f64(T * I), dUp: f64(T * I), dX2: f64(T * H), dH1: f64(T * H), dAttended: f64(T * qWidth), dScores: f64(T * T),
      dq: f64(T * qWidth), dk: f64(T * kvWidth), dv: f64(T * kvWidth),
    },
    status: alloc(1, 4),
  };
}
