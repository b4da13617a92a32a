import { KernelError } from "../../formats/errors.js";
import type { DeviceInputObserver } from "../../converters/hessians/calibrate.js";
import type { DevicePointer } from "../cuda/driver.js";
import type { GpuEngine } from "../engine.js";
import { allocateLayerBuffers, layerBufferBytesPerWindow, type Activations } from "./activations.js";
import { launchEmbed, type DeviceArray } from "./launch.js";
import type { ForwardPlan } from "./plan.js";

/**
 * Sequential calibration's hidden states kept on the device, and its layer passes run over
 * batches of windows (converters/hessians/sequential.ts). The host path moves every window's
 * state up for each of a layer's five passes (four observations and the advance) and runs ~30
 * launches and cuBLAS calls per window and pass: on docs-llama-16m's 128 × 512-token windows,
 * 3.6 s of a 18 s GPTQ run went to those uploads and calls. Here the states never leave the
 * device, and a batch of B equal-length windows is one [B·T] row block: the linears are one
 * product each, the attention one strided-batched product per head, the softmax one launch.
 *
 * The products sum in other orders than one window at a time (cuBLAS picks its kernel by
 * shape), so the states agree with the host path's to float64 rounding, not bit for bit.
 */

/** The buffers a layer pass reads and writes: Activations without the head's. */
export type LayerActivations = Pick<Activations, "hidden" | "normed" | "q" | "k" | "v" | "attended" | "gate" | "up" | "scores" | "cos" | "sin" | "status">;

/** What the forward lends the resident states. */
export interface ResidentHost {
  engine: GpuEngine;
  plan: ForwardPlan;
  /** The embedding table on the device. */
  embed: DeviceArray;
  /** The forward's rotary table and status word (the batch reuses them). */
  cos: DeviceArray;
  sin: DeviceArray;
  status: DeviceArray;
  /** Checks a window's ids against the vocabulary (before any upload). */
  checkIds(ids: Int32Array): void;
  /** Uploads the layer's swapped-in weights. */
  syncLayerWeights(index: number): void;
  /** Layer `index` over act.hidden, `windows` windows of `tokens` rows each, in place. */
  runLayer(index: number, act: LayerActivations, tokens: number, windows: number, observe: DeviceInputObserver | undefined): void;
  /** Throws when the status word holds an error. */
  checkStatus(what: string): void;
}

export interface ResidentOptions {
  /** Device bytes a batch's buffers may take (default: an eighth of the device's memory, at most 4 GiB). */
  batchBytes?: number;
}

export interface ResidentStates {
  /**
   * Runs layer `index` over every window without changing the states, handing each linear input
   * of a batch to `observe` where it lies. An error `isStop` accepts ends the batch's pass (the
   * observer's way of saying it has seen what it needs), any other propagates.
   */
  observe(index: number, observe: DeviceInputObserver, isStop: (error: unknown) => boolean): void;
  /** Moves every window's state through layer `index`. */
  advance(index: number): void;
  release(): void;
}

/** Consecutive windows of one length, at most `capacity` of them, and where their states lie. */
interface Batch {
  tokens: number;
  windows: number;
  states: DevicePointer;
}

const MAX_BATCH_BYTES = 4 * 2 ** 30;

/**
 * The states of `windows`, embedded on the device, or undefined when they do not fit in a quarter
 * of the device's memory beside one window's batch buffers (the caller keeps them on the host then).
 */
export function openResidentStates(host: ResidentHost, windows: readonly Int32Array[], options: ResidentOptions = {}): ResidentStates | undefined {
  const { engine, plan } = host;
  const context = engine.context;
  const total = context.info.totalBytes;
  const maxTokens = Math.max(0, ...windows.map((w) => w.length));
  if (maxTokens === 0 || maxTokens > plan.maxTokens) return undefined;
  for (const ids of windows) host.checkIds(ids);
  const stateBytes = windows.reduce((sum, w) => sum + w.length, 0) * plan.hidden * 8;
  const windowBytes = layerBufferBytesPerWindow(plan, maxTokens);
  const batchBytes = options.batchBytes ?? Math.min(MAX_BATCH_BYTES, total / 8);
  if (stateBytes + windowBytes > total / 4 || windowBytes > batchBytes) return undefined;
  const capacity = Math.max(1, Math.min(65535, Math.floor(batchBytes / windowBytes), windows.length));
  const owned: DevicePointer[] = [];
  const alloc = (elements: number, elementBytes: number): DeviceArray => {
    const pointer = context.alloc(elements * elementBytes);
    owned.push(pointer);
    return { pointer, elements };
  };
  const release = () => {
    for (const pointer of owned.splice(0)) context.free(pointer);
  };
  context.zero(host.status.pointer, 4);
  try {
    const act: LayerActivations = { ...allocateLayerBuffers(plan, maxTokens, capacity, alloc), cos: host.cos, sin: host.sin, status: host.status };
    const ids = alloc(capacity * maxTokens, 4);
    const batches = planBatches(windows, capacity).map(({ from, to }): Batch => {
      const tokens = windows[from]!.length;
      const states = alloc((to - from) * tokens * plan.hidden, 8).pointer;
      // Embed the batch's windows into their states: the ids of every window back to back.
      const joined = new Int32Array((to - from) * tokens);
      for (let w = from; w < to; w++) joined.set(windows[w]!, (w - from) * tokens);
      context.uploadInto(ids.pointer, new Uint8Array(joined.buffer));
      launchEmbed(engine, ids, host.embed, { pointer: states, elements: joined.length * plan.hidden }, joined.length, plan.hidden, plan.vocab, host.status);
      return { tokens, windows: to - from, states };
    });
    host.checkStatus("embedding the calibration windows");
    return new DeviceStates(host, act, batches, release);
  } catch (error) {
    release();
    if (error instanceof KernelError && error.code === "OUT_OF_MEMORY") return undefined;
    throw error;
  }
}

/** Runs of consecutive equal-length windows, cut at `capacity`. */
export function planBatches(windows: readonly Int32Array[], capacity: number): { from: number; to: number }[] {
  const batches: { from: number; to: number }[] = [];
  for (let from = 0; from < windows.length; ) {
    let to = from + 1;
    while (to < windows.length && to - from < capacity && windows[to]!.length === windows[from]!.length) to++;
    if (windows[from]!.length > 0) batches.push({ from, to });
    from = to;
  }
  return batches;
}

class DeviceStates implements ResidentStates {
  constructor(private readonly host: ResidentHost, private readonly act: LayerActivations, private readonly batches: Batch[], readonly release: () => void) {}

  observe(index: number, observe: DeviceInputObserver, isStop: (error: unknown) => boolean): void {
    const { host, act } = this;
    host.syncLayerWeights(index);
    host.engine.context.zero(host.status.pointer, 4);
    for (const batch of this.batches) {
      // The layer adds into its input in place: it runs on a copy, the state stays at the boundary.
      host.engine.context.copy(act.hidden.pointer, batch.states, batch.windows * batch.tokens * host.plan.hidden * 8);
      try {
        host.runLayer(index, act, batch.tokens, batch.windows, observe);
      } catch (error) {
        if (!isStop(error)) throw error;
      }
    }
    host.checkStatus(`layer ${index} over the resident windows`);
  }

  advance(index: number): void {
    const { host, act } = this;
    host.syncLayerWeights(index);
    host.engine.context.zero(host.status.pointer, 4);
    for (const batch of this.batches) {
      const elements = batch.windows * batch.tokens * host.plan.hidden;
      host.runLayer(index, { ...act, hidden: { pointer: batch.states, elements } }, batch.tokens, batch.windows, undefined);
    }
    host.checkStatus(`layer ${index} over the resident windows`);
  }
}
