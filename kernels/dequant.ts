import type { TensorEntry } from "../converters/checkpoint.js";
import type { VptqSemantics } from "../formats/vptq/reference.js";
import type { VerifyStats } from "./cuda/verify.js";
import type { GpuEngine } from "./engine.js";
import { dequantFpxGpu } from "./fpx/launch.js";
import { dequantIntGroupGpu } from "./int-group/launch.js";
import { dequantSpqrGpu } from "./spqr/launch.js";
import { dequantVptqGpu } from "./vptq/launch.js";

/**
 * One entry point for the verify command and the engine's users: a packed tensor's float32
 * weights dequantized on the GPU with the same semantics as its entry's CPU dequant
 * (converters/<format>/entry.ts), verified against `reference` in the same pass. `undefined` for
 * a dense entry.
 */
export interface GpuDequantResult {
  weights: Float32Array;
  stats: VerifyStats | undefined;
  kernelMilliseconds: number;
}

export async function dequantOnGpu(engine: GpuEngine, entry: TensorEntry, reference: Float32Array | undefined): Promise<GpuDequantResult | undefined> {
  const packed = entry.packed;
  if (packed === undefined) return undefined;
  const options = { ...(reference === undefined ? {} : { reference }), tensorName: entry.name };
  const result =
    packed.representation === "int-group" ? dequantIntGroupGpu(engine, await packed.load(), options)
    : packed.representation === "fpx" ? dequantFpxGpu(engine, await packed.load(), options)
    : packed.representation === "spqr" ? dequantSpqrGpu(engine, await packed.load(), options)
    : dequantVptqGpu(engine, await packed.load(), { ...options, semantics: vptqSemantics(entry) });
  return { weights: result.weights as Float32Array, stats: result.stats, kernelMilliseconds: result.kernelMilliseconds };
}

/** The rounding the entry's CPU dequant uses (converters/vptq/entry.ts records it). */
function vptqSemantics(entry: TensorEntry): VptqSemantics {
  return entry.notes?.["dequantSemantics"] === "torch" ? "torch" : "cuda";
}
