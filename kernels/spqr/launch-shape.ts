import { DEFAULT_SHARED_LIMIT_BYTES, type CudaModule } from "../cuda/module.js";
import type { DeviceInfo } from "../cuda/driver.js";
import { pipelineCodeStride, pipelineStatBytes } from "./pipeline-layout.js";

/**
 * Which kernel of kernels/spqr/spqr.cu runs a tensor, with which grid, block size and shared
 * memory. Three kinds, tried in this order (`path` forces one, for tests and benches):
 *
 * - `pipeline` (pipeline.cuh): one persistent wave; batches of R = 4 (else 2) rows with their
 *   input copied into shared memory a batch ahead. Needs n % 16 == 0, beta2 % 8 == 0, beta1 % R == 0,
 *   and shared memory for the rows and two stages (pipelineSharedBytes; opting in above 48 KiB);
 *   taken when at least MIN_PIPELINE_BLOCKS blocks fit on a multiprocessor. Its statistics go
 *   up in pipeline-layout.ts's order.
 *   On the H100 at 16 × 16 (bench/gpu-dequant.ts, % of the device-to-device copy, fp16 / float32 /
 *   verify, 2026-11-24, bench/RESULTS.md): 11008 × 4096, R = 4, 72 KiB, 3 blocks per
 *   multiprocessor: 81–83 / 84–86 / 87–89 against the stripe kernels' 71.4 / 82.3 / 75.0
 *   (capped at 2 blocks: 76.5 / 83.5 / 78.4 at an earlier step); 4096 × 11008, R = 2, 110 KiB,
 *   2 blocks: 68 / 83–85 / 70–71 against 49.3 / 61.6 / 55.7. With conflict-free decode stores
 *   (stripe-phases.cuh lq_spqr_swizzle), a shuffled permutation: 84–85 / 83–86 / 91.5–92 and
 *   79.6–80 / 85–86 / 74.8; then R = 2 at 512 threads a block but for float32 out alone
 *   (the kernels' launch bounds): 82.0–82.5 / 86.6 (256 threads) / 83.7–83.9.
 * - `stripes` (spqr.cu): one block per stripe of up to 8 rows, walked in batches of R rows held in
 *   registers; n and beta2 multiples of 8 and a batch within 48 KiB. fp16 out, and neither output
 *   nor verify: R = 4, 2, 1 with 8-column items; float32 out and verify: R = 4 with 4-column items
 *   ("s"), then R = 2, 1 with 8 where 4 rows do not fit.
 * - `elements` (elements.cuh): one thread per weight over a grid-stride loop, each finding its
 *   row's outliers by binary search; any shape.
 */
export type SpqrKernelPath = "pipeline" | "stripes" | "elements";

export interface SpqrLaunch {
  path: SpqrKernelPath;
  kernel: string;
  blocks: number;
  /** Threads a block: the kernel's launch bounds (CudaModule.maxThreadsPerBlock); the stripe and pipelined kernels check it (blockDim.x). */
  threads: number;
  sharedBytes: number;
  /** Stripe kernels: rows per stripe and per batch (their last two integer arguments); pipelined: rows per batch. */
  rows?: { stripe: number; batch: number };
}

/** The per-element kernel's resident blocks per multiprocessor. */
const ELEMENT_BLOCKS_PER_SM = 16;
/** Rows per stripe of the stripe kernel, the most first. */
const STRIPE_ROWS = [8, 4, 2, 1] as const;
/** A batch: its rows R, and whether the output takes 4 columns per item (kernel name suffix "s"). */
type Batch = { rows: number; split: boolean };
const BATCHES: readonly Batch[] = [4, 2, 1].map((rows) => ({ rows, split: false }));
const WIDE_BATCHES: readonly Batch[] = [{ rows: 4, split: true }, { rows: 2, split: false }, { rows: 1, split: false }];
/** The pipelined kernels spqr.cu instantiates: R = 4, then 2, with 4-column items for the wide outputs. */
const PIPELINE_BATCHES: readonly Batch[] = [{ rows: 4, split: true }, { rows: 2, split: true }];
/** Fewer resident blocks than this leave a multiprocessor's memory pipe idle between barriers. */
const MIN_PIPELINE_BLOCKS = 2;
/** The stripe's CSR offsets, LQ_SPQR_OFFSET_BYTES of stripe-phases.cuh. */
const OFFSET_BYTES = 80;
/** Two batches' CSR offsets, LQ_SPQR_PIPE_OFFSET_BYTES of pipeline.cuh. */
const PIPE_OFFSET_BYTES = 64;
/** The verify reduction's 96 doubles, which every kernel places in the same shared memory. */
const REDUCTION_BYTES = 96 * 8;
/** CUDA's limit on gridDim.x; the kernels walk further stripes or elements with a block-stride loop. */
const MAX_GRID_X = 2 ** 31 - 1;

export interface SpqrShape {
  m: number;
  n: number;
  beta1: number;
  beta2: number;
  output: "f16" | "f32" | undefined;
  verify: boolean;
}

/** The kernel name for an output kind, verify and batch ("pipe" or "stripes"). */
function kernelName(kind: "pipe" | "stripes", { output, verify }: SpqrShape, { rows, split }: Batch): string {
  const mode = output === undefined ? (verify ? "verify" : "check") : `${output}${verify ? "_verify" : ""}`;
  // The fp16 and check kernels take 8-column items at every R (stripe-emit.cuh says why).
  const wide = verify || output === "f32";
  return `lq_spqr_${kind}_${mode}_r${rows}${wide && split ? "s" : ""}`;
}

/** The launch for `shape`: the first kind that takes it, or the one `path` names (undefined if it cannot). */
export function chooseLaunch(module: CudaModule, info: DeviceInfo, shape: SpqrShape, path?: SpqrKernelPath): SpqrLaunch | undefined {
  if (path === undefined || path === "pipeline") {
    const launch = pipelineLaunch(module, info, shape);
    if (launch !== undefined || path === "pipeline") return launch;
  }
  if (path === undefined || path === "stripes") {
    const launch = stripeLaunch(module, shape);
    if (launch !== undefined || path === "stripes") return launch;
  }
  const { m, n } = shape;
  const kernel = "lq_spqr_dequant_verify";
  const threads = module.maxThreadsPerBlock(kernel);
  return { path: "elements", kernel, blocks: Math.max(1, Math.min(Math.ceil((m * n) / threads), info.multiprocessors * ELEMENT_BLOCKS_PER_SM)), threads, sharedBytes: 0 };
}

function pipelineLaunch(module: CudaModule, info: DeviceInfo, shape: SpqrShape): SpqrLaunch | undefined {
  const { m, n, beta1, beta2 } = shape;
  if (n % 16 !== 0 || beta2 % 8 !== 0) return undefined;
  const groups = n / beta2;
  for (const batch of PIPELINE_BATCHES) {
    if (beta1 % batch.rows !== 0) continue;
    const sharedBytes = Math.max(REDUCTION_BYTES, pipelineSharedBytes(batch.rows, n, groups));
    if (sharedBytes > info.sharedBytesPerBlockOptin) continue;
    const kernel = kernelName("pipe", shape, batch);
    // Each pipelined kernel's block size is its launch bounds' (spqr.cu: 512 at R = 2 but for
    // float32 out alone, else 256; pipeline.cuh LQ_SPQR_PIPE_WIDE_THREADS says why), which it checks.
    const threads = module.maxThreadsPerBlock(kernel);
    const resident = module.residentBlocks(kernel, threads, sharedBytes);
    if (resident < MIN_PIPELINE_BLOCKS) continue;
    return { path: "pipeline", kernel, blocks: Math.min(m / batch.rows, resident * info.multiprocessors), threads, sharedBytes, rows: { stripe: batch.rows, batch: batch.rows } };
  }
  return undefined;
}

/** pipeline.cuh lq_spqr_pipe_shared_bytes: the offsets, the rows (fp16) and two stages of a batch's input. */
function pipelineSharedBytes(rows: number, n: number, groups: number): number {
  const stage = rows * n + 2 * pipelineCodeStride(rows, groups) + pipelineStatBytes(groups);
  return PIPE_OFFSET_BYTES + 2 * rows * n + 2 * stage;
}

function stripeLaunch(module: CudaModule, shape: SpqrShape): SpqrLaunch | undefined {
  const { m, n, beta2, output, verify } = shape;
  if (n % 8 !== 0 || beta2 % 8 !== 0) return undefined;
  const groups = n / beta2;
  for (const batch of verify || output === "f32" ? WIDE_BATCHES : BATCHES) {
    for (const stripe of STRIPE_ROWS) {
      if (stripe < batch.rows) continue;
      const sharedBytes = Math.max(REDUCTION_BYTES, OFFSET_BYTES + Math.ceil((4 * stripe * groups) / 16) * 16 + batch.rows * 2 * n);
      // The stripe kernels stay within what needs no opt-in.
      if (sharedBytes > DEFAULT_SHARED_LIMIT_BYTES) continue;
      const kernel = kernelName("stripes", shape, batch);
      return { path: "stripes", kernel, blocks: Math.min(Math.ceil(m / stripe), MAX_GRID_X), threads: module.maxThreadsPerBlock(kernel), sharedBytes, rows: { stripe, batch: batch.rows } };
    }
  }
  return undefined;
}
