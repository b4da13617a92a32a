import { launchChecks } from "../cuda/launch-checks.js";
import type { CudaModule, KernelArgument } from "../cuda/module.js";
import type { GpuEngine } from "../engine.js";
import { elementwiseLaunch, rowsLaunch, type DeviceArray } from "../forward/launch.js";
import { gemmF64 } from "../linalg/dgemm.js";

/**
 * Host wrappers of kernels/block-grad/block-grad.cu and the block's strided products: each checks
 * every size it passes and that every element the launch will touch lies inside the buffer it
 * names, then launches on the default stream (asynchronous: a download waits for it). A refusal
 * is a KernelError LAUNCH_REFUSED naming the kernel.
 *
 * Launch configuration (forward/launch.ts's, the same 256-thread width the .cu's reductions are
 * written for): element-wise kernels (rope backward, SwiGLU backward) one thread per element;
 * row kernels (RMSNorm keep / backward, softmax backward) one block per row, so a row's sum is
 * reduced inside one block in a fixed order (deterministic) and needs no atomics.
 */

const { refuse, checkCount, checkExtent } = launchChecks("block grad");

const ptr = (a: DeviceArray): KernelArgument => ({ pointer: a.pointer });

/** block-grad.cu's module, dist/kernels/block-grad.fatbin (kernels/build.mjs builds every folder). */
function blockGradModule(engine: GpuEngine): CudaModule {
  return engine.module("block-grad");
}

/** out [tokens][size] = rmsNorm(x) · weight, invRms[t] = 1/√(mean(x²) + eps). */
export function launchRmsNormKeep(engine: GpuEngine, x: DeviceArray, weight: DeviceArray, out: DeviceArray, invRms: DeviceArray, tokens: number, size: number, eps: number, status: DeviceArray): void {
  const kernel = "lq_bg_rms_norm_keep";
  checkCount(kernel, "size", size, 1);
  if (!(Number.isFinite(eps) && eps >= 0)) throw refuse(kernel, "eps must be finite and ≥ 0", "≥ 0", eps);
  const shape = rowsLaunch(kernel, tokens);
  checkExtent(kernel, "x", x, tokens * size);
  checkExtent(kernel, "weight", weight, size);
  checkExtent(kernel, "out", out, tokens * size);
  checkExtent(kernel, "invRms", invRms, tokens);
  checkExtent(kernel, "status", status, 1);
  if (x.pointer === out.pointer) throw refuse(kernel, "x and out must be different buffers", "distinct", "the same");
  blockGradModule(engine).launch(kernel, shape, [ptr(x), ptr(weight), ptr(out), ptr(invRms), { i64: size }, { f64: eps }, ptr(status)]);
}

/** dX [tokens][size] += ∂(rmsNorm(x)·weight)/∂x applied to dY. */
export function launchRmsNormBackwardAdd(engine: GpuEngine, dX: DeviceArray, dY: DeviceArray, x: DeviceArray, invRms: DeviceArray, weight: DeviceArray, tokens: number, size: number, status: DeviceArray): void {
  const kernel = "lq_bg_rms_norm_backward_add";
  checkCount(kernel, "size", size, 1);
  const shape = rowsLaunch(kernel, tokens);
  for (const [name, array] of [["dX", dX], ["dY", dY], ["x", x]] as const) checkExtent(kernel, name, array, tokens * size);
  checkExtent(kernel, "invRms", invRms, tokens);
  checkExtent(kernel, "weight", weight, size);
  checkExtent(kernel, "status", status, 1);
  if (dX.pointer === dY.pointer || dX.pointer === x.pointer) throw refuse(kernel, "dX must not be dY or x", "distinct", "the same");
  blockGradModule(engine).launch(kernel, shape, [ptr(dX), ptr(dY), ptr(x), ptr(invRms), ptr(weight), { i64: size }, ptr(status)]);
}

/** ∂scores → ∂S in place for one head ([tokens][tokens] at element `offset` of both arrays' views). */
export function launchCausalSoftmaxBackward(engine: GpuEngine, dScores: DeviceArray, probs: DeviceArray, probsOffset: number, tokens: number, status: DeviceArray): void {
  const kernel = "lq_bg_causal_softmax_backward";
  const shape = rowsLaunch(kernel, tokens);
  checkExtent(kernel, "dScores", dScores, tokens * tokens);
  checkExtent(kernel, "probs", probs, tokens * tokens, probsOffset);
  checkExtent(kernel, "status", status, 1);
  blockGradModule(engine).launch(kernel, shape, [ptr(dScores), { pointer: elementAt(probs, probsOffset) }, { i64: tokens }, ptr(status)]);
}

/**
 * The tuner's loss step on one window: dOutput [tokens][size] = 2·(output − target) / count and
 * rowSq[rowOffset + t] = Σ (output − target)² of token t. `target` starts at element targetOffset.
 */
export function launchMseGrad(engine: GpuEngine, output: DeviceArray, target: DeviceArray, targetOffset: number, dOutput: DeviceArray, rowSq: DeviceArray, rowOffset: number, tokens: number, size: number, count: number, status: DeviceArray): void {
  const kernel = "lq_bg_mse_grad";
  checkCount(kernel, "size", size, 1);
  if (!(Number.isFinite(count) && count > 0)) throw refuse(kernel, "the element count must be finite and positive", "> 0", count);
  const shape = rowsLaunch(kernel, tokens);
  checkExtent(kernel, "output", output, tokens * size);
  checkExtent(kernel, "target", target, tokens * size, targetOffset);
  checkExtent(kernel, "dOutput", dOutput, tokens * size);
  checkExtent(kernel, "rowSq", rowSq, tokens, rowOffset);
  checkExtent(kernel, "status", status, 1);
  if (dOutput.pointer === output.pointer || dOutput.pointer === target.pointer) throw refuse(kernel, "dOutput must not be output or target", "distinct", "the same");
  blockGradModule(engine).launch(kernel, shape, [ptr(output), { pointer: elementAt(target, targetOffset) }, ptr(dOutput), { pointer: elementAt(rowSq, rowOffset) }, { i64: size }, { f64: count }, ptr(status)]);
}

/** Rotates dx [tokens][heads·headDim] by −angle in place, with the table [≥ tokens][headDim/2]. */
export function launchRopeBackward(engine: GpuEngine, dx: DeviceArray, cos: DeviceArray, sin: DeviceArray, tokens: number, heads: number, headDim: number): void {
  const kernel = "lq_bg_rope_backward";
  checkCount(kernel, "heads", heads, 1);
  if (!(Number.isSafeInteger(headDim) && headDim >= 2 && headDim % 2 === 0)) throw refuse(kernel, "the head dimension must be even and ≥ 2", "even ≥ 2", headDim);
  const half = headDim / 2;
  const shape = elementwiseLaunch(kernel, tokens * heads * half);
  checkExtent(kernel, "dx", dx, tokens * heads * headDim);
  checkExtent(kernel, "cos", cos, tokens * half);
  checkExtent(kernel, "sin", sin, tokens * half);
  blockGradModule(engine).launch(kernel, shape, [ptr(dx), ptr(cos), ptr(sin), { i64: tokens }, { i64: heads }, { i64: half }]);
}

/** dMixedGate holds ∂mixed on entry and ∂gate on return; dUp = ∂up; `count` elements each. */
export function launchSwigluBackward(engine: GpuEngine, gate: DeviceArray, up: DeviceArray, dMixedGate: DeviceArray, dUp: DeviceArray, count: number): void {
  const kernel = "lq_bg_swiglu_backward";
  const shape = elementwiseLaunch(kernel, count);
  for (const [name, array] of [["gate", gate], ["up", up], ["dMixedGate", dMixedGate], ["dUp", dUp]] as const) checkExtent(kernel, name, array, count);
  const pointers = new Set([gate.pointer, up.pointer, dMixedGate.pointer, dUp.pointer]);
  if (pointers.size !== 4) throw refuse(kernel, "the four arrays must be different buffers", "distinct", "shared");
  blockGradModule(engine).launch(kernel, shape, [ptr(gate), ptr(up), ptr(dMixedGate), ptr(dUp), { i64: count }]);
}

/** A row-major matrix inside a device array: element (i, j) of the stored matrix at offset + i·ld + j. */
export interface MatrixOn {
  array: DeviceArray;
  offset?: number;
  ld: number;
  /** The product reads the stored matrix transposed. */
  trans?: boolean;
}

/**
 * C[m×n] = alpha·op(A)·op(B) + beta·C through gemmF64, after checking that each operand's stored
 * rows lie inside its array (gemmF64 itself checks only the leading dimensions and pointers).
 */
export function gemmOn(engine: GpuEngine, what: string, m: number, n: number, k: number, alpha: number, a: MatrixOn, b: MatrixOn, beta: number, c: MatrixOn): void {
  const kernel = `gemm ${what}`;
  checkCount(kernel, "m", m, 1);
  checkCount(kernel, "n", n, 1);
  checkCount(kernel, "k", k, 1);
  if (c.trans === true) throw refuse(kernel, "C cannot be transposed", "false", true);
  // [stored rows, stored columns] of each operand.
  const operands = [["A", a, a.trans === true ? k : m, a.trans === true ? m : k], ["B", b, b.trans === true ? n : k, b.trans === true ? k : n], ["C", c, m, n]] as const;
  for (const [name, view, rows, columns] of operands) {
    if (!(Number.isSafeInteger(view.ld) && view.ld >= columns)) throw refuse(kernel, `ld of ${name} must hold a stored row (${rows}×${columns})`, `≥ ${columns}`, view.ld);
    checkExtent(kernel, name, view.array, (rows - 1) * view.ld + columns, view.offset ?? 0);
  }
  gemmF64(engine, {
    m, n, k, alpha, beta,
    a: elementAt(a.array, a.offset ?? 0), lda: a.ld, transA: a.trans === true,
    b: elementAt(b.array, b.offset ?? 0), ldb: b.ld, transB: b.trans === true,
    c: elementAt(c.array, c.offset ?? 0), ldc: c.ld,
  });
}

/** The device address of float64 element `offset` of `array`. */
export function elementAt(array: DeviceArray, offset: number): bigint {
  return array.pointer + BigInt(offset * 8);
}

/** `array` from element `offset` on, as a DeviceArray (for the forward module's launchers). */
export function sliceFrom(array: DeviceArray, offset: number): DeviceArray {
  if (!(Number.isSafeInteger(offset) && offset >= 0 && offset < array.elements)) throw refuse("slice", "the offset lies outside the array", `0 … ${array.elements - 1}`, offset);
  return { pointer: elementAt(array, offset), elements: array.elements - offset };
}
