import { UsageError } from "../../formats/errors.js";
import { gemmAdd } from "../../formats/second-order/matmul.js";
import type { LinearInputObserver, LlamaForward } from "../../model/llama-forward.js";
import type { Linear } from "../../model/llama-weights.js";
import type { HessianEntry } from "./store.js";

/**
 * Hessians from real activations: calibration windows run through the decoder forward, and
 * every distinct linear input X (q/k/v share one, gate/up share one) adds XᵀX to its H, in
 * float64 with the token count. The entries are what writeHessianStore stores and every
 * quantizer's `--hessians` reads.
 *
 * Every layer sees the full-precision model's activations; sequential calibration, where later
 * layers see the outputs of already quantized ones, is sequential.ts (quantize --hessians sequential).
 */

/** Linears that read the same input as the named one (q_proj: k, v; gate_proj: up). */
function sharers(name: string): string[] {
  if (name.endsWith(".self_attn.q_proj")) return ["k_proj", "v_proj"].map((n) => name.replace(/q_proj$/, n));
  if (name.endsWith(".mlp.gate_proj")) return [name.replace(/gate_proj$/, "up_proj")];
  return [];
}

/**
 * Where the products H += XᵀX run. The default keeps every H in host memory and adds with
 * gemmAdd in float64; kernels/linalg/hessian-accumulate.ts keeps one H per layer input on the GPU
 * (X rounded to float32, sums in float64) and downloads it once, when result() asks. `key` is the
 * layer input's stored name, `input` X [tokens][size].
 */
export interface HessianProducts {
  /** H of `key` (size × size, zero before the first call) += XᵀX. */
  add(key: string, input: Float64Array, tokens: number, size: number): void;
  /** The same for X already in device memory (`elements` float64 at `input`): the GPU's, fed by a GPU forward. */
  addOnDevice?(key: string, input: bigint, elements: number, tokens: number, size: number): void;
  /** Writes H of `key` as accumulated so far into `into` (size × size). */
  result(key: string, into: Float64Array): void;
}

/** A linear's input handed over in device memory by a GPU forward: `elements` float64 at `input`, [tokens][inFeatures]. */
export type DeviceInputObserver = (linear: Linear, input: bigint, elements: number, tokens: number) => void;

export class HessianAccumulator {
  private readonly entries = new Map<string, HessianEntry>();

  /** `products`: where H += XᵀX runs (host memory when absent). */
  constructor(private readonly products?: HessianProducts) {}

  /** The observer to pass to LlamaForward.layer / run. */
  readonly observe: LinearInputObserver = (linear: Linear, input: Float64Array, tokens: number) => {
    const entry = this.entryOf(linear);
    const size = linear.inFeatures;
    // H += XᵀX: A = Xᵀ as a transposed view of X [tokens][size].
    if (this.products !== undefined) this.products.add(linear.name, input, tokens, size);
    else gemmAdd({ data: entry.hessian.data, offset: 0, rowStride: size }, { data: input, offset: 0, rowStride: size, transposed: true }, { data: input, offset: 0, rowStride: size }, size, tokens, size);
    entry.hessian.nSamples = (entry.hessian.nSamples ?? 0) + tokens;
  };

  /** Whether observeOnDevice works: the products run on the GPU (HessianProducts.addOnDevice). */
  get takesDeviceInputs(): boolean {
    return this.products?.addOnDevice !== undefined;
  }

  /** `observe` for an input a GPU forward holds in device memory (`elements` float64 at `input`). */
  readonly observeOnDevice: DeviceInputObserver = (linear, input, elements, tokens) => {
    const entry = this.entryOf(linear);
    if (this.products?.addOnDevice === undefined) throw new UsageError("BAD_ARGUMENT", "device inputs need GPU Hessian products", { tensor: linear.name });
    this.products.addOnDevice(linear.name, input, elements, tokens, linear.inFeatures);
    entry.hessian.nSamples = (entry.hessian.nSamples ?? 0) + tokens;
  };

  private entryOf(linear: Linear): HessianEntry {
    const size = linear.inFeatures;
    let entry = this.entries.get(linear.name);
    if (entry === undefined) {
      entry = { name: linear.name, aliases: sharers(linear.name), hessian: { size, data: new Float64Array(size * size), nSamples: 0 } };
      this.entries.set(linear.name, entry);
    }
    return entry;
  }

  /** Entries in the order the forward met them (layer by layer: q, o, gate, down). */
  result(): HessianEntry[] {
    if (this.products !== undefined) for (const e of this.entries.values()) this.products.result(e.name, e.hessian.data);
    return [...this.entries.values()];
  }
}

/** Runs one window through all decoder layers, showing `observe` every distinct linear input (the head is skipped: calibration needs no logits). */
export type WindowObserverRun = (ids: Int32Array, observe: LinearInputObserver) => void;

/** The CPU forward as a WindowObserverRun. */
export function cpuWindowRun(forward: LlamaForward): WindowObserverRun {
  return (ids, observe) => {
    const hidden = forward.embed(ids);
    for (let l = 0; l < forward.weights.layers.length; l++) forward.layer(l, hidden, ids.length, observe);
  };
}

/**
 * Runs every window through all decoder layers, on the CPU forward or any other run with its
 * observer contract (kernels/forward/gpu-forward.ts observeLinearInputs), accumulating H += XᵀX.
 */
export function calibrateHessians(forward: LlamaForward | WindowObserverRun, windows: readonly Int32Array[], onWindow?: (index: number) => void, products?: HessianProducts): HessianEntry[] {
  const run = typeof forward === "function" ? forward : cpuWindowRun(forward);
  const accumulator = new HessianAccumulator(products);
  windows.forEach((ids, i) => {
    run(ids, accumulator.observe);
    onWindow?.(i);
  });
  return accumulator.result();
}
