import type { DeviceArray } from "./launch.js";
import type { ForwardPlan } from "./plan.js";

/** [tokens][…] buffers of one window (maxTokens rows each), the rotary table, ids and the status word. */
export interface Activations {
  hidden: DeviceArray;
  normed: DeviceArray;
  q: DeviceArray;
  k: DeviceArray;
  v: DeviceArray;
  attended: DeviceArray;
  gate: DeviceArray;
  up: DeviceArray;
  /** One head's [tokens][tokens] scores, reused head after head. */
  scores: DeviceArray;
  logits: DeviceArray;
  nll: DeviceArray;
  cos: DeviceArray;
  sin: DeviceArray;
  ids: DeviceArray;
  status: DeviceArray;
}

/**
 * The buffers of one window of up to `maxTokens` tokens, taken through the forward's own
 * `alloc`/`upload` (which record them for release), with the rotary table uploaded.
 */
export function allocateActivations(plan: ForwardPlan, maxTokens: number, table: { cos: Float64Array; sin: Float64Array }, alloc: (elements: number, elementBytes: number) => DeviceArray, upload: (values: Float64Array) => DeviceArray): Activations {
  const T = maxTokens;
  const f64 = (elements: number): DeviceArray => alloc(elements, 8);
  return {
    hidden: f64(T * plan.hidden), normed: f64(T * plan.hidden), q: f64(T * plan.qOut), k: f64(T * plan.kvOut), v: f64(T * plan.kvOut), attended: f64(T * plan.qOut),
    gate: f64(T * plan.intermediate), up: f64(T * plan.intermediate), scores: f64(T * T), logits: f64(T * plan.vocab), nll: f64(T),
    cos: upload(table.cos), sin: upload(table.sin), ids: alloc(T, 4), status: alloc(1, 4),
  };
}
