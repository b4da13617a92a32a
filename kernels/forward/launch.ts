import { KernelError } from "../../formats/errors.js";
import type { CudaContext } from "../cuda/driver.js";
import type { CudaModule, KernelArgument, LaunchShape } from "../cuda/module.js";
import { launchChecks, type DeviceArray } from "../cuda/launch-checks.js";
import { STATUS_BITS } from "../cuda/status.js";
import type { GpuEngine } from "../engine.js";

/**
 * Host wrappers of kernels/forward/forward.cu: each checks every size it passes and that every
 * element the kernel will touch lies inside the buffer it names, then launches on the default
 * stream (asynchronous: a download waits for it). A refusal is a KernelError LAUNCH_REFUSED
 * naming the kernel; the status word is the kernels' second line (checkForwardStatus).
 *
 * Launch configuration, for every kernel: LQ_FWD_THREADS = 256 threads per block (8 warps: enough
 * to hide a row's loads, and the fixed width the row kernels' tree reductions are written for).
 * - element-wise kernels (embed, broadcast, rope, swiglu): one thread per element, ⌈count / 256⌉
 *   blocks along x;
 * - row kernels (RMSNorm, causal softmax, NLL): one block per row, threads striding the row, so a
 *   row's sum is reduced inside one block in a fixed order (deterministic) and needs no atomics.
 */

export type { DeviceArray } from "../cuda/launch-checks.js";

/** forward.cu LQ_FWD_THREADS. */
export const FORWARD_THREADS = 256;
/** The CUDA limits on gridDim.x and gridDim.y. */
const MAX_GRID_X = 2 ** 31 - 1;
const MAX_GRID_Y = 65535;

const { refuse, checkCount, checkExtent } = launchChecks("forward");

/** One thread per element: ⌈count / 256⌉ blocks of 256. */
export function elementwiseLaunch(kernel: string, count: number): LaunchShape {
  checkCount(kernel, "the element count", count, 1);
  const blocks = Math.ceil(count / FORWARD_THREADS);
  if (blocks > MAX_GRID_X) throw refuse(kernel, "more blocks than the grid allows", `⌈count / ${FORWARD_THREADS}⌉ ≤ ${MAX_GRID_X}`, blocks);
  return { grid: [blocks], block: [FORWARD_THREADS] };
}

/** One block of 256 per row. */
export function rowsLaunch(kernel: string, rows: number): LaunchShape {
  checkCount(kernel, "the row count", rows, 1);
  if (rows > MAX_GRID_X) throw refuse(kernel, "more rows than the grid allows", `≤ ${MAX_GRID_X}`, rows);
  return { grid: [rows], block: [FORWARD_THREADS] };
}

const ptr = (a: DeviceArray): KernelArgument => ({ pointer: a.pointer });

/** forward.cu's module, dist/kernels/forward.fatbin (kernels/build.mjs builds every folder). */
function forwardModule(engine: GpuEngine): CudaModule {
  return engine.module("forward");
}

/** hidden [tokens][hiddenSize] = embed[ids[t]]. */
export function launchEmbed(engine: GpuEngine, ids: DeviceArray, embed: DeviceArray, hidden: DeviceArray, tokens: number, hiddenSize: number, vocab: number, status: DeviceArray): void {
  const kernel = "lq_fwd_embed";
  checkCount(kernel, "hiddenSize", hiddenSize, 1);
  checkCount(kernel, "vocab", vocab, 1);
  const shape = elementwiseLaunch(kernel, tokens * hiddenSize);
  checkExtent(kernel, "ids", ids, tokens);
  checkExtent(kernel, "embed", embed, vocab * hiddenSize);
  checkExtent(kernel, "hidden", hidden, tokens * hiddenSize);
  checkExtent(kernel, "status", status, 1);
  forwardModule(engine).launch(kernel, shape, [ptr(ids), ptr(embed), ptr(hidden), { i64: tokens }, { i64: hiddenSize }, { i64: vocab }, ptr(status)]);
}

/** out [tokens][size] = rmsNorm(x) · weight. */
export function launchRmsNorm(engine: GpuEngine, x: DeviceArray, weight: DeviceArray, out: DeviceArray, tokens: number, size: number, eps: number, status: DeviceArray): void {
  const kernel = "lq_fwd_rms_norm";
  checkCount(kernel, "size", size, 1);
  if (!(Number.isFinite(eps) && eps >= 0)) throw refuse(kernel, "eps must be finite and ≥ 0", "≥ 0", eps);
  const shape = rowsLaunch(kernel, tokens);
  checkExtent(kernel, "x", x, tokens * size);
  checkExtent(kernel, "weight", weight, size);
  checkExtent(kernel, "out", out, tokens * size);
  checkExtent(kernel, "status", status, 1);
  if (x.pointer === out.pointer) throw refuse(kernel, "x and out must be different buffers", "distinct", "the same");
  forwardModule(engine).launch(kernel, shape, [ptr(x), ptr(weight), ptr(out), { i64: size }, { f64: eps }, ptr(status)]);
}

/** Every row of y [tokens][features] = bias, or += bias with `accumulate`. */
export function launchBroadcastRows(engine: GpuEngine, y: DeviceArray, bias: DeviceArray, tokens: number, features: number, accumulate: boolean): void {
  const kernel = "lq_fwd_broadcast_rows";
  checkCount(kernel, "features", features, 1);
  const shape = elementwiseLaunch(kernel, tokens * features);
  checkExtent(kernel, "y", y, tokens * features);
  checkExtent(kernel, "bias", bias, features);
  forwardModule(engine).launch(kernel, shape, [ptr(y), ptr(bias), { i64: tokens }, { i64: features }, { i32: accumulate ? 1 : 0 }]);
}

/** Rotates x [tokens][heads·headDim] in place with the table [≥ tokens][headDim/2]. */
export function launchRope(engine: GpuEngine, x: DeviceArray, cos: DeviceArray, sin: DeviceArray, tokens: number, heads: number, headDim: number, windows = 1): void {
  const kernel = "lq_fwd_rope";
  checkCount(kernel, "heads", heads, 1);
  checkCount(kernel, "windows", windows, 1);
  if (!(Number.isSafeInteger(headDim) && headDim >= 2 && headDim % 2 === 0)) throw refuse(kernel, "the head dimension must be even and ≥ 2", "even ≥ 2", headDim);
  const half = headDim / 2;
  const rows = tokens * windows;
  const shape = elementwiseLaunch(kernel, rows * heads * half);
  checkExtent(kernel, "x", x, rows * heads * headDim);
  checkExtent(kernel, "cos", cos, tokens * half);
  checkExtent(kernel, "sin", sin, tokens * half);
  forwardModule(engine).launch(kernel, shape, [ptr(x), ptr(cos), ptr(sin), { i64: rows }, { i64: heads }, { i64: half }, { i64: tokens }]);
}

/** Causal softmax of scores [windows][tokens][tokens] in place, row by row (blockIdx.y: the window). */
export function launchCausalSoftmax(engine: GpuEngine, scores: DeviceArray, tokens: number, status: DeviceArray, windows = 1): void {
  const kernel = "lq_fwd_causal_softmax";
  const shape = rowsLaunch(kernel, tokens);
  checkCount(kernel, "windows", windows, 1);
  if (windows > MAX_GRID_Y) throw refuse(kernel, "more windows than the grid allows", `≤ ${MAX_GRID_Y}`, windows);
  checkExtent(kernel, "scores", scores, windows * tokens * tokens);
  checkExtent(kernel, "status", status, 1);
  forwardModule(engine).launch(kernel, { grid: [shape.grid[0]!, windows], block: shape.block }, [ptr(scores), { i64: tokens }, ptr(status)]);
}

/** gate = silu(gate) · up over `count` elements. */
export function launchSwiglu(engine: GpuEngine, gate: DeviceArray, up: DeviceArray, count: number): void {
  const kernel = "lq_fwd_swiglu";
  const shape = elementwiseLaunch(kernel, count);
  checkExtent(kernel, "gate", gate, count);
  checkExtent(kernel, "up", up, count);
  forwardModule(engine).launch(kernel, shape, [ptr(gate), ptr(up), { i64: count }]);
}

/** nll[t] = −log softmax(logits[t])[ids[t+1]] for t < tokens − 1 (tokens ≥ 2). */
export function launchNll(engine: GpuEngine, logits: DeviceArray, ids: DeviceArray, nll: DeviceArray, tokens: number, vocab: number, status: DeviceArray): void {
  const kernel = "lq_fwd_nll";
  checkCount(kernel, "vocab", vocab, 1);
  checkCount(kernel, "tokens", tokens, 2);
  const shape = rowsLaunch(kernel, tokens - 1);
  checkExtent(kernel, "logits", logits, (tokens - 1) * vocab);
  checkExtent(kernel, "ids", ids, tokens);
  checkExtent(kernel, "nll", nll, tokens - 1);
  checkExtent(kernel, "status", status, 1);
  forwardModule(engine).launch(kernel, shape, [ptr(logits), ptr(ids), ptr(nll), { i64: vocab }, ptr(status)]);
}

/**
 * Reads the status word the forward's kernels share (waits for them); KernelError KERNEL_STATUS
 * naming what the bits mean when any is set (forward.cu sets only the index and shape bits).
 */
export function checkForwardStatus(context: CudaContext, status: DeviceArray, window: string): void {
  const word = new Uint32Array(1);
  context.download(status.pointer, new Uint8Array(word.buffer));
  const bits = word[0]!;
  if (bits === 0) return;
  const known = STATUS_BITS.indexRange | STATUS_BITS.shape;
  const reasons = [bits & STATUS_BITS.indexRange ? "a token id outside the vocabulary" : "", bits & STATUS_BITS.shape ? "a block shape the kernel was not written for" : "", bits & ~known ? "an unknown status bit" : ""].filter((r) => r !== "");
  throw new KernelError("KERNEL_STATUS", `forward on ${window}: ${reasons.join(", ")} (status 0x${bits.toString(16)})`, { actual: bits });
}
