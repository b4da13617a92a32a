import type { PackedTensor } from "../converters/checkpoint.js";
import type { VerifyStats } from "./cuda/verify.js";
import type { GpuEngine } from "./engine.js";
import { dequantIntGroupGpu } from "./int-group/launch.js";

/**
 * One entry point for the verify command and the engine's users: a packed tensor's float32
 * weights dequantized on the GPU, verified against `reference` in the same pass. `undefined` when
 * its representation has no kernel yet (the caller falls back to the CPU reference).
 */
export interface GpuDequantResult {
  weights: Float32Array;
  stats: VerifyStats | undefined;
  kernelMilliseconds: number;
}

export async function dequantOnGpu(engine: GpuEngine, packed: PackedTensor, reference: Float32Array | undefined, tensorName: string): Promise<GpuDequantResult | undefined> {
  const options = { ...(reference === undefined ? {} : { reference }), tensorName };
  if (packed.representation === "int-group") {
    // The defaults of the entry's CPU dequant (converters/int-group/entry.ts): scale-dtype rounding, +0.
    const result = dequantIntGroupGpu(engine, await packed.load(), options);
    return { weights: result.weights as Float32Array, stats: result.stats, kernelMilliseconds: result.kernelMilliseconds };
  }
  return undefined;
}
