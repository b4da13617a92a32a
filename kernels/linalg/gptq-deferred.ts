import { KernelError } from "../../formats/errors.js";
import type { DeferredUpdates } from "../../formats/second-order/gptq-loop.js";
import type { DevicePointer } from "../cuda/driver.js";
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

export function gpuDeferredUpdates(engine: GpuEngine): DeferredUpdates & { release(): void } {
  const context = engine.context;
  const module = engine.module("linalg");
  let weight: DevicePointer | undefined;
  let factor: DevicePointer | undefined;
  let errors: DevicePointer | undefined;
  let errorsBytes = 0;
  let rows = 0;
  let size = 0;
  const bytes = (a: Float64Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const release = () => {
    for (const pointer of [weight, factor, errors]) if (pointer !== undefined) context.free(pointer);
    weight = factor = errors = undefined;
  };
  return {
    begin(weightT, u, rowCount, columnCount) {
      release();
      [rows, size] = [rowCount, columnCount];
      weight = context.upload(bytes(weightT));
      factor = context.upload(bytes(u));
    },
    fetch(weightT, from, to) {
      if (weight === undefined) throw new KernelError("LAUNCH_REFUSED", "gptq deferred updates: fetch before begin");
      if (to > from) context.download(weight + BigInt(from * rows * 8), bytes(weightT.subarray(from * rows, to * rows)));
    },
    apply(blockErrors, from, to, target) {
      if (to <= from || target >= size || rows === 0) return;
      if (weight === undefined || factor === undefined) throw new KernelError("LAUNCH_REFUSED", "gptq deferred updates: apply before begin");
      const errorBytes = (to - from) * rows * 8;
      if (errors === undefined || errorsBytes < errorBytes) {
        if (errors !== undefined) context.free(errors);
        errors = context.alloc(errorBytes);
        errorsBytes = errorBytes;
      }
      context.uploadInto(errors, bytes(blockErrors.subarray(0, (to - from) * rows)));
      const columns = size - target;
      module.launch("lq_gemm_f64_at_b_sub", { grid: [Math.ceil(rows / TILE), Math.ceil(columns / TILE)], block: [THREADS] }, [
        { pointer: weight + BigInt(target * rows * 8) },
        { pointer: factor + BigInt((from * size + target) * 8) },
        { pointer: errors },
        { i64: columns }, { i64: rows }, { i64: to - from }, { i64: rows }, { i64: size }, { i64: rows },
      ]);
    },
    end(weightT, from) {
      this.fetch(weightT, from, size);
      release();
    },
    release,
  };
}
