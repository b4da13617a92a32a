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
 * of a 64×16 chunk (32 weights each), and
 * enough blocks to fill the device (BLOCKS_PER_SM per multiprocessor) over a grid-stride loop,
 * capped by the lane count: more blocks only add partials to sum.
 */

const THREADS = 256;
const BLOCKS_PER_SM = 16;
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
  if (t.packed.length !== tcPackedBytes(M, N, nbits)) throw refuse("packed length", tcPackedBytes(M, N, nbits), t.packed.length);
  if (t.scales.length !== M) throw refuse("scales length (one fp16 scale per row)", M, t.scales.length);
  if (options.reference !== undefined && options.reference.length !== M * N) throw refuse("reference length", M * N, options.reference.length);

  const context = engine.context;
  const module = engine.module("fpx");
  const total = M * N;
  const lanes = total / LANE_CODES;
  const blocks = Math.max(1, Math.min(Math.ceil(lanes / THREADS), context.info.multiprocessors * BLOCKS_PER_SM));
  const wantWeights = options.weights ?? true;
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
    const { launchMilliseconds, batchTimes } = runLaunches(context, status, () => module.launch("lq_fpx_dequant_verify", { grid: [blocks], block: [THREADS] }, args), options);
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
