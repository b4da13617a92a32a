import { KernelError } from "../../formats/errors.js";
import { bytesOf } from "../../formats/packed-array.js";
import type { VptqSemantics } from "../../formats/vptq/reference.js";
import { vectorRows, type VptqTensor } from "../../formats/vptq/types.js";
import { checkStatus } from "../cuda/status.js";
import type { DevicePointer } from "../cuda/driver.js";
import type { KernelArgument } from "../cuda/module.js";
import type { GpuEngine } from "../engine.js";
import { sumPartials, VERIFY_PARTIAL_BYTES, type VerifyStats } from "../cuda/verify.js";
import { runLaunches, type BatchTimes, type LaunchTimingOptions } from "../cuda/timing.js";

/**
 * Host side of kernels/vptq/vptq.cu: checks the tensor (every length, every index below its
 * codebook, the permutation a permutation, the outlier and group columns adding up to
 * in_features), narrows the indices to uint16 and inverts the permutation, uploads the fields,
 * launches `lq_vptq_columns_v{4,8}_{f16,bf16}` (vl 4 or 8, in a multiple of 8; the indices laid
 * out by original column, columnOrderIndices) or else `lq_vptq_dequant_verify_{f16,bf16}`, and
 * returns the weights ([out][in]: float32 with the value of formats/vptq/reference.ts's 16-bit
 * result, or fp16 bits) and, given the source weights, the verify statistics. No file can make the kernel read out of bounds: every
 * length is checked here before each launch, and every index value both here (LAUNCH_REFUSED)
 * and in the kernel itself (status word, KERNEL_STATUS), the second line.
 */

/** LQ_VPTQ_THREADS and LQ_VPTQ_TILE_COLUMNS in vptq.cu. */
const THREADS = 256;
const TILE_COLUMNS = 8 * THREADS;
/** CUDA's limit on gridDim.x; the kernel walks further tiles with a block-stride loop. */
const MAX_GRID_X = 2 ** 31 - 1;
/** LQ_VPTQ_CUDA / LQ_VPTQ_TORCH in vptq.cuh. */
const SEMANTICS = { cuda: 0, torch: 1 } as const;
/** VPTQ codebooks hold at most 65536 centroids (16-bit indices, hf-layout.ts), so indices travel as uint16: half the tensor's uint32. */
const MAX_CENTROIDS = 65536;
/** VPTQ stores perm as uint16, and the kernel gets its inverse as uint16. */
const MAX_IN_FEATURES = 65536;
/** Vector lengths the columns kernel (lq_vptq_columns_v{4,8}_*) is instantiated for: one 8- or 16-byte codebook load each. */
const COLUMNS_VECTOR_LENGTHS = [4, 8];
/**
 * The residual codebooks the columns kernel stages in shared memory, at most: VPTQ's 256 × 8
 * fp16 (4 KiB) per group, with room for two groups. Every block copies them in, so a larger
 * one would cost more L2 reads than its gathers from L1 do.
 */
const RES_STAGED_LIMIT_BYTES = 8 * 1024;
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

/** What the kernel receives (vptq.cuh): the tensor's arrays, its indices narrowed to uint16, the inverse permutation. */
export interface VptqKernelFields {
  tensor: VptqTensor;
  mainIndices: Uint16Array;
  resIndices: Uint16Array | undefined;
  /** invPerm[j] = k where perm[k] = j: the Q column of original column j. */
  invPerm: Uint16Array | undefined;
}

export function dequantVptqGpu(engine: GpuEngine, t: VptqTensor, options: VptqGpuOptions = {}): VptqGpuResult {
  return launchVptqKernel(engine, prepareVptqLaunch(t, options), options);
}

type Refuse = (detail: string, expected: unknown, actual: unknown) => KernelError;

/** "4096×11008 v8 k65536-256 G2 outliers 64", for messages. */
function describe(t: VptqTensor): string {
  const p = t.params;
  return `${t.outFeatures}×${t.inFeatures} v${p.vectorLen} k${p.numCentroids}${p.numResCentroids > 0 ? `-${p.numResCentroids}` : ""}${p.groupNum > 1 ? ` G${p.groupNum}` : ""}${p.outlierSize > 0 ? ` outliers ${p.outlierSize}` : ""}`;
}

function refuser(t: VptqTensor, tensorName: string | undefined): Refuse {
  return (detail, expected, actual) => new KernelError("LAUNCH_REFUSED", `vptq ${describe(t)}: ${detail}`, { tensor: tensorName, expected, actual });
}

/**
 * Every check of the launch, cheapest first (LAUNCH_REFUSED, before any device call), and the
 * fields as the kernel takes them. Exported for the tests of the kernel's own checks.
 */
export function prepareVptqLaunch(t: VptqTensor, options: Pick<VptqGpuOptions, "semantics" | "tensorName"> = {}): VptqKernelFields {
  const refuse = refuser(t, options.tensorName);
  checkShape(t, options.semantics, refuse);
  const p = t.params;
  const numIdx = vectorRows(t.outFeatures, p.vectorLen);
  const indexCount = p.groupNum * numIdx * p.groupSize;
  const indices = (a: Uint32Array | undefined) => a instanceof Uint32Array && a.length === indexCount;
  if (!indices(t.mainIndices) || (t.resIndices !== undefined && !indices(t.resIndices))) throw refuse("main / residual indices must be Uint32Array [G · ceil(out / vl) · gs]", indexCount, [t.mainIndices?.length, t.resIndices?.length]);
  checkArrays(t, refuse);
  const narrow = (a: Uint32Array, k: number, what: string) => {
    const out = new Uint16Array(a.length);
    for (let i = 0; i < a.length; i++) {
      const q = a[i]!;
      if (!(q < k)) throw refuse(`${what} index ${q} at [g, r, e] = [${Math.floor(i / (numIdx * p.groupSize))}, ${Math.floor(i / p.groupSize) % numIdx}, ${i % p.groupSize}] is past its codebook`, `< ${k}`, q);
      out[i] = q;
    }
    return out;
  };
  const mainIndices = narrow(t.mainIndices, p.numCentroids, "main");
  const resIndices = t.resIndices === undefined ? undefined : narrow(t.resIndices, p.numResCentroids, "residual");
  if (t.outlierIndices !== undefined) {
    const at = t.outlierIndices.findIndex((q) => !(q < p.outlierNumCentroids));
    if (at >= 0) throw refuse(`outlier index ${t.outlierIndices[at]} at [row block, column] = [${Math.floor(at / p.outlierSize)}, ${at % p.outlierSize}] is past the outlier codebook`, `< ${p.outlierNumCentroids}`, t.outlierIndices[at]);
  }
  return { tensor: t, mainIndices, resIndices, invPerm: t.perm === undefined ? undefined : invertPermutation(t.perm, refuse) };
}

/** The parameters against each other, the semantics, and which arrays are present. */
function checkShape(t: VptqTensor, semantics: string | undefined, refuse: Refuse): void {
  const p = t.params;
  if (semantics !== undefined && !Object.hasOwn(SEMANTICS, semantics)) throw refuse("semantics", Object.keys(SEMANTICS), semantics);
  const int = (v: number, min: number, max: number) => Number.isSafeInteger(v) && v >= min && v <= max;
  if (!int(t.outFeatures, 1, Number.MAX_SAFE_INTEGER) || !int(t.inFeatures, 1, MAX_IN_FEATURES)) throw refuse("out_features ≥ 1 and 1 ≤ in_features ≤ 65536 (perm is uint16)", "positive sizes", [t.outFeatures, t.inFeatures]);
  if (t.dtype !== "F16" && t.dtype !== "BF16") throw refuse("codebook dtype", "F16 or BF16", t.dtype);
  if (!int(p.vectorLen, 1, Number.MAX_SAFE_INTEGER) || !int(p.numCentroids, 1, MAX_CENTROIDS) || !int(p.numResCentroids, 0, MAX_CENTROIDS)) throw refuse("vector length ≥ 1, 1 … 65536 centroids, 0 … 65536 residual centroids", "VPTQ sizes", [p.vectorLen, p.numCentroids, p.numResCentroids]);
  if (!int(p.groupNum, 1, t.inFeatures) || !int(p.groupSize, 0, t.inFeatures) || !int(p.outlierSize, 0, t.inFeatures) || p.groupNum * p.groupSize + p.outlierSize !== t.inFeatures) {
    throw refuse("outlier columns plus group_num · group_size must equal in_features", t.inFeatures, `${p.outlierSize} + ${p.groupNum}·${p.groupSize}`);
  }
  if (p.outlierSize > 0 && (!int(p.outlierVectorLen, 1, Number.MAX_SAFE_INTEGER) || !int(p.outlierNumCentroids, 1, MAX_CENTROIDS))) throw refuse("outliers need a vector length ≥ 1 and 1 … 65536 centroids", "outlier sizes", [p.outlierVectorLen, p.outlierNumCentroids]);
  // The reference decides by presence (t.resIndices, t.perm), the parameters by flags: both must agree.
  const presence: [string, boolean, unknown][] = [
    ["centroids", true, t.centroids],
    ["main indices", true, t.mainIndices],
    ["res_centroids", p.numResCentroids > 0, t.resCentroids],
    ["residual indices", p.numResCentroids > 0, t.resIndices],
    ["outlier centroids", p.outlierSize > 0, t.outlierCentroids],
    ["outlier indices", p.outlierSize > 0, t.outlierIndices],
    ["perm", p.enablePerm, t.perm],
    ["weight_scale", p.enableNorm, t.weightScale],
    ["weight_bias", p.enableNorm, t.weightBias],
  ];
  for (const [what, expected, array] of presence) if (expected !== (array !== undefined)) throw refuse(`${what} ${expected ? "missing" : "present"}, against the parameters`, expected ? "present" : "absent", array === undefined ? "absent" : "present");
}

/** Every 16-bit array the kernel reads: a Uint16Array of exactly the length the shape implies. */
function checkArrays(t: VptqTensor, refuse: Refuse): void {
  const p = t.params;
  const expect: [string, Uint16Array | undefined, number][] = [
    ["centroids", t.centroids, p.groupNum * p.numCentroids * p.vectorLen],
    ["res_centroids", t.resCentroids, p.groupNum * p.numResCentroids * p.vectorLen],
    ["outlier centroids", t.outlierCentroids, p.outlierNumCentroids * p.outlierVectorLen],
    ["outlier indices", t.outlierIndices, p.outlierSize > 0 ? vectorRows(t.outFeatures, p.outlierVectorLen) * p.outlierSize : 0],
    ["perm", t.perm, t.inFeatures],
    ["weight_scale", t.weightScale, t.inFeatures],
    ["weight_bias", t.weightBias, t.inFeatures],
  ];
  for (const [what, array, length] of expect) {
    if (array !== undefined && !(array instanceof Uint16Array && array.length === length)) throw refuse(`${what} must be a Uint16Array of ${length}`, length, array.length);
  }
}

function invertPermutation(perm: Uint16Array, refuse: Refuse): Uint16Array {
  const inverse = new Uint16Array(perm.length);
  const seen = new Uint8Array(perm.length);
  for (let k = 0; k < perm.length; k++) {
    const j = perm[k]!;
    if (!(j < perm.length) || seen[j] === 1) throw refuse(`perm is not a permutation: entry ${k} is ${j}${j < perm.length ? " again" : ""}`, `a permutation of 0…${perm.length - 1}`, j);
    seen[j] = 1;
    inverse[j] = k;
  }
  return inverse;
}

/**
 * Launch configuration (the grid vptq.cu's comment describes): THREADS threads per block (the
 * generic kernel's shared-memory reduction of the verify partials is sized for 256), one block
 * per tile of (vector row, TILE_COLUMNS columns): 3072 blocks for out 4096 × in 11008 at v8,
 * 2752 for 11008 × 4096. Generic kernel: each thread on one column at a time and the vl weights
 * of its vector; 60 registers on sm_90, 4 blocks resident per multiprocessor. Columns kernel:
 * each thread on 8 consecutive columns (TILE_COLUMNS = 8 · THREADS: one pass), ~110 registers,
 * 2 blocks resident, each thread with its 8 codebook gathers in flight. The rest queue; one
 * verify partial per block.
 */
function launchBlocks(t: VptqTensor): number {
  const tiles = vectorRows(t.outFeatures, t.params.vectorLen) * Math.ceil(t.inFeatures / TILE_COLUMNS);
  return Math.min(tiles, MAX_GRID_X);
}

/** Whether the columns kernel takes this shape: vl 4 or 8 (one vector load per centroid), whole 8-column pieces per row. */
function columnsKernelFits(t: VptqTensor): boolean {
  return COLUMNS_VECTOR_LENGTHS.includes(t.params.vectorLen) && t.inFeatures % 8 === 0;
}

/**
 * The columns kernel's indices: uint32 [num_idx][in], entry [r][j] = main | res << 16 of vector
 * row r of Q column k = invPerm[j] (k = j without a permutation), 0 for outlier columns, and
 * for a k ≥ in (a corrupt inverse permutation, which the kernel reports). In original column
 * order, a thread's 8 columns are one coalesced 32-byte load instead of 16 gathers of 2 bytes;
 * the same 4 bytes per vector as the two uint16 arrays.
 */
export function columnOrderIndices(fields: VptqKernelFields): Uint32Array {
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
  const indices = new Uint32Array(numIdx * inFeatures);
  const main = fields.mainIndices;
  const res = fields.resIndices;
  for (let r = 0; r < numIdx; r++) {
    const row = r * inFeatures;
    const step = r * p.groupSize;
    for (let j = 0; j < inFeatures; j++) {
      const base = columnBase[j]!;
      if (base < 0) continue;
      const at = base + step;
      indices[row + j] = (main[at]! | (res === undefined ? 0 : res[at]! << 16)) >>> 0;
    }
  }
  return indices;
}

/**
 * Uploads prepared fields and runs the kernel. The shape and every length are checked again
 * here (cheap); index values are left to the kernel's own checks, which is what the tests of
 * its status word need. Use dequantVptqGpu otherwise.
 */
export function launchVptqKernel(engine: GpuEngine, fields: VptqKernelFields, options: VptqGpuOptions = {}): VptqGpuResult {
  const t = fields.tensor;
  const p = t.params;
  const refuse = refuser(t, options.tensorName);
  checkShape(t, options.semantics, refuse);
  checkArrays(t, refuse);
  const indexCount = p.groupNum * vectorRows(t.outFeatures, p.vectorLen) * p.groupSize;
  const narrowed = (a: Uint16Array | undefined, present: boolean, length: number) => (a === undefined ? !present : a instanceof Uint16Array && a.length === length);
  if (!narrowed(fields.mainIndices, true, indexCount) || !narrowed(fields.resIndices, t.resIndices !== undefined, indexCount) || !narrowed(fields.invPerm, t.perm !== undefined, t.inFeatures)) {
    throw refuse("prepared indices / inverse permutation do not match the tensor", indexCount, [fields.mainIndices?.length, fields.resIndices?.length, fields.invPerm?.length]);
  }
  const total = t.outFeatures * t.inFeatures;
  if (options.reference !== undefined && !(options.reference instanceof Float32Array && options.reference.length === total)) throw refuse("reference length", total, options.reference.length);

  const context = engine.context;
  const module = engine.module("vptq");
  const blocks = launchBlocks(t);
  const wantWeights = options.weights ?? true;
  const allocated: DevicePointer[] = [];
  const upload = (array: Uint16Array | Uint32Array | Float32Array | undefined) => {
    if (array === undefined) return 0n;
    const pointer = context.upload(bytesOf(array));
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
    const partials = options.reference === undefined ? 0n : alloc(blocks * VERIFY_PARTIAL_BYTES);
    const status = alloc(4);
    const verifyArgs: KernelArgument[] = [{ pointer: out }, { pointer: reference }, { pointer: partials }];
    const tail: KernelArgument[] = [{ i32: SEMANTICS[options.semantics ?? "cuda"] }, { i32: f16 ? 1 : 0 }, { pointer: status }];
    const suffix = t.dtype === "BF16" ? "bf16" : "f16";
    let launch: { name: string; sharedBytes: number; args: KernelArgument[] } | undefined;
    if (columnsKernelFits(t)) {
      const pointers = [t.centroids, t.resCentroids, columnOrderIndices(fields), t.outlierCentroids, t.outlierIndices, fields.invPerm, t.weightScale, t.weightBias].map(upload);
      const resBytes = t.resCentroids === undefined ? 0 : t.resCentroids.byteLength;
      const resStaged = resBytes > 0 && resBytes <= RES_STAGED_LIMIT_BYTES;
      // Only the arrays read with vector loads; the outlier ones are read element by element.
      const vectorRead = [pointers[0]!, pointers[1]!, pointers[2]!, pointers[5]!, pointers[6]!, pointers[7]!, out, reference];
      if (vectorRead.every((pointer) => pointer % VECTOR_ALIGNMENT_BYTES === 0n)) {
        launch = {
          name: `lq_vptq_columns_v${p.vectorLen}_${suffix}`,
          sharedBytes: resStaged ? resBytes : 0,
          args: [
            ...pointers.map((pointer) => ({ pointer })), ...verifyArgs,
            { i64: t.outFeatures }, { i64: t.inFeatures }, { i64: p.numCentroids }, { i64: p.numResCentroids }, { i64: p.groupNum }, { i64: p.groupSize },
            { i64: p.outlierSize }, { i64: p.outlierVectorLen }, { i64: p.outlierNumCentroids }, { i32: resStaged ? 1 : 0 }, ...tail,
          ],
        };
      }
    }
    // Every other shape, and the scalar fallback should an allocation ever come back unaligned.
    launch ??= {
      name: `lq_vptq_dequant_verify_${suffix}`,
      sharedBytes: 0,
      args: [
        ...[t.centroids, t.resCentroids, fields.mainIndices, fields.resIndices, t.outlierCentroids, t.outlierIndices, fields.invPerm, t.weightScale, t.weightBias].map((array) => ({ pointer: upload(array) })),
        ...verifyArgs,
        { i64: t.outFeatures }, { i64: t.inFeatures }, { i64: p.vectorLen }, { i64: p.numCentroids }, { i64: p.numResCentroids }, { i64: p.groupNum }, { i64: p.groupSize },
        { i64: p.outlierSize }, { i64: p.outlierVectorLen }, { i64: p.outlierNumCentroids }, ...tail,
      ],
    };
    const { name, sharedBytes, args } = launch;
    const { launchMilliseconds, batchTimes } = runLaunches(context, status, () => module.launch(name, { grid: [blocks], block: [THREADS], sharedBytes }, args), options);
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
