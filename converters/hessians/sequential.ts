import { totalmem } from "node:os";
import { convertFloatBytes } from "../../formats/dense/convert.js";
import { FormatError, UsageError } from "../../formats/errors.js";
import { viewAs } from "../../formats/packed-array.js";
import type { Hessian, HessianSource } from "../../formats/second-order/hessian.js";
import { LlamaForward, type LinearInputObserver } from "../../model/llama-forward.js";
import type { Linear, LlamaWeights } from "../../model/llama-weights.js";
import type { Checkpoint, TensorEntry } from "../checkpoint.js";
import { HessianAccumulator, type DeviceInputObserver, type HessianProducts } from "./calibrate.js";
import { quantizedOnce } from "./quantize-once.js";
import type { ResidentStates } from "../../kernels/forward/resident-states.js";

/**
 * Sequential calibration (GPTQ's llama.py, SpQR's and VPTQ's default): layer l's Hessians come
 * from the activations of the model whose layers 0 … l−1 are already quantized, so each layer
 * is fitted to the inputs it will really see. Every calibration window's hidden state is kept at
 * the current layer boundary; it advances through a layer once all of that layer's linears are
 * quantized, with their dequantized weights (the entry's reference dequant, exactly what `lmpack
 * eval` computes with).
 *
 * `trueSequential` (GPTQ's `--true-sequential`, AutoGPTQ's default) applies the same idea inside
 * a layer: [q, k, v] → [o] → [gate, up] → [down], each group's H taken with the groups before it
 * already quantized. Without it, all of a layer's H come from its full-precision weights.
 *
 * The quantizers ask `get(name)` in whatever order their exporter pulls layers (storage order is
 * often alphabetical: layer 10 before layer 2, mlp before self_attn). `get` therefore first pulls
 * every linear it depends on through the quantized view (`follow`), in model order, which
 * quantizes them (once: quantize-once.ts); a layer's H is thus always ready before the layer.
 */

export interface SequentialOptions {
  /** Within-layer order [q,k,v] → [o] → [gate,up] → [down] (default true). */
  trueSequential?: boolean;
  /** Cap on the kept hidden states in bytes (default: SEQUENTIAL_STATE_MAX_BYTES or a quarter of this machine's memory). */
  maxStateBytes?: number;
  /** config.json's location, for messages. */
  file?: string;
  /** Called when the hidden states have advanced through a layer. */
  onLayerDone?: (layer: number, seconds: number) => void;
  /**
   * The forward that runs the layers (default: the CPU's LlamaForward over `weights`). It must
   * read the weights object it is given as it is at each call: linears get their quantized
   * weights swapped in as layers finish (kernels/forward/gpu-forward.ts re-uploads them).
   */
  forward?: (weights: LlamaWeights, maxTokens: number, file: string | undefined) => LayerForward;
  /** Where each layer's H += XᵀX runs: a fresh accumulator per layer pass, released after (default: host memory). */
  products?: () => HessianProducts & { release(): void };
  /**
   * Keep the hidden states on the device when the forward offers it (LayerForward.residentStates)
   * and the products take device inputs (default true; false keeps the per-window host path).
   */
  resident?: boolean;
}

/** What sequential calibration needs of a forward: LlamaForward's embed and layer. */
export interface LayerForward {
  embed(ids: Int32Array): Float64Array;
  layer(index: number, hidden: Float64Array, tokens: number, observe?: LinearInputObserver): void;
  /** A GPU forward's: layer() for observation only, inputs handed over in device memory, `hidden` left as it is. */
  observeLayerOnDevice?(index: number, hidden: Float64Array, tokens: number, observe: DeviceInputObserver): void;
  /** A GPU forward's: every window's state on the device, layers run over batches of windows; undefined when they do not fit. */
  residentStates?(windows: readonly Int32Array[]): ResidentStates | undefined;
  /** Frees what the forward holds (a GPU forward's device buffers). */
  release?(): void;
}

/**
 * Hidden states are windows × tokens × hidden float64 (128 × 2048 × 256 for docs-llama-16m:
 * 0.5 GiB; a 7B model's 4096-wide states at the same settings: 8 GiB). Beyond this the CPU forward
 * would take days anyway, and the float64 weights already hold up to 60 % of memory.
 */
export const SEQUENTIAL_STATE_MAX_BYTES = 8 * 2 ** 30;
const STATE_MEMORY_SHARE = 0.25;

/** Where a linear sits: its decoder layer and its true-sequential group (0 q/k/v, 1 o, 2 gate/up, 3 down). */
interface Site {
  layer: number;
  group: number;
  linear: Linear;
}

const GROUP_COUNT = 4;
const LAST_GROUP = GROUP_COUNT - 1;

/** Thrown by the observer to stop a layer once the wanted inputs are seen (GPTQ's `Catcher` does the same). */
const SEEN_ENOUGH = Symbol("seen enough");

export class SequentialHessians implements HessianSource {
  private readonly forward: LayerForward;
  /** Every window's hidden state on the host, or empty when `resident` holds them. */
  private readonly states: Float64Array[];
  private readonly resident: ResidentStates | undefined;
  private readonly trueSequential: boolean;
  private readonly sites = new Map<string, Site>();
  /** Linears of layer ≥ the current one, in model order, with their full-precision weights. */
  private readonly originals = new Map<string, Float64Array>();
  /** Resolved linears: their dequantized weight, or undefined where the view leaves them dense. */
  private readonly quantized = new Map<string, Float64Array | undefined>();
  private readonly resolving = new Map<string, Promise<void>>();
  /** H of the current layer's inputs computed so far, by linear name (aliases included). */
  private readonly cache = new Map<string, Hessian>();
  private entries: Map<string, TensorEntry> | undefined;
  /** The layer whose inputs `states` hold. */
  private current = 0;

  /** Takes `weights` over: its linears are replaced by their quantized versions as layers finish. */
  constructor(weights: LlamaWeights, private readonly windows: readonly Int32Array[], private readonly options: SequentialOptions = {}) {
    if (windows.length === 0) throw new UsageError("BAD_ARGUMENT", "sequential calibration needs at least one window");
    this.trueSequential = options.trueSequential ?? true;
    const maxTokens = Math.max(...windows.map((w) => w.length));
    this.forward = options.forward === undefined ? new LlamaForward(weights, maxTokens, options.file) : options.forward(weights, maxTokens, options.file);
    try {
      this.resident = options.resident !== false && productsTakeDeviceInputs(options.products) ? this.forward.residentStates?.(windows) : undefined;
      if (this.resident === undefined) checkHostStateBytes(windows, weights.config.hiddenSize, options.maxStateBytes);
    } catch (error) {
      this.forward.release?.();
      throw error;
    }
    weights.layers.forEach((w, layer) => {
      const groups = [[w.q, w.k, w.v], [w.o], [w.gate, w.up], [w.down]];
      groups.forEach((linears, group) => linears.forEach((linear) => {
        this.sites.set(linear.name, { layer, group, linear });
        this.originals.set(linear.name, linear.weight);
      }));
    });
    this.states = this.resident === undefined ? windows.map((ids) => this.forward.embed(ids)) : [];
  }

  /**
   * The quantized view whose layers feed the later ones: pass the view the quantizer built over
   * the same source (with this object as its `hessians`), and export the view returned here.
   */
  follow(quantized: Checkpoint): Checkpoint {
    const once = quantizedOnce(quantized);
    this.entries = new Map(once.tensors.map((t) => [t.name, t]));
    return once;
  }

  /** Releases the forward (the quantize commands close their Hessian source when done). */
  async close(): Promise<void> {
    this.resident?.release();
    this.forward.release?.();
  }

  async get(linearName: string, inFeatures: number): Promise<Hessian | undefined> {
    const site = this.sites.get(linearName);
    if (site === undefined) throw new UsageError("BAD_ARGUMENT", "sequential calibration covers the Llama decoder's q/k/v/o/gate/up/down linears; this is not one", { tensor: linearName });
    if (site.linear.inFeatures !== inFeatures) throw new FormatError("SHAPE_SIZE_MISMATCH", "the quantizer's layer width differs from the forward's", { tensor: linearName, expected: site.linear.inFeatures, actual: inFeatures });
    // Dependencies in model order: each is quantized (asking this object for its own H) before the next.
    const bound = this.trueSequential ? site.group : 0;
    for (const [name, other] of this.sites) {
      if (other.layer > site.layer || (other.layer === site.layer && other.group >= bound)) continue;
      await this.resolve(name);
    }
    return this.hessianOf(site);
  }

  /** Pulls `name` through the quantized view once and keeps its dequantized weight. */
  private resolve(name: string): Promise<void> {
    let pending = this.resolving.get(name);
    if (pending === undefined) {
      pending = this.fetchQuantized(name);
      this.resolving.set(name, pending);
    }
    return pending;
  }

  private async fetchQuantized(name: string): Promise<void> {
    if (this.entries === undefined) throw new UsageError("BAD_ARGUMENT", "sequential calibration needs the quantized view: call follow() with it before quantizing", { tensor: name });
    const entry = this.entries.get(`${name}.weight`);
    if (entry === undefined) throw new FormatError("TENSOR_MISSING", "the quantized view lacks a linear the forward has", { tensor: `${name}.weight` });
    // A linear the quantizer does not select stays as it is.
    this.quantized.set(name, entry.packed === undefined ? undefined : await widen(entry));
  }

  /** H for `site`'s input, from the states at its layer (synchronous: no other call interleaves). */
  private hessianOf(site: Site): Hessian {
    if (site.layer < this.current) throw new UsageError("BAD_ARGUMENT", `sequential calibration has moved past layer ${site.layer}: each linear's Hessian can be asked for only before its layer is done`, { tensor: site.linear.name });
    while (this.current < site.layer) this.advance();
    const cached = this.cache.get(site.linear.name);
    if (cached !== undefined) return cached;
    this.observe(site.layer, this.trueSequential ? site.group : undefined);
    return this.cache.get(site.linear.name)!;
  }

  /**
   * Runs layer `layer` on a copy of every state, with the groups before `group` quantized, and
   * stores the H of `group`'s inputs (every group's when `group` is undefined).
   */
  private observe(layer: number, group: number | undefined): void {
    this.useWeights(layer, group ?? 0);
    const products = this.options.products?.();
    try {
      this.observeWith(new HessianAccumulator(products), layer, group);
    } finally {
      products?.release();
    }
  }

  private observeWith(accumulator: HessianAccumulator, layer: number, group: number | undefined): void {
    const last = group ?? LAST_GROUP;
    /** Hands a linear's input to `record` when it is one of `group`'s, and stops the layer after the last group wanted. */
    const filtered = (linear: Linear, record: () => void): void => {
      const seen = this.sites.get(linear.name)!.group;
      if (group !== undefined && seen !== group) return;
      record();
      if (seen === last) throw SEEN_ENOUGH;
    };
    // A GPU forward and GPU products: the inputs never leave the device, and the state is not changed.
    const onDevice = this.forward.observeLayerOnDevice !== undefined && accumulator.takesDeviceInputs ? this.forward.observeLayerOnDevice.bind(this.forward) : undefined;
    const deviceObserver: DeviceInputObserver = (linear, input, elements, tokens) => filtered(linear, () => accumulator.observeOnDevice(linear, input, elements, tokens));
    const hostObserver: LinearInputObserver = (linear, input, tokens) => filtered(linear, () => accumulator.observe(linear, input, tokens));
    if (this.resident !== undefined) this.resident.observe(layer, deviceObserver, (error) => error === SEEN_ENOUGH);
    let scratch = new Float64Array(0);
    if (this.resident === undefined) this.windows.forEach((ids, w) => {
      const state = this.states[w]!;
      try {
        if (onDevice !== undefined) {
          onDevice(layer, state, ids.length, deviceObserver);
          return;
        }
        // The layer adds into its input in place; the state must stay at the layer boundary.
        if (scratch.length !== state.length) scratch = new Float64Array(state.length);
        scratch.set(state);
        this.forward.layer(layer, scratch, ids.length, hostObserver);
      } catch (error) {
        if (error !== SEEN_ENOUGH) throw error;
      }
    });
    for (const entry of accumulator.result()) {
      for (const name of [entry.name, ...entry.aliases]) this.cache.set(name, entry.hessian);
    }
  }

  /** Moves every state through the current layer with all its linears quantized. */
  private advance(): void {
    const started = performance.now();
    const layer = this.current;
    this.useWeights(layer, GROUP_COUNT);
    if (this.resident !== undefined) this.resident.advance(layer);
    else this.windows.forEach((ids, w) => this.forward.layer(layer, this.states[w]!, ids.length));
    for (const [name, site] of this.sites) {
      if (site.layer !== layer) continue;
      // The layer is final now: its full-precision weights are no longer needed.
      this.originals.delete(name);
      this.quantized.delete(name);
    }
    this.cache.clear();
    this.current++;
    this.options.onLayerDone?.(layer, (performance.now() - started) / 1000);
  }

  /** Layer `layer`'s linears: quantized in groups before `group`, full precision from `group` on. */
  private useWeights(layer: number, group: number): void {
    for (const [name, site] of this.sites) {
      if (site.layer !== layer) continue;
      if (site.group >= group) {
        site.linear.weight = this.originals.get(name)!;
        continue;
      }
      if (!this.quantized.has(name)) throw new UsageError("BAD_ARGUMENT", "sequential calibration needs this linear quantized first (internal ordering error)", { tensor: name });
      site.linear.weight = this.quantized.get(name) ?? this.originals.get(name)!;
    }
  }
}

/** Whether `products` accumulate inputs handed over in device memory (the resident states hand over nothing else). */
function productsTakeDeviceInputs(products: SequentialOptions["products"]): boolean {
  if (products === undefined) return false;
  const probe = products();
  try {
    return probe.addOnDevice !== undefined;
  } finally {
    probe.release();
  }
}

/** The host states' bytes against their cap (SEQUENTIAL_STATE_MAX_BYTES or a quarter of this machine's memory). */
function checkHostStateBytes(windows: readonly Int32Array[], hidden: number, maxStateBytes: number | undefined): void {
  const stateBytes = windows.reduce((sum, w) => sum + w.length, 0) * hidden * 8;
  const cap = maxStateBytes ?? Math.min(SEQUENTIAL_STATE_MAX_BYTES, STATE_MEMORY_SHARE * totalmem());
  if (stateBytes > cap) {
    throw new UsageError("BAD_ARGUMENT", `sequential calibration keeps every window's hidden state in float64: ${(stateBytes / 2 ** 30).toFixed(2)} GiB for ${windows.length} windows, more than the ${(cap / 2 ** 30).toFixed(2)} GiB cap (use fewer --samples or a shorter --seq-len)`, { expected: `≤ ${cap} bytes`, actual: stateBytes });
  }
}

/** A quantized entry's dequantized weight, widened as loadLlamaWeights widens (through F32). */
async function widen(entry: TensorEntry): Promise<Float64Array> {
  const dtype = entry.dtype;
  if (dtype !== "F32" && dtype !== "F16" && dtype !== "BF16") throw new FormatError("DTYPE_UNSUPPORTED", "sequential calibration reads dequantized F32, F16 or BF16 weights", { tensor: entry.name, actual: dtype });
  return Float64Array.from(viewAs(convertFloatBytes(await entry.read(), dtype, "F32"), Float32Array));
}
