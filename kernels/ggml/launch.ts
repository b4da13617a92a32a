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
 * Launch: THREADS threads per block (the kernel's shared-memory reduction is sized for 256), one
 * piece of 4 or 8 consecutive weights per thread and loop step, and enough blocks to fill the
 * device (BLOCKS_PER_SM per multiprocessor) over a grid-stride loop, capped by the piece count
 * (MIN_PIECE weights each): more blocks only add partials to sum.
 */

/** LQ_GGML_THREADS in ggml.cu. */
const THREADS = 256;
const BLOCKS_PER_SM = 16;
/** Weights per thread and loop step in ggml.cu's lq_ggml_pieces: 8 for fp16 output, 4 otherwise. */
const MIN_PIECE = 4;

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

function hasKernel(name: string): name is GgmlKernelType {
  return (GGML_KERNEL_TYPES as readonly string[]).includes(name);
}

/** Dequantizes `nElements` weights of ggml type `typeName` ("Q4_K", "q8_0", ...) stored in `bytes`. */
export function dequantGgmlGpu(engine: GpuEngine, typeName: string, bytes: Uint8Array, nElements: number, options: GgmlGpuOptions = {}): GgmlGpuResult {
  const shape = `${typeName}, ${nElements} weights`;
  const where = { tensor: options.tensorName };
  const refuse = (detail: string, expected: unknown, actual: unknown) => new KernelError("LAUNCH_REFUSED", `ggml ${shape}: ${detail}`, { ...where, expected, actual });
  const codec = ggmlCodecByName(typeName);
  const kernel = codec !== undefined && hasKernel(codec.name) ? ggmlKernelName(codec.name) : undefined;
  if (codec === undefined || kernel === undefined) throw refuse(`no GPU kernel for ggml type ${typeName}`, GGML_KERNEL_TYPES.join(", "), typeName);
  const { blockSize, typeSize } = codec;
  if (!(Number.isSafeInteger(nElements) && nElements > 0 && nElements % blockSize === 0)) throw refuse(`the element count is not a positive whole number of ${blockSize}-weight blocks`, `a positive multiple of ${blockSize}`, nElements);
  const nBlocks = nElements / blockSize;
  if (bytes.length !== nBlocks * typeSize) throw refuse(`byte length (${nBlocks} blocks of ${typeSize} bytes)`, nBlocks * typeSize, bytes.length);
  if (options.reference !== undefined && options.reference.length !== nElements) throw refuse("reference length", nElements, options.reference.length);

  const context = engine.context;
  const module = engine.module("ggml");
  const blocks = Math.max(1, Math.min(Math.ceil(nElements / (THREADS * MIN_PIECE)), context.info.multiprocessors * BLOCKS_PER_SM));
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
    const partials = options.reference === undefined ? 0n : alloc(blocks * VERIFY_PARTIAL_BYTES);
    const status = alloc(4);
    const args = [{ pointer: source }, { pointer: out }, { pointer: reference }, { pointer: partials }, { i64: nBlocks }, { i32: f16 ? 1 : 0 }, { pointer: status }];
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
