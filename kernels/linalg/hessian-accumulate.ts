import { bytesOf } from "../../formats/packed-array.js";
import type { HessianProducts } from "../../converters/hessians/calibrate.js";
import { KernelError } from "../../formats/errors.js";
import type { DevicePointer } from "../cuda/driver.js";
import type { LaunchShape } from "../cuda/module.js";
import type { GpuEngine } from "../engine.js";

/**
 * Calibration's H += XᵀX on the GPU (converters/hessians/calibrate.ts, HessianProducts).
 *
 * One float64 H [d][d] per layer input stays on the device for the whole calibration. Each batch
 * of inputs X [tokens][d] is rounded to float32 on the host, copied into one staging buffer and
 * added by lq_syrk_f32_to_f64_add (kernels/linalg/linalg.cu); result() downloads H once. A batch
 * moves tokens·d·4 bytes for d²·tokens flops, so the copies stay small next to the kernel.
 *
 * Precision: the sums are float64 like the CPU's, and a float32 product is exact in float64, but
 * X itself is float32 here (the precision of the model; the CPU forward keeps its activations in
 * float64). An element of H then differs from the CPU's by up to about 2⁻²³ · Σ_t |x_ti · x_tj|
 * from the rounding of X, plus float64 rounding of sums taken in another order. Given float32 X
 * on both sides, only the latter remains: |ΔH| ≤ tokens · 2⁻⁵² · Σ_t |x_ti · x_tj|.
 *
 * Launch: syrkLaunch, one 256-thread block per 64 × 64 tile on or above the diagonal.
 */

export const SYRK_KERNEL = "lq_syrk_f32_to_f64_add";
/** linalg.cu SYRK_TILE: H elements per tile side. */
const TILE = 64;
/** linalg.cu LQ_SYRK_THREADS: each thread sums a 4 × 4 sub-tile of the 64 × 64 tile. */
const THREADS = 256;
/** The CUDA limit on gridDim.y; the grid is tiles × tiles, so it caps d at 65535 · 64. */
const MAX_GRID_Y = 65535;

/**
 * The launch of lq_syrk_f32_to_f64_add for H [d][d] += scale · XᵀX, X `tokens` rows of `ldx`
 * floats (`xElements` in its buffer), after checking every size the kernel trusts:
 * - grid T × T, T = ⌈d / 64⌉: one block per 64 × 64 tile of H. The T(T − 1)/2 blocks below the
 *   diagonal return at once (the mirror tile's block writes theirs), so the flops are about
 *   d²·tokens, half of a full product. A triangular 1-D grid would skip those blocks too, but needs a square
 *   root per block to find its tile; an empty block costs less.
 * - 256 threads, each summing 4 rows × 4 columns in registers as the GEMM beside it does, but
 *   with the columns 16 apart so that a warp's shared-memory reads are contiguous (78 registers
 *   on sm_90: 3 blocks per multiprocessor).
 * - 16 KiB of static shared memory: 16 tokens × 64 features of each side, widened to float64.
 */
export function syrkLaunch(d: number, tokens: number, ldx: number, xElements: number, scale: number): LaunchShape {
  const refuse = (detail: string, expected: unknown, actual: unknown) => new KernelError("LAUNCH_REFUSED", `hessian accumulate d=${d}, ${tokens} tokens: ${detail}`, { expected, actual });
  if (!(Number.isSafeInteger(d) && d >= 1)) throw refuse("the feature count must be a positive integer", "d ≥ 1", d);
  if (!(Number.isSafeInteger(tokens) && tokens >= 1)) throw refuse("the token count must be a positive integer", "tokens ≥ 1", tokens);
  if (!(Number.isSafeInteger(ldx) && ldx >= d)) throw refuse("the row stride of X must hold a row", `ldx ≥ ${d}`, ldx);
  if (!Number.isFinite(scale)) throw refuse("the scale must be finite", "a finite number", scale);
  const tiles = Math.ceil(d / TILE);
  if (tiles > MAX_GRID_Y) throw refuse("more tiles per side than the grid allows", `⌈d / ${TILE}⌉ ≤ ${MAX_GRID_Y}`, tiles);
  // The kernel reads x[t · ldx + i] for t < tokens, i < d: the last row must end inside X.
  const needed = (tokens - 1) * ldx + d;
  if (!(Number.isSafeInteger(needed) && xElements >= needed)) throw refuse("X ends before its last row", `≥ ${needed} floats`, xElements);
  return { grid: [tiles, tiles], block: [THREADS] };
}

/** cuda/module.ts has no float64 KernelArgument; a double argument is its 8 bytes, so it travels as the int64 of the same bits. */
function doubleBits(value: number): bigint {
  return new BigInt64Array(new Float64Array([value]).buffer)[0]!;
}

/**
 * Launches H += scale · XᵀX on device buffers: h holds d² doubles, x `xElements` floats (the
 * caller vouches for both; every size is checked against them here). Asynchronous, like every
 * launch: a download or synchronize waits for it.
 */
export function launchSyrk(engine: GpuEngine, h: DevicePointer, x: DevicePointer, d: number, tokens: number, ldx: number, xElements: number, scale = 1): void {
  const shape = syrkLaunch(d, tokens, ldx, xElements, scale);
  engine.module("linalg").launch(SYRK_KERNEL, shape, [{ pointer: h }, { pointer: x }, { i64: d }, { i64: tokens }, { i64: ldx }, { i64: doubleBits(scale) }]);
}


/** One device H per layer input, by key (the input's stored name). */
export class GpuHessians implements HessianProducts {
  private readonly hessians = new Map<string, { pointer: DevicePointer; size: number }>();
  /** Device X of the batch being added: one buffer, grown to the largest batch. */
  private staging: DevicePointer | undefined;
  private stagingBytes = 0;
  /** Host float32 X, reused across batches. */
  private narrowed = new Float32Array(0);

  constructor(private readonly engine: GpuEngine) {}

  /** HessianProducts: X rounded to float32 (to nearest even), then accumulate. */
  add(key: string, input: Float64Array, tokens: number, size: number): void {
    const count = this.checkBatch(key, input.length, tokens, size);
    if (this.narrowed.length < count) this.narrowed = new Float32Array(count);
    const x = this.narrowed.subarray(0, count);
    x.set(input.subarray(0, count));
    this.accumulate(key, x, tokens, size);
  }

  /**
   * H of `key` [size][size] += scale · XᵀX for float32 X [tokens][size]. Returns once X is on the
   * device (the copy from pageable memory is synchronous), so `x` may be reused at once.
   */
  accumulate(key: string, x: Float32Array, tokens: number, size: number, scale = 1): void {
    const count = this.checkBatch(key, x.length, tokens, size);
    const h = this.hessianOf(key, size);
    if (tokens === 0) return;
    const staging = this.stagingFor(count);
    this.engine.context.uploadInto(staging, bytesOf(x.subarray(0, count)));
    launchSyrk(this.engine, h, staging, size, tokens, size, count, scale);
  }

  /**
   * HessianProducts.addOnDevice: X [tokens][size] already on the device as float64 (`elements`
   * doubles at `input`, a GPU forward's activation), rounded to float32 there and accumulated:
   * the same H as add() with the same values, and nothing crosses the bus. Asynchronous.
   */
  addOnDevice(key: string, input: DevicePointer, elements: number, tokens: number, size: number): void {
    const count = this.checkBatch(key, elements, tokens, size);
    const h = this.hessianOf(key, size);
    if (tokens === 0) return;
    const staging = this.stagingFor(count);
    this.engine.module("linalg").launch("lq_narrow_f64_to_f32", { grid: [Math.ceil(count / 256)], block: [256] }, [{ pointer: input }, { pointer: staging }, { i64: count }]);
    launchSyrk(this.engine, h, staging, size, tokens, size, count);
  }

  /** The staging buffer, grown to hold `count` floats. */
  private stagingFor(count: number): DevicePointer {
    const bytes = count * 4;
    const context = this.engine.context;
    if (this.staging === undefined || this.stagingBytes < bytes) {
      if (this.staging !== undefined) context.free(this.staging);
      this.staging = undefined;
      this.staging = context.alloc(bytes);
      this.stagingBytes = bytes;
    }
    return this.staging;
  }

  /** HessianProducts: H of `key` into `into` (size × size); zeros for a key never added to. */
  result(key: string, into: Float64Array): void {
    const h = this.hessians.get(key);
    if (h === undefined) {
      into.fill(0);
      return;
    }
    if (into.length !== h.size * h.size) throw this.refuse(key, "the host H has the wrong length", h.size * h.size, into.length);
    this.engine.context.download(h.pointer, bytesOf(into));
  }

  /** H of `key` as a new Float64Array [size][size]. */
  download(key: string): Float64Array {
    const h = this.hessians.get(key);
    if (h === undefined) throw this.refuse(key, "no H was accumulated under this key", "a key given to add or accumulate", key);
    const into = new Float64Array(h.size * h.size);
    this.result(key, into);
    return into;
  }

  /** Frees every device H and the staging buffer; the object can be used again afterwards. */
  release(): void {
    const context = this.engine.context;
    for (const h of this.hessians.values()) context.free(h.pointer);
    if (this.staging !== undefined) context.free(this.staging);
    this.hessians.clear();
    this.staging = undefined;
    this.stagingBytes = 0;
  }

  /** tokens × size after checking the batch's counts against each other and X's length. */
  private checkBatch(key: string, length: number, tokens: number, size: number): number {
    if (!(Number.isSafeInteger(size) && size >= 1)) throw this.refuse(key, "the feature count must be a positive integer", "size ≥ 1", size);
    if (!(Number.isSafeInteger(tokens) && tokens >= 0)) throw this.refuse(key, "the token count must be a non-negative integer", "tokens ≥ 0", tokens);
    const count = tokens * size;
    if (!(Number.isSafeInteger(count) && length >= count)) throw this.refuse(key, "X is shorter than tokens × size", `≥ ${count} values`, length);
    return count;
  }

  /** The device H of `key`, zeroed on first use; the same size as the earlier batches'. */
  private hessianOf(key: string, size: number): DevicePointer {
    const known = this.hessians.get(key);
    if (known !== undefined) {
      if (known.size !== size) throw this.refuse(key, "the feature count differs from the earlier batches'", known.size, size);
      return known.pointer;
    }
    // A physical fact first: H must fit in the device's memory (11008² doubles are 970 MB).
    const bytes = size * size * 8;
    const total = this.engine.context.info.totalBytes;
    if (bytes > total) throw this.refuse(key, `H of ${size}² doubles (${bytes} bytes) exceeds the device's memory`, `≤ ${total} bytes`, bytes);
    const pointer = this.engine.context.alloc(bytes);
    this.engine.context.zero(pointer, bytes);
    this.hessians.set(key, { pointer, size });
    return pointer;
  }

  private refuse(key: string, detail: string, expected: unknown, actual: unknown): KernelError {
    return new KernelError("LAUNCH_REFUSED", `hessian accumulate "${key}": ${detail}`, { tensor: key, expected, actual });
  }
}
