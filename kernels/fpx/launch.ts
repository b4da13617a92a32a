import { KernelError } from "../../formats/errors.js";
import { MAX_NBITS, MIN_NBITS } from "../../formats/fpx/format.js";
import { fitsTcLayout, TC_COL_MULTIPLE, TC_ROW_MULTIPLE, tcPackedBytes } from "../../formats/fpx/tc-layout.js";
import type { FpxTensor } from "../../formats/fpx/types.js";
import { bytesOf } from "../../formats/packed-array.js";
import { checkStatus } from "../cuda/status.js";
import type { DevicePointer } from "../cuda/driver.js";
import type { GpuEngine } from "../engine.js";
import { sumPartials, VERIFY_PARTIAL_BYTES, type VerifyStats } from "../cuda/verify.js";
import { runLaunches, type BatchTimes, type LaunchTimingOptions } from "../cuda/timing.js";

/**
 * Host side of kernels/fpx/fpx.cu: checks the tensor, uploads its fields as stored (the
 * tensor-core layout bytes and the fp16 scale bits), launches `lq_fpx_dequant_verify`, and
 * returns the weights ([M][N], float32 with the same bits as formats/fpx/reference.ts, or those
 * values rounded to fp16) and, given the source weights, the verify statistics.
 *
 * Launch: THREADS threads per block (two half-blocks that each stage four chunks, a 64×64 tile, in
 * shared memory before writing it row by row; a warp is one chunk's 32 lanes), one thread per lane
 * of a 64×16 chunk (32 weights each). Verify (alone or with the weights) runs over a persistent
 * grid: BLOCKS_PER_SM blocks per multiprocessor, what the kernel's __launch_bounds__ guarantees to
 * be resident together, so every block starts at once and none waits for a second wave; capped by
 * the lane count (a read-only stream, and one partial per block). A plain dequant, float32 or fp16,
 * runs a block per THREADS lanes, scheduled by the hardware, which streams that write-heavy pass
 * faster. Measured on the H100 (bench/RESULTS.md), fp16: 88.3 % of the copy on that grid, 87.0 %
 * with two rounds per block, 81.3 % on a persistent grid of 6 blocks per multiprocessor; float32:
 * 91 % against 82 %. The kernels give the same weights on any grid.
 *
 * Kernels: lq_fpx_dequant_f16 / _f32 for weights alone, lq_fpx_verify for verify alone (no
 * weights), lq_fpx_dequant_verify for both; each a kernel of its own so that ptxas allocates its
 * registers without the others' pressure (fpx.cu).
 */

/** LQ_VERIFY_THREADS and LQ_FPX_MIN_BLOCKS in fpx.cu (the kernel refuses other block sizes). */
const THREADS = 256;
const BLOCKS_PER_SM = 4;
/** Layers of this many weights or more (a 96 GiB FP6 layer) are refused, as fpx.cu refuses them: it numbers 64×16 chunks with uint32. */
const MAX_WEIGHTS = 2 ** 37;
/** Weights each kernel thread decodes per chunk lane (fpx.cuh LQ_FPX_LANE_CODES). */
const LANE_CODES = 32;

export interface FpxGpuOptions extends LaunchTimingOptions {
  /** Source weights float32 [M][N]: also compute the verify statistics. */
  reference?: Float32Array;
  /** Return the weights (default true; false for verify alone, which then writes none). */
  weights?: boolean;
  /** Element type of the returned weights: float32 (default), or fp16 bits rounded to nearest even. */
  output?: "f32" | "f16";
  tensorName?: string;
}

export interface FpxGpuResult {
  /** Float32Array for output "f32", Uint16Array of fp16 bits for "f16". */
  weights: Float32Array | Uint16Array | undefined;
  stats: VerifyStats | undefined;
  /** Kernel time measured with CUDA events. */
  kernelMilliseconds: number;
  /** Kernel time of every launch. */
  launchMilliseconds?: number[];
  /** With `batchTiming`: mean kernel time per launch of each batch of back-to-back launches. */
  batchTimes?: BatchTimes;
}

export function dequantFpxGpu(engine: GpuEngine, t: FpxTensor, options: FpxGpuOptions = {}): FpxGpuResult {
  const { outFeatures: M, inFeatures: N } = t;
  const { ebits, mbits, nbits } = t.format;
  const shape = `${M}×${N} ${t.format.name}`;
  const where = { tensor: options.tensorName };
  const refuse = (detail: string, expected: unknown, actual: unknown) => new KernelError("LAUNCH_REFUSED", `fpx ${shape}: ${detail}`, { ...where, expected, actual });
  // The format object is data too (a hand-built one skips fpxFormat's checks): the kernel's
  // templates cover 3 … 7 bits with ebits ≥ 1.
  if (!(Number.isInteger(ebits) && Number.isInteger(mbits) && ebits >= 1 && mbits >= 0 && nbits === 1 + ebits + mbits && nbits >= MIN_NBITS && nbits <= MAX_NBITS)) {
    throw refuse("unsupported code width", `1 + ebits + mbits in ${MIN_NBITS} … ${MAX_NBITS}, ebits ≥ 1`, [ebits, mbits, nbits]);
  }
  if (!(Number.isInteger(M) && Number.isInteger(N) && fitsTcLayout(M, N))) throw refuse("shape outside the tensor-core layout", `rows % ${TC_ROW_MULTIPLE} = 0, columns % ${TC_COL_MULTIPLE} = 0, both > 0`, [M, N]);
  // The kernel numbers 64×16 chunks with 32-bit indices (fpx.cu refuses larger layers too).
  if (M * N >= MAX_WEIGHTS) throw refuse("layer too large for the kernel's 32-bit chunk index", `M·N < 2^37`, M * N);
  if (t.packed.length !== tcPackedBytes(M, N, nbits)) throw refuse("packed length", tcPackedBytes(M, N, nbits), t.packed.length);
  if (t.scales.length !== M) throw refuse("scales length (one fp16 scale per row)", M, t.scales.length);
  if (options.reference !== undefined && options.reference.length !== M * N) throw refuse("reference length", M * N, options.reference.length);

  const context = engine.context;
  const module = engine.module("fpx");
  const total = M * N;
  const lanes = total / LANE_CODES;
  const wantWeights = options.weights ?? true;
  // sm_86 / sm_89 multiprocessors have 100 KB of shared memory: two blocks' staged tiles (36 KB
  // each) fit, not four; verify alone (lq_fpx_verify) stages nothing.
  const staging = wantWeights || options.reference === undefined;
  const blocksPerSm = staging && (context.info.computeCapability === 86 || context.info.computeCapability === 89) ? 2 : BLOCKS_PER_SM;
  const laneBlocks = Math.ceil(lanes / THREADS);
  const plainDequant = options.reference === undefined && wantWeights;
  const blocks = Math.max(
    1,
    !plainDequant ? Math.min(laneBlocks, context.info.multiprocessors * blocksPerSm) : laneBlocks,
  );
  const allocated: DevicePointer[] = [];
  const upload = (bytes: Uint8Array) => {
    const pointer = context.upload(bytes);
    allocated.push(pointer);
    return pointer;
  };
  const alloc = (bytes: number) => {
    const pointer = context.alloc(bytes);
    allocated.push(pointer);
    return pointer;
  };
  try {
    // Device allocations are 256-byte aligned, so the kernel reads the layout as uint32 words.
    const packed = upload(t.packed);
    const scales = upload(bytesOf(t.scales));
    const f16 = options.output === "f16";
    const out = wantWeights ? alloc(total * (f16 ? 2 : 4)) : 0n;
    const reference = options.reference === undefined ? 0n : upload(bytesOf(options.reference));
    const partials = options.reference === undefined ? 0n : alloc(blocks * VERIFY_PARTIAL_BYTES);
    const status = alloc(4);
    const args = [
      { pointer: packed }, { pointer: scales }, { pointer: out }, { pointer: reference }, { pointer: partials },
      { i64: M }, { i64: N }, { i32: ebits }, { i32: mbits }, { i32: f16 ? 1 : 0 }, { pointer: status },
    ];
    // Weights alone: lq_fpx_dequant_f16 / _f32, the same walk as a kernel per output type (fpx.cu:
    // its registers unspilled); verify alone: lq_fpx_verify, likewise; both: lq_fpx_dequant_verify.
    // The same block shape for all; one partial per block.
    const dequantArgs = [{ pointer: packed }, { pointer: scales }, { pointer: out }, { i64: M }, { i64: N }, { i32: ebits }, { i32: mbits }, { pointer: status }];
    const verifyArgs = [{ pointer: packed }, { pointer: scales }, { pointer: reference }, { pointer: partials }, { i64: M }, { i64: N }, { i32: ebits }, { i32: mbits }, { pointer: status }];
    let launch = () => module.launch("lq_fpx_dequant_verify", { grid: [blocks], block: [THREADS] }, args);
    if (wantWeights && options.reference === undefined) launch = () => module.launch(f16 ? "lq_fpx_dequant_f16" : "lq_fpx_dequant_f32", { grid: [blocks], block: [THREADS] }, dequantArgs);
    else if (!wantWeights && options.reference !== undefined) launch = () => module.launch("lq_fpx_verify", { grid: [blocks], block: [THREADS] }, verifyArgs);
    const { launchMilliseconds, batchTimes } = runLaunches(context, status, launch, options);
    const kernelMilliseconds = launchMilliseconds[0]!;
    checkStatus(context, status, { format: "fpx", ...(options.tensorName === undefined ? {} : { tensor: options.tensorName }), shape });
    const weights = !wantWeights ? undefined : f16 ? new Uint16Array(total) : new Float32Array(total);
    if (weights !== undefined) context.download(out, new Uint8Array(weights.buffer));
    const stats = options.reference === undefined ? undefined : sumPartials(context, partials, blocks);
    return { weights, stats, kernelMilliseconds, launchMilliseconds, ...(batchTimes === undefined ? {} : { batchTimes }) };
  } finally {
    for (const pointer of allocated) context.free(pointer);
  }
}
