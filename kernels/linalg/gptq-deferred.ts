import { bytesOf } from "../../formats/packed-array.js";
import { KernelError } from "../../formats/errors.js";
import type { DeferredUpdates } from "../../formats/second-order/gptq-loop.js";
import type { DevicePointer } from "../cuda/driver.js";
import type { DeviceArray } from "../cuda/launch-checks.js";
import type { GpuEngine } from "../engine.js";

/**
 * GPTQ's deferred updates on the GPU (formats/second-order/gptq-loop.ts, DeferredUpdates).
 *
 * The weight [size][rows] and the factor U [size][size] stay on the device for the whole loop.
 * Per block, the host downloads the block's columns (already updated), quantizes them column by
 * column with the in-block updates (O(block² · rows), the CPU's part), uploads the block's scaled
 * errors, and the device applies U[block, later]ᵀ · errors to every later column: O(size² · rows)
 * in all, nearly every flop of the loop. Transfers are one block of columns each way per block.
 *
 * The product is float64 like the CPU's but summed in another order, so the weights agree with
 * the CPU path to rounding (≈ 1e-15 relative), not bit for bit; a code can differ where a weight
 * sits on a rounding boundary.
 *
 * Launch: 256 threads per 64 × 64 tile of the updated columns (kernels/linalg/linalg.cu).
 */

const TILE = 64;
const THREADS = 256;

/**
 * The device side, for a loop that keeps the whole weight resident (kernels/second-order/resident-loop.ts):
 * after begin(), the weight [size][rows] and U [size][size] as device arrays, and the deferred
 * product on scaled errors already on the device.
 */
export interface GpuDeferredUpdates extends DeferredUpdates {
  weightPointer(): DeviceArray;
  factorPointer(): DeviceArray;
  /** Columns target … size−1 −= U[from:to, target:]ᵀ · errors, errors: (to − from) × rows doubles on the device. */
  applyOnDevice(errors: DeviceArray, from: number, to: number, target: number): void;
  release(): void;
}

export function gpuDeferredUpdates(engine: GpuEngine): GpuDeferredUpdates {
  const context = engine.context;
  const module = engine.module("linalg");
  let weight: DevicePointer | undefined;
  let factor: DevicePointer | undefined;
  let errors: DevicePointer | undefined;
  let errorsBytes = 0;
  let rows = 0;
  let size = 0;
  const release = () => {
    for (const pointer of [weight, factor, errors]) if (pointer !== undefined) context.free(pointer);
    weight = factor = errors = undefined;
  };
  const begun = (what: string): { weight: DevicePointer; factor: DevicePointer } => {
    if (weight === undefined || factor === undefined) throw new KernelError("LAUNCH_REFUSED", `gptq deferred updates: ${what} before begin`);
    return { weight, factor };
  };
  /** The product on `blockErrors` (device, (to − from) × rows), after the caller's range checks. */
  const launchProduct = (blockErrors: DevicePointer, from: number, to: number, target: number) => {
    const { weight: w, factor: u } = begun("apply");
    const columns = size - target;
    module.launch("lq_gemm_f64_at_b_sub", { grid: [Math.ceil(rows / TILE), Math.ceil(columns / TILE)], block: [THREADS] }, [
      { pointer: w + BigInt(target * rows * 8) },
      { pointer: u + BigInt((from * size + target) * 8) },
      { pointer: blockErrors },
      { i64: columns }, { i64: rows }, { i64: to - from }, { i64: rows }, { i64: size }, { i64: rows },
    ]);
  };
  return {
    begin(weightT, u, rowCount, columnCount) {
      release();
      [rows, size] = [rowCount, columnCount];
      weight = context.upload(bytesOf(weightT));
      factor = context.upload(bytesOf(u));
    },
    fetch(weightT, from, to) {
      if (weight === undefined) throw new KernelError("LAUNCH_REFUSED", "gptq deferred updates: fetch before begin");
      if (to > from) context.download(weight + BigInt(from * rows * 8), bytesOf(weightT.subarray(from * rows, to * rows)));
    },
    apply(blockErrors, from, to, target) {
      if (to <= from || target >= size || rows === 0) return;
      begun("apply");
      const errorBytes = (to - from) * rows * 8;
      if (errors === undefined || errorsBytes < errorBytes) {
        if (errors !== undefined) context.free(errors);
        errors = context.alloc(errorBytes);
        errorsBytes = errorBytes;
      }
      context.uploadInto(errors, bytesOf(blockErrors.subarray(0, (to - from) * rows)));
      launchProduct(errors, from, to, target);
    },
    weightPointer: () => ({ pointer: begun("weightPointer").weight, elements: size * rows }),
    factorPointer: () => ({ pointer: begun("factorPointer").factor, elements: size * size }),
    applyOnDevice(blockErrors, from, to, target) {
      if (to <= from || target >= size || rows === 0) return;
      // The errors come from another module's buffer: the range is checked here, not trusted.
      if (!(Number.isSafeInteger(from) && Number.isSafeInteger(to) && Number.isSafeInteger(target) && from >= 0 && to <= target && target <= size)) {
        throw new KernelError("LAUNCH_REFUSED", "gptq deferred updates: block columns out of range", { expected: `0 ≤ from < to ≤ target ≤ ${size}`, actual: [from, to, target] });
      }
      if (!(blockErrors.pointer > 0n && blockErrors.elements >= (to - from) * rows)) {
        throw new KernelError("LAUNCH_REFUSED", "gptq deferred updates: the errors buffer is smaller than the block", { expected: `≥ ${(to - from) * rows} doubles`, actual: blockErrors.elements });
      }
      launchProduct(blockErrors.pointer, from, to, target);
    },
    end(weightT, from) {
      this.fetch(weightT, from, size);
      release();
    },
    release,
  };
}
