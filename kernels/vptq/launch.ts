import { KernelError } from "../../formats/errors.js";
import { bytesOf } from "../../formats/packed-array.js";
import type { VptqSemantics } from "../../formats/vptq/reference.js";
import { vectorRows, type VptqTensor } from "../../formats/vptq/types.js";
import { checkStatus } from "../cuda/status.js";
import type { DevicePointer } from "../cuda/driver.js";
import type { CudaModule, KernelArgument } from "../cuda/module.js";
import type { GpuEngine } from "../engine.js";
import { sumPartials, VERIFY_PARTIAL_BYTES, type VerifyStats } from "../cuda/verify.js";
import { runLaunches, type BatchTimes, type LaunchTimingOptions } from "../cuda/timing.js";
import { checkPreparedLaunch, describe, prepareVptqLaunch, SEMANTICS, type VptqKernelFields } from "./checks.js";

export { prepareVptqLaunch, type VptqKernelFields };

/**
 * Host side of kernels/vptq/vptq.cu: checks the tensor and prepares its fields (checks.ts: every
 * length, every index below its codebook, the permutation a permutation; the indices narrowed to
 * uint16, the permutation inverted), uploads the fields, launches
 * `lq_vptq_columns_v{4,8}_{f16,bf16}` (vl 4 or 8, in a multiple of 8; the indices laid out by
 * original column, uint16 main and uint8 residual, columnOrderIndices) or else
 * `lq_vptq_dequant_verify_{f16,bf16}`, and returns
 * the weights ([out][in]: float32 with the value of formats/vptq/reference.ts's 16-bit result, or
 * fp16 bits) and, given the source weights, the verify statistics. No file can make the kernel
 * read out of bounds: every length is checked (checks.ts) before each launch, and every index
 * value both on the host (LAUNCH_REFUSED) and in the kernel itself (status word, KERNEL_STATUS),
 * the second line.
 */

/** vptq.cu's lq_vptq_launch_constants, read from the loaded module: the kernels declare them once. */
interface LaunchConstants {
  /** Columns per tile of the generic kernel (LQ_VPTQ_TILE_COLUMNS). */
  tileColumns: number;
  /** Columns per slab, the columns kernel's work item with a vector row (LQ_VPTQ_WARP_COLUMNS). */
  warpColumns: number;
  /** The columns kernel's resident blocks per multiprocessor under its launch bounds (LQ_VPTQ_COLUMNS_BLOCKS_PER_SM). */
  columnsBlocksPerSm: number;
  /** Its verify stash, bytes a thread, at vl 4 and 8 (LQ_VPTQ_STASH_UNITS · 16). */
  stashBytesPerThread: { 4: number; 8: number };
}

function launchConstants(module: CudaModule): LaunchConstants {
  const words = module.constantWords("lq_vptq_launch_constants");
  if (words.length !== 5) throw new KernelError("MODULE_MISSING", "lq_vptq_launch_constants has another length than launch.ts reads: the kernel image and the host code are from different builds", { expected: 5, actual: words.length });
  return { tileColumns: words[0]!, warpColumns: words[1]!, columnsBlocksPerSm: words[2]!, stashBytesPerThread: { 4: words[3]!, 8: words[4]! } };
}
/** CUDA's limit on gridDim.x; the kernel walks further tiles with a block-stride loop. */
const MAX_GRID_X = 2 ** 31 - 1;
/** Vector lengths the columns kernel (lq_vptq_columns_v{4,8}_*) is instantiated for: one 8- or 16-byte codebook load each. */
const COLUMNS_VECTOR_LENGTHS = [4, 8];
/**
 * The residual codebooks the columns kernel stages in shared memory, at most: VPTQ's 256 × 8
 * fp16 (4 KiB) per group, with room for two groups. Every block copies them in, so a larger
 * one would cost more L2 reads than its gathers from L1 do.
 */
const RES_STAGED_LIMIT_BYTES = 8 * 1024;
/**
 * The columns kernel's reference stash (LQ_VPTQ_STASH_UNITS in columns.cuh): with verify, each
 * thread's reference rows of its next item, two 16-byte units a row, in dynamic shared memory ahead
 * of the staged residual codebooks.
 */
function stashBytes(constants: LaunchConstants, threads: number, vectorLen: 4 | 8): number {
  return threads * constants.stashBytesPerThread[vectorLen];
}
/** The columns kernel's 8- and 16-byte loads and stores need 16-byte aligned arrays (cuMemAlloc gives 256). */
const VECTOR_ALIGNMENT_BYTES = 16n;

export interface VptqGpuOptions extends LaunchTimingOptions {
  /** As formats/vptq/reference.ts (default "cuda": one rounding of c·s + b). */
  semantics?: VptqSemantics;
  /** Source weights float32 [out][in]: also compute the verify statistics. */
  reference?: Float32Array;
  /** Return the weights (default true; false for verify alone, which then writes none). */
  weights?: boolean;
  /** Element type of the returned weights: float32 (default), or fp16 bits rounded to nearest even. */
  output?: "f32" | "f16";
  tensorName?: string;
}

export interface VptqGpuResult {
  /** Float32Array for output "f32", Uint16Array of fp16 bits for "f16". */
  weights: Float32Array | Uint16Array | undefined;
  stats: VerifyStats | undefined;
  /** Kernel time of the first launch, measured with CUDA events. */
  kernelMilliseconds: number;
  /** Kernel time of every launch (with `launches`). */
  launchMilliseconds?: number[];
  /** With `batchTiming`: mean kernel time per launch of each batch of back-to-back launches. */
  batchTimes?: BatchTimes;
  /** The kernel that ran: "columns" (vl 4 or 8, in a multiple of 8) or "generic". */
  kernel: "columns" | "generic";
}

export function dequantVptqGpu(engine: GpuEngine, t: VptqTensor, options: VptqGpuOptions = {}): VptqGpuResult {
  return launchVptqKernel(engine, prepareVptqLaunch(t, options), options);
}

/**
 * Launch configurations (the grids vptq.cu's comment describes), each kernel's launch bounds' threads
 * per block (256: the generic kernel's shared-memory reduction of the verify partials is sized for
 * it), one verify partial per block.
 *
 * Generic kernel: one block per tile of (vector row, tileColumns columns), each thread on one
 * column at a time and the vl weights of its vector; 60 registers on sm_90, 4 blocks resident per
 * multiprocessor; the rest queue.
 */
function genericBlocks(t: VptqTensor, constants: LaunchConstants): number {
  const tiles = vectorRows(t.outFeatures, t.params.vectorLen) * Math.ceil(t.inFeatures / constants.tileColumns);
  return Math.min(tiles, MAX_GRID_X);
}

/**
 * Columns kernel: one wave, columnsBlocksPerSm blocks on every multiprocessor (≤ 128 registers
 * under its launch bounds: 120-128 on sm_90), that walk the items (slab of warpColumns columns,
 * vector row) warp by warp, split evenly: 43 slabs × 512 rows = 22,016 items for out 4096 × in
 * 11008 at v8, 16 × 1376 for 11008 × 4096, 10 or 11 per warp on the H100's 132 multiprocessors.
 * A warp keeps its slab's perm, norm and groups in registers across rows; a wave of resident
 * blocks stages the residual codebooks once per block, not once per tile. Fewer blocks when
 * there are fewer items than warps.
 */
function columnsBlocks(t: VptqTensor, multiprocessors: number, threads: number, constants: LaunchConstants): number {
  const items = vectorRows(t.outFeatures, t.params.vectorLen) * Math.ceil(t.inFeatures / constants.warpColumns);
  return Math.max(1, Math.min(Math.ceil(items / (threads / 32)), multiprocessors * constants.columnsBlocksPerSm));
}

/** Whether the columns kernel takes this shape: vl 4 or 8 (one vector load per centroid), whole 8-column pieces per row. */
function columnsKernelFits(t: VptqTensor): boolean {
  return COLUMNS_VECTOR_LENGTHS.includes(t.params.vectorLen) && t.inFeatures % 8 === 0;
}

/** The columns kernel's indices, by original column (columnOrderIndices). */
export interface ColumnOrderIndices {
  /** uint16 [num_idx][in]: main index of vector row r of Q column invPerm[j]. */
  main: Uint16Array;
  /** uint8 (every residual index < 256) or uint16 [num_idx][in], the residual index the same way; undefined without one. */
  res: Uint8Array | Uint16Array | undefined;
  /** Bytes per residual index: 1, 2, or 0 without a residual. */
  resBytes: 0 | 1 | 2;
}

/**
 * The columns kernel's indices: entry [r][j] is that of vector row r of Q column k = invPerm[j]
 * (k = j without a permutation), 0 for outlier columns and for a k ≥ in (a corrupt inverse
 * permutation, which the kernel reports). In original column order, a warp's index loads are
 * contiguous 512- and 256-byte spans instead of 2-byte gathers. The residual indices travel as
 * uint8 when they all fit (VPTQ's 256-centroid residual codebooks: 3 bytes per vector instead of
 * 4), and are never narrowed past a value they hold, so that the kernel still sees (and reports)
 * an index past its codebook.
 */
export function columnOrderIndices(fields: VptqKernelFields): ColumnOrderIndices {
  const t = fields.tensor;
  const p = t.params;
  const numIdx = vectorRows(t.outFeatures, p.vectorLen);
  const inFeatures = t.inFeatures;
  // Offset of vector row 0 of column j in the [G][num_idx][gs] arrays, or −1 for no vector.
  const columnBase = new Float64Array(inFeatures);
  for (let j = 0; j < inFeatures; j++) {
    const k = fields.invPerm === undefined ? j : fields.invPerm[j]!;
    if (k < p.outlierSize || k >= inFeatures) columnBase[j] = -1;
    else {
      const g = Math.floor((k - p.outlierSize) / p.groupSize);
      columnBase[j] = g * numIdx * p.groupSize + (k - p.outlierSize - g * p.groupSize);
    }
  }
  const resIndices = fields.resIndices;
  let resBytes: 0 | 1 | 2 = 0;
  if (resIndices !== undefined) {
    let largest = 0;
    for (let i = 0; i < resIndices.length; i++) largest = Math.max(largest, resIndices[i]!);
    resBytes = largest < 256 ? 1 : 2;
  }
  const main = new Uint16Array(numIdx * inFeatures);
  const res = resBytes === 0 ? undefined : resBytes === 1 ? new Uint8Array(numIdx * inFeatures) : new Uint16Array(numIdx * inFeatures);
  const mainIndices = fields.mainIndices;
  for (let r = 0; r < numIdx; r++) {
    const row = r * inFeatures;
    const step = r * p.groupSize;
    for (let j = 0; j < inFeatures; j++) {
      const base = columnBase[j]!;
      if (base < 0) continue;
      main[row + j] = mainIndices[base + step]!;
      if (res !== undefined) res[row + j] = resIndices![base + step]!;
    }
  }
  return { main, res, resBytes };
}

/**
 * Uploads prepared fields and runs the kernel. The shape and every length are checked again
 * (checkPreparedLaunch, cheap); index values are left to the kernel's own checks, which is what
 * the tests of its status word need. Use dequantVptqGpu otherwise.
 */
export function launchVptqKernel(engine: GpuEngine, fields: VptqKernelFields, options: VptqGpuOptions = {}): VptqGpuResult {
  checkPreparedLaunch(fields, options);
  const t = fields.tensor;
  const p = t.params;
  const total = t.outFeatures * t.inFeatures;

  const context = engine.context;
  const module = engine.module("vptq");
  const wantWeights = options.weights ?? true;
  const allocated: DevicePointer[] = [];
  const upload = (array: Uint8Array | Uint16Array | Float32Array | undefined) => {
    if (array === undefined) return 0n;
    const pointer = context.upload(array instanceof Uint8Array ? array : bytesOf(array));
    allocated.push(pointer);
    return pointer;
  };
  const alloc = (bytes: number) => {
    const pointer = context.alloc(bytes);
    allocated.push(pointer);
    return pointer;
  };
  try {
    const f16 = options.output === "f16";
    const out = wantWeights ? alloc(total * (f16 ? 2 : 4)) : 0n;
    const reference = upload(options.reference);
    const status = alloc(4);
    const tail: KernelArgument[] = [{ i32: SEMANTICS[options.semantics ?? "cuda"] }, { i32: f16 ? 1 : 0 }, { pointer: status }];
    const suffix = t.dtype === "BF16" ? "bf16" : "f16";
    // The arguments once the verify partials (one per block of the grid chosen) are allocated.
    const constants = launchConstants(module);
    let launch: { name: string; threads: number; blocks: number; sharedBytes: number; args: (partials: DevicePointer) => KernelArgument[] } | undefined;
    if (columnsKernelFits(t)) {
      const indices = columnOrderIndices(fields);
      const pointers = [t.centroids, t.resCentroids, indices.main, indices.res, t.outlierCentroids, t.outlierIndices, fields.invPerm, t.weightScale, t.weightBias].map(upload);
      const resBytes = t.resCentroids === undefined ? 0 : t.resCentroids.byteLength;
      const resStaged = resBytes > 0 && resBytes <= RES_STAGED_LIMIT_BYTES;
      // Only the arrays read with vector loads; the outlier ones are read element by element.
      const vectorRead = [pointers[0]!, pointers[1]!, pointers[2]!, pointers[3]!, pointers[6]!, pointers[7]!, pointers[8]!, out, reference];
      if (vectorRead.every((pointer) => pointer % VECTOR_ALIGNMENT_BYTES === 0n)) {
        const name = `lq_vptq_columns_v${p.vectorLen}_${suffix}`;
        const threads = module.maxThreadsPerBlock(name);
        launch = {
          name,
          threads,
          blocks: columnsBlocks(t, context.info.multiprocessors, threads, constants),
          sharedBytes: (options.reference === undefined ? 0 : stashBytes(constants, threads, p.vectorLen as 4 | 8)) + (resStaged ? resBytes : 0),
          args: (partials) => [
            ...pointers.map((pointer) => ({ pointer })), { pointer: out }, { pointer: reference }, { pointer: partials },
            { i64: t.outFeatures }, { i64: t.inFeatures }, { i64: p.numCentroids }, { i64: p.numResCentroids }, { i64: p.groupNum }, { i64: p.groupSize },
            { i64: p.outlierSize }, { i64: p.outlierVectorLen }, { i64: p.outlierNumCentroids }, { i32: indices.resBytes }, { i32: resStaged ? 1 : 0 }, ...tail,
          ],
        };
      }
    }
    // Every other shape, and the scalar fallback should an allocation ever come back unaligned.
    if (launch === undefined) {
      const pointers = [t.centroids, t.resCentroids, fields.mainIndices, fields.resIndices, t.outlierCentroids, t.outlierIndices, fields.invPerm, t.weightScale, t.weightBias].map(upload);
      const name = `lq_vptq_dequant_verify_${suffix}`;
      launch = {
        name,
        threads: module.maxThreadsPerBlock(name),
        blocks: genericBlocks(t, constants),
        sharedBytes: 0,
        args: (partials) => [
          ...pointers.map((pointer) => ({ pointer })), { pointer: out }, { pointer: reference }, { pointer: partials },
          { i64: t.outFeatures }, { i64: t.inFeatures }, { i64: p.vectorLen }, { i64: p.numCentroids }, { i64: p.numResCentroids }, { i64: p.groupNum }, { i64: p.groupSize },
          { i64: p.outlierSize }, { i64: p.outlierVectorLen }, { i64: p.outlierNumCentroids }, ...tail,
        ],
      };
    }
    const { name, threads, blocks, sharedBytes } = launch;
    const partials = options.reference === undefined ? 0n : alloc(blocks * VERIFY_PARTIAL_BYTES);
    const args = launch.args(partials);
    const { launchMilliseconds, batchTimes } = runLaunches(context, status, () => module.launch(name, { grid: [blocks], block: [threads], sharedBytes }, args), options);
    checkStatus(context, status, { format: "vptq", ...(options.tensorName === undefined ? {} : { tensor: options.tensorName }), shape: describe(t) });
    const weights = !wantWeights ? undefined : f16 ? new Uint16Array(total) : new Float32Array(total);
    if (weights !== undefined) context.download(out, new Uint8Array(weights.buffer));
    const stats = options.reference === undefined ? undefined : sumPartials(context, partials, blocks);
    const kernel = name.startsWith("lq_vptq_columns") ? "columns" : "generic";
    return { weights, stats, kernelMilliseconds: launchMilliseconds[0]!, launchMilliseconds, ...(batchTimes === undefined ? {} : { batchTimes }), kernel };
  } finally {
    for (const pointer of allocated) context.free(pointer);
  }
}
