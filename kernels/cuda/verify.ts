import type { CudaContext, DevicePointer } from "./driver.js";

/** sizeof(lq_verify_partial) in kernels/common/verify.cuh: three float64. */
export const VERIFY_PARTIAL_BYTES = 24;

/** The dequant-verify statistics of one tensor. */
export interface VerifyStats {
  maxAbsError: number;
  sumSquaredError: number;
  sumSquaredReference: number;
}

/** Sums the per-block partials in block order (deterministic: the same totals on every run). */
export function sumPartials(context: CudaContext, partials: DevicePointer, blocks: number): VerifyStats {
  const values = new Float64Array(blocks * 3);
  context.download(partials, new Uint8Array(values.buffer));
  const stats: VerifyStats = { maxAbsError: 0, sumSquaredError: 0, sumSquaredReference: 0 };
  for (let b = 0; b < blocks; b++) {
    stats.maxAbsError = Math.max(stats.maxAbsError, values[3 * b]!);
    stats.sumSquaredError += values[3 * b + 1]!;
    stats.sumSquaredReference += values[3 * b + 2]!;
  }
  return stats;
}
