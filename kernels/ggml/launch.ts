import { KernelError } from "../../formats/errors.js";
import { ggmlCodecByName } from "../../formats/ggml/registry.js";
import { bytesOf } from "../../formats/packed-array.js";
import { checkStatus } from "../cuda/status.js";
import type { DevicePointer } from "../cuda/driver.js";
import type { GpuEngine } from "../engine.js";
import type { IntGroupGpuOptions, IntGroupGpuResult } from "../int-group/launch.js";
import { sumPartials, VERIFY_PARTIAL_BYTES } from "../cuda/verify.js";
import { runLaunches } from "../cuda/timing.js";

/**
 * Host side of kernels/ggml/ggml.cu: checks a ggml tensor's bytes against its type and element
 * count, uploads them, launches `lq_ggml_<type>_dequant_verify`, and returns the weights (float32
 * with the same bits as the type's codec in formats/ggml, or those values rounded to fp16) and,
 * given the source weights, the verify statistics.
 *
 * Block sizes and bytes come from the codecs (formats/ggml/registry.ts), never from a table here;
 * test/kernels/ggml.test.ts checks that the kernels' structs have the same sizes.
 *
 * Launch: THREADS threads per block; each warp takes chunks of CHUNK consecutive weights over a
 * warp-stride loop (ggml.cu). A launch with a reference runs lq_ggml_<type>_dequant_verify, with
 * or without the weights, so both give the same partials, over one full wave of blocks (as many
 * as the multiprocessors hold at the occupancy its __launch_bounds__ sizes registers for, capped
 * by the chunk count): one partial per block, and a read-only stream keeps DRAM busiest that way
 * (95 % of the copy against 84–92 % with a block per 8 chunks, H100, bench/RESULTS.md). One
 * without a reference runs lq_ggml_<type>_dequant with a block per 8 chunks, each warp one chunk:
 * for a write-heavy stream the hardware's block scheduling beats a persistent wave (86–92 % of
 * the copy against 78–85 %, same bench; bench/cuda/stream-ceiling.cu shows the same on a bare
 * stream).
 */

/** LQ_GGML_THREADS in ggml.cu. */
const THREADS = 256;
/** LQ_GGML_CHUNK in ggml.cu: the weights one warp takes at a time (32 lanes × 8). */
const CHUNK = 256;
/** LQ_GGML_DEQUANT_BLOCKS and LQ_GGML_VERIFY_BLOCKS in ggml.cu: the blocks per multiprocessor each kernel's registers allow. */
const DEQUANT_BLOCKS_PER_SM = 8;
const VERIFY_BLOCKS_PER_SM = 6;
/** LQ_GGML_MAX_WEIGHTS in ggml.cu: chunk indices are 32-bit there (2^39 weights, far beyond any device's memory). */
const MAX_WEIGHTS = (2 ** 31 - 1) * CHUNK;

/**
 * Threads a multiprocessor holds at once, by compute capability (CUDA C++ Programming Guide,
 * "Technical Specifications per Compute Capability"): 2048 on the data-centre parts (A100, H100,
 * B200), 1536 on RTX 30xx/A10 (8.6), RTX 40xx/L4 (8.9) and RTX 50xx (12.x), 1024 on Turing (7.5).
 */
function threadsPerMultiprocessor(computeCapability: number): number {
  if (computeCapability === 75) return 1024;
  if (computeCapability === 86 || computeCapability === 89 || computeCapability >= 120) return 1536;
  return 2048;
}

/** The types with a kernel in ggml.cu, by codec name: the types lmpack writes to GGUF, plus F16 and BF16. */
export const GGML_KERNEL_TYPES = ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "TQ1_0", "TQ2_0"] as const;
export type GgmlKernelType = (typeof GGML_KERNEL_TYPES)[number];

/** The options of dequantIntGroupGpu that apply to ggml types (their rounding is fixed by the type). */
export type GgmlGpuOptions = Pick<IntGroupGpuOptions, "reference" | "weights" | "output" | "tensorName" | "launches" | "batchTiming">;
/** The same result as dequantIntGroupGpu's: weights as float32 or fp16 bits, verify statistics, kernel time. */
export type GgmlGpuResult = IntGroupGpuResult;

/**
 * The kernel of a type: `lq_ggml_q4_K_dequant_verify` for Q4_K. ggml spells the K-quants with a
 * capital K in C (block_q4_K, dequantize_row_q4_K) and everything else in lower case; ggml.cu keeps
 * that spelling, so one grep finds a type in ggml and here.
 */
export function ggmlKernelName(type: GgmlKernelType): string {
  return `lq_ggml_${type.toLowerCase().replace(/_k$/, "_K")}_dequant_verify`;
}

/** The weights-only kernel of a type: `lq_ggml_q4_K_dequant` for Q4_K (no reference, no partials; more blocks per multiprocessor). */
export function ggmlDequantKernelName(type: GgmlKernelType): string {
  return ggmlKernelName(type).slice(0, -"_verify".length);
}

function hasKernel(name: string): name is GgmlKernelType {
  return (GGML_KERNEL_TYPES as readonly string[]).includes(name);
}

/** Dequantizes `nElements` weights of ggml type `typeName` ("Q4_K", "q8_0", ...) stored in `bytes`. */
export function dequantGgmlGpu(engine: GpuEngine, typeName: string, bytes: Uint8Array, nElements: number, options: GgmlGpuOptions = {}): GgmlGpuResult {
  const shape = `${typeName}, ${nElements} weights`;
  const where = { tensor: options.tensorName };
  const refuse = (detail: string, expected: unknown, actual: unknown) => new KernelError("LAUNCH_REFUSED", `ggml ${shape}: ${detail}`, { ...where, expected, actual });
  const codec = ggmlCodecByName(typeName);
  const type = codec !== undefined && hasKernel(codec.name) ? codec.name : undefined;
  if (codec === undefined || type === undefined) throw refuse(`no GPU kernel for ggml type ${typeName}`, GGML_KERNEL_TYPES.join(", "), typeName);
  const { blockSize, typeSize } = codec;
  if (!(Number.isSafeInteger(nElements) && nElements > 0 && nElements % blockSize === 0)) throw refuse(`the element count is not a positive whole number of ${blockSize}-weight blocks`, `a positive multiple of ${blockSize}`, nElements);
  const nBlocks = nElements / blockSize;
  if (bytes.length !== nBlocks * typeSize) throw refuse(`byte length (${nBlocks} blocks of ${typeSize} bytes)`, nBlocks * typeSize, bytes.length);
  if (nElements > MAX_WEIGHTS) throw refuse(`more than ${MAX_WEIGHTS} weights (the kernel's chunk indices are 32-bit)`, `at most ${MAX_WEIGHTS}`, nElements);
  if (options.reference !== undefined && options.reference.length !== nElements) throw refuse("reference length", nElements, options.reference.length);

  const context = engine.context;
  const module = engine.module("ggml");
  const verify = options.reference !== undefined;
  const kernel = verify ? ggmlKernelName(type) : ggmlDequantKernelName(type);
  const perSm = Math.min(verify ? VERIFY_BLOCKS_PER_SM : DEQUANT_BLOCKS_PER_SM, Math.floor(threadsPerMultiprocessor(context.info.computeCapability) / THREADS));
  const chunkBlocks = Math.ceil(nElements / CHUNK / (THREADS / 32));
  const blocks = Math.max(1, verify ? Math.min(chunkBlocks, context.info.multiprocessors * perSm) : chunkBlocks);
  const wantWeights = options.weights ?? true;
  const allocated: DevicePointer[] = [];
  const upload = (data: Uint8Array) => {
    const pointer = context.upload(data);
    allocated.push(pointer);
    return pointer;
  };
  const alloc = (nBytes: number) => {
    const pointer = context.alloc(nBytes);
    allocated.push(pointer);
    return pointer;
  };
  try {
    const source = upload(bytes);
    const f16 = options.output === "f16";
    const out = wantWeights ? alloc(nElements * (f16 ? 2 : 4)) : 0n;
    const reference = options.reference === undefined ? 0n : upload(bytesOf(options.reference));
    const partials = verify ? alloc(blocks * VERIFY_PARTIAL_BYTES) : 0n;
    const status = alloc(4);
    const args = verify
      ? [{ pointer: source }, { pointer: out }, { pointer: reference }, { pointer: partials }, { i64: nBlocks }, { i32: f16 ? 1 : 0 }, { pointer: status }]
      : [{ pointer: source }, { pointer: out }, { i64: nBlocks }, { i32: f16 ? 1 : 0 }, { pointer: status }];
    const { launchMilliseconds, batchTimes } = runLaunches(context, status, () => module.launch(kernel, { grid: [blocks], block: [THREADS] }, args), options);
    const kernelMilliseconds = launchMilliseconds[0]!;
    checkStatus(context, status, { format: "ggml", ...(options.tensorName === undefined ? {} : { tensor: options.tensorName }), shape });
    const weights = !wantWeights ? undefined : f16 ? new Uint16Array(nElements) : new Float32Array(nElements);
    if (weights !== undefined) context.download(out, new Uint8Array(weights.buffer));
    const stats = options.reference === undefined ? undefined : sumPartials(context, partials, blocks);
    return { weights, stats, kernelMilliseconds, launchMilliseconds, ...(batchTimes === undefined ? {} : { batchTimes }) };
  } finally {
    for (const pointer of allocated) context.free(pointer);
  }
}
