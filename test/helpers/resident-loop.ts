import type { Hessian } from "../../formats/second-order/hessian.js";
import type { GpuEngine } from "../../kernels/engine.js";
import { gaussian, mulberry32, type Rng } from "./prng.js";

/** Shared by the resident-loop suites (test/kernels/gptq-resident, vptq-resident). */

/** H = XᵀX / samples of correlated features; the `dead` features are always 0 (their H rows and columns too). */
export function correlatedHessian(rng: Rng, size: number, samples: number, dead: readonly number[] = []): Hessian {
  const x = new Float64Array(samples * size);
  for (let t = 0; t < samples; t++) for (let j = 0; j < size; j++) x[t * size + j] = dead.includes(j) ? 0 : gaussian(rng) + (j > 0 ? 0.5 * x[t * size + j - 1]! : 0);
  const data = new Float64Array(size * size);
  for (let t = 0; t < samples; t++) {
    for (let i = 0; i < size; i++) {
      const xi = x[t * size + i]! / samples;
      if (xi !== 0) for (let j = 0; j < size; j++) data[i * size + j]! += xi * x[t * size + j]!;
    }
  }
  return { size, data };
}

/** A float32 weight with a few large entries, and its H over 2·columns samples. */
export function randomLayer(seed: number, rows: number, columns: number, dead: readonly number[] = []): { weight: Float32Array; h: Hessian } {
  const rng = mulberry32(seed);
  const weight = Float32Array.from({ length: rows * columns }, () => Math.fround(0.02 * gaussian(rng) * (rng() > 0.97 ? 6 : 1)));
  return { weight, h: correlatedHessian(rng, columns, 2 * columns, dead) };
}

/** A GpuEngine that fails the test if anything reaches for the GPU. */
export const untouchableEngine = new Proxy({}, {
  get: (_, key) => {
    throw new Error(`the GPU was touched (${String(key)}) before the checks`);
  },
}) as GpuEngine;
