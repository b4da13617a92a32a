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
  return {
    ...allocateLayerBuffers(plan, T, 1, alloc),
    logits: alloc(T * plan.vocab, 8), nll: alloc(T, 8),
    cos: upload(table.cos), sin: upload(table.sin), ids: alloc(T, 4), status: alloc(1, 4),
  };
}

/** The float64 buffers a decoder layer writes, for `windows` windows of up to `tokens` tokens (resident-states.ts batches several). */
export function allocateLayerBuffers(plan: ForwardPlan, tokens: number, windows: number, alloc: (elements: number, elementBytes: number) => DeviceArray): Pick<Activations, "hidden" | "normed" | "q" | "k" | "v" | "attended" | "gate" | "up" | "scores"> {
  const rows = tokens * windows;
  const f64 = (elements: number): DeviceArray => alloc(elements, 8);
  return {
    hidden: f64(rows * plan.hidden), normed: f64(rows * plan.hidden), q: f64(rows * plan.qOut), k: f64(rows * plan.kvOut), v: f64(rows * plan.kvOut), attended: f64(rows * plan.qOut),
    gate: f64(rows * plan.intermediate), up: f64(rows * plan.intermediate), scores: f64(windows * tokens * tokens),
  };
}

/** Bytes of allocateLayerBuffers for one window of `tokens` tokens. */
export function layerBufferBytesPerWindow(plan: ForwardPlan, tokens: number): number {
  return 8 * (tokens * (2 * plan.hidden + 2 * plan.qOut + 2 * plan.kvOut + 2 * plan.intermediate) + tokens * tokens);
}
