import { bytesOf } from "../../formats/packed-array.js";
import type { Hessian } from "../../formats/second-order/hessian.js";
import { fillRows, rowDots, type LayerEnergies, type LayerEnergyBackend } from "../../converters/int-group/layer-errors.js";
import type { DevicePointer } from "../cuda/driver.js";
import type { GpuEngine } from "../engine.js";
import { gemmF64 } from "./dgemm.js";

/**
 * The quantizers' per-layer report, tr(ΔW H ΔWᵀ) and tr(W H Wᵀ) (converters/int-group/
 * layer-errors.ts), with the products X·H on the GPU: H is uploaded once per layer, and W and
 * ΔW go up together as one [2·rows][K] float64 block, so each chunk is one product; the products
 * come back and are dotted with X on the host in the CPU's order. The CPU version on this
 * machine's matmul took 3.5 s of an 18 s GPTQ run of docs-llama-16m (N·K² multiply-adds twice per
 * linear); the result equals it to float64 rounding (test/kernels/energies.test.ts).
 */

/** Bytes of X (and of X·H) per chunk: bounds device and host memory whatever the layer. */
const CHUNK_BYTES = 128 * 2 ** 20;

/** `chunkBytes`: the bytes of X per product (tests make it small to cover the chunk boundaries). */
export function gpuLayerEnergies(engine: GpuEngine, chunkBytes = CHUNK_BYTES): LayerEnergyBackend {
  return (weight: Float32Array, quantized: Float32Array, N: number, K: number, hessian: Hessian): LayerEnergies => {
    if (N === 0 || K === 0) return { errorEnergy: 0, outputEnergy: 0 };
    const context = engine.context;
    const rows = Math.max(1, Math.min(N, Math.floor(chunkBytes / (2 * K * 8))));
    const x = new Float64Array(2 * rows * K);
    const product = new Float64Array(2 * rows * K);
    const pointers: DevicePointer[] = [];
    try {
      // An H in shared memory (a worker's) is copied out first: the FFI copy is relied on only for ordinary buffers.
      const h = context.upload(bytesOf(hessian.data.buffer instanceof SharedArrayBuffer ? hessian.data.slice() : hessian.data));
      pointers.push(h);
      const xDevice = context.alloc(x.byteLength);
      pointers.push(xDevice);
      const pDevice = context.alloc(product.byteLength);
      pointers.push(pDevice);
      let errorEnergy = 0;
      let outputEnergy = 0;
      for (let n0 = 0; n0 < N; n0 += rows) {
        const count = Math.min(rows, N - n0);
        const elements = count * K;
        // Rows 0 … count−1 of X hold W, rows count … 2·count−1 hold ΔW.
        fillRows(weight, quantized, n0 * K, elements, x.subarray(0, elements), x.subarray(elements, 2 * elements));
        context.uploadInto(xDevice, bytesOf(x.subarray(0, 2 * elements)));
        gemmF64(engine, { m: 2 * count, n: K, k: K, alpha: 1, beta: 0, a: xDevice, lda: K, b: h, ldb: K, c: pDevice, ldc: K });
        context.download(pDevice, bytesOf(product.subarray(0, 2 * elements)));
        outputEnergy += rowDots(x, product, elements);
        errorEnergy += rowDots(x.subarray(elements), product.subarray(elements), elements);
      }
      return { errorEnergy, outputEnergy };
    } finally {
      for (const pointer of pointers) context.free(pointer);
    }
  };
}
