import { bytesOf } from "../../formats/packed-array.js";
import { KernelError } from "../../formats/errors.js";
import { scaleThreshold } from "../../formats/int-group/grid.js";
import type { SignRoundBackend, SignRoundBackendFactory, SignRoundParams, SignRoundProblem } from "../../formats/int-group/quantizers/signround-grad.js";
import { groupCount, INT_BITS } from "../../formats/int-group/types.js";
import type { DevicePointer } from "../cuda/driver.js";
import type { CudaModule, LaunchShape } from "../cuda/module.js";
import { checkStatus } from "../cuda/status.js";
import type { GpuEngine } from "../engine.js";
import { gemmF64 } from "../linalg/dgemm.js";

/**
 * SignRound's tuning loop on the GPU: a SignRoundBackend (formats/int-group/quantizers/
 * signround-grad.ts) whose state lives on the device. The factory uploads W, the group extremes
 * and H once; V, α, β, their best copies and the forward's scratch stay there. Per iteration only
 * the N per-row loss partials come back (evaluate), summed here in row order as the CPU's
 * layerLoss sums; best() downloads the best parameters once, at the end.
 *
 * Exactness (kernels/signround/signround.cu has the per-operation detail): every kernel rounds as
 * the CPU does, so without a Hessian the losses, V, α and β equal the CPU's bit for bit. With one,
 * ΔW·H is gemmF64 (kernels/linalg/dgemm.ts: cuBLAS or the own kernel), summed in another order than
 * the CPU's blocked product: the first loss agrees to float64 rounding, and from then on a V whose
 * gradient is within rounding of zero can step the other way, so the runs drift apart slowly.
 */

/** signround.cu LQ_SR_THREADS: threads per block, one per group or weight. */
const THREADS = 256;
/**
 * Threads per block of the row loss, one per row: a row streams its K products alone, so rows are
 * spread one warp per multiprocessor (4096 rows: 128 blocks) rather than 256 to a block, which
 * would leave all but 16 multiprocessors idle.
 */
const ROW_THREADS = 32;
/** The CUDA limit on gridDim.x. */
const MAX_GRID_X = 2 ** 31 - 1;
/** signround.cuh LQ_SCALE_*. */
const SCALE_DTYPE_CODES = { F32: 0, F16: 1, BF16: 2 } as const;

/** The backend factory for quantizeSignRound's `backend` option. */
export function gpuSignRound(engine: GpuEngine): SignRoundBackendFactory {
  return (problem) => new GpuSignRoundLayer(engine, problem);
}

export interface SignRoundLaunches {
  /** lq_signround_fit and lq_signround_backward: one thread per group (N·G). */
  perGroup: LaunchShape;
  /** lq_signround_forward: one thread per weight (N·K). */
  perWeight: LaunchShape;
  /** lq_signround_row_loss: one thread per row (N), ROW_THREADS to a block. */
  perRow: LaunchShape;
  /** Device memory the layer holds, in bytes. */
  deviceBytes: number;
}

/**
 * Checks everything the kernels trust, cheapest first, and returns the launches: KernelError
 * LAUNCH_REFUSED naming the shape and the check. Threads map 1:1 to groups, weights or rows,
 * 256 to a block (≤ 48 registers each on sm_90, so 5 blocks fit a multiprocessor).
 */
export function signRoundLaunches(problem: SignRoundProblem, deviceTotalBytes: number): SignRoundLaunches {
  const { outFeatures: n, inFeatures: k, quant, hessian } = problem;
  const refuse = (detail: string, expected: unknown, actual: unknown) => new KernelError("LAUNCH_REFUSED", `signround ${n}×${k}: ${detail}`, { expected, actual });
  if (!(Number.isSafeInteger(n) && n >= 1 && Number.isSafeInteger(k) && k >= 1)) throw refuse("the layer must have at least one row and column", "N, K ≥ 1", [n, k]);
  if (problem.weight.length !== n * k) throw refuse("the weight is not N×K", n * k, problem.weight.length);
  if (!INT_BITS.includes(quant.bits)) throw refuse("unsupported code width", INT_BITS, quant.bits);
  if (!(Number.isSafeInteger(quant.groupSize) && quant.groupSize >= 1)) throw refuse("the group size must be a positive integer", "≥ 1", quant.groupSize);
  if (!Object.hasOwn(SCALE_DTYPE_CODES, quant.scaleDtype)) throw refuse("unknown scale dtype", Object.keys(SCALE_DTYPE_CODES), quant.scaleDtype);
  const groups = n * groupCount(k, quant.groupSize);
  if (problem.groupMin.length !== groups || problem.groupMax.length !== groups) throw refuse("the group extremes are not N×G", groups, [problem.groupMin.length, problem.groupMax.length]);
  if (hessian !== undefined && (hessian.size !== k || hessian.data.length !== k * k)) throw refuse("the Hessian is not K×K", k * k, hessian.data.length);
  if (!(Number.isFinite(problem.lossNorm) && problem.lossNorm > 0)) throw refuse("the loss normaliser must be finite and positive", "> 0", problem.lossNorm);
  const blocks = (count: number) => Math.ceil(count / THREADS);
  if (blocks(n * k) > MAX_GRID_X) throw refuse("more weights than one grid holds", `≤ ${MAX_GRID_X * THREADS}`, n * k);
  // W, V and its best copy (float32), codes (int16), in-range flags, ΔW and ΔW·H (float64).
  const perWeightBytes = 4 + 4 + 4 + 2 + 1 + 8 + (hessian === undefined ? 0 : 8);
  // α, β, their best copies, extremes, scale, zero (float32) and the floor flag.
  const perGroupBytes = 8 * 4 + 1;
  const deviceBytes = n * k * perWeightBytes + groups * perGroupBytes + n * 8 + (hessian === undefined ? 0 : k * k * 8) + 4;
  if (deviceBytes > deviceTotalBytes) throw refuse("the layer's buffers exceed the device's memory", `≤ ${deviceTotalBytes} bytes`, deviceBytes);
  return { perGroup: { grid: [blocks(groups)], block: [THREADS] }, perWeight: { grid: [blocks(n * k)], block: [THREADS] }, perRow: { grid: [Math.ceil(n / ROW_THREADS)], block: [ROW_THREADS] }, deviceBytes };
}

/** cuda/module.ts has no float64 KernelArgument; a double argument is its 8 bytes, so it travels as the int64 of the same bits. */
function doubleBits(value: number): bigint {
  return new BigInt64Array(new Float64Array([value]).buffer)[0]!;
}


export class GpuSignRoundLayer implements SignRoundBackend {
  private readonly launches: SignRoundLaunches;
  private readonly owned: DevicePointer[] = [];
  private readonly nGroups: number;
  private readonly weight: DevicePointer;
  private readonly hessian: DevicePointer | undefined;
  private readonly groupMin: DevicePointer;
  private readonly groupMax: DevicePointer;
  private readonly tuned: { value: DevicePointer; minScale: DevicePointer; maxScale: DevicePointer };
  private readonly bestTuned: { value: DevicePointer; minScale: DevicePointer; maxScale: DevicePointer };
  private readonly groupScale: DevicePointer;
  private readonly groupZero: DevicePointer;
  private readonly groupFloored: DevicePointer;
  private readonly relCode: DevicePointer;
  private readonly inRange: DevicePointer;
  private readonly delta: DevicePointer;
  /** ∂loss/∂Ŵ up to 2/lossNorm: ΔW·H, or `delta` itself without H. */
  private readonly lossGrad: DevicePointer;
  private readonly rowLoss: DevicePointer;
  private readonly status: DevicePointer;
  private readonly rowLossHost: Float64Array;
  private evaluated = false;
  private released = false;

  constructor(private readonly engine: GpuEngine, private readonly problem: SignRoundProblem) {
    this.launches = signRoundLaunches(problem, engine.context.info.totalBytes);
    const { outFeatures: n, inFeatures: k, hessian } = problem;
    this.nGroups = groupCount(k, problem.quant.groupSize);
    const groups = n * this.nGroups;
    const context = engine.context;
    // Every allocation is recorded at once, so that a failure part-way frees what was taken.
    const take = (pointer: DevicePointer): DevicePointer => {
      this.owned.push(pointer);
      return pointer;
    };
    const alloc = (bytes: number) => take(context.alloc(bytes));
    try {
      this.weight = take(context.upload(bytesOf(problem.weight)));
      this.hessian = hessian === undefined ? undefined : take(context.upload(bytesOf(hessian.data)));
      this.groupMin = take(context.upload(bytesOf(problem.groupMin)));
      this.groupMax = take(context.upload(bytesOf(problem.groupMax)));
      // SignRoundLayer's start: V = 0, α = β = 1.
      const ones = bytesOf(new Float32Array(groups).fill(1));
      this.tuned = { value: alloc(n * k * 4), minScale: take(context.upload(ones)), maxScale: take(context.upload(ones)) };
      context.zero(this.tuned.value, n * k * 4);
      this.bestTuned = { value: alloc(n * k * 4), minScale: alloc(groups * 4), maxScale: alloc(groups * 4) };
      this.groupScale = alloc(groups * 4);
      this.groupZero = alloc(groups * 4);
      this.groupFloored = alloc(groups);
      this.relCode = alloc(n * k * 2);
      this.inRange = alloc(n * k);
      this.delta = alloc(n * k * 8);
      this.lossGrad = hessian === undefined ? this.delta : alloc(n * k * 8);
      this.rowLoss = alloc(n * 8);
      this.status = alloc(4);
      context.zero(this.status, 4);
    } catch (error) {
      this.release();
      throw error;
    }
    this.rowLossHost = new Float64Array(n);
    // As SignRoundLayer: the best parameters are the initial ones until keepBest() is called.
    this.keepBest();
  }

  evaluate(): number {
    this.checkLive("evaluate");
    const { outFeatures: n, inFeatures: k } = this.problem;
    const module = this.fitAndForward();
    if (this.hessian !== undefined) gemmF64(this.engine, { m: n, n: k, k, alpha: 1, beta: 0, a: this.delta, lda: k, b: this.hessian, ldb: k, c: this.lossGrad, ldc: k });
    module.launch("lq_signround_row_loss", this.launches.perRow, [{ pointer: this.delta }, { pointer: this.lossGrad }, { pointer: this.rowLoss }, { i64: n }, { i64: k }]);
    this.engine.context.download(this.rowLoss, new Uint8Array(this.rowLossHost.buffer));
    this.checkStatus();
    // signround-grad.ts layerLoss: the row sums in row order, then divided by the normaliser.
    let sum = 0;
    for (let row = 0; row < n; row++) sum += this.rowLossHost[row]!;
    return sum / this.problem.lossNorm;
  }

  /**
   * Block-wise SignRound's fake quantization (signround-block.ts quantizedWeights) on the device:
   * clamps α, β, fits the grids and writes Ŵ = fround(W + ΔW) as float64 into `out` (N·K
   * elements, the block forward's weight buffer). Asynchronous: no loss, no download; the status
   * word is read by the next evaluate() or best(), or by the caller's own check.
   */
  fakeQuantizeInto(out: DevicePointer, outElements: number): void {
    this.checkLive("fakeQuantizeInto");
    const count = this.problem.outFeatures * this.problem.inFeatures;
    if (outElements < count) throw new KernelError("LAUNCH_REFUSED", `signround ${this.problem.outFeatures}×${this.problem.inFeatures}: the Ŵ buffer holds fewer elements than the layer`, { expected: `≥ ${count}`, actual: outElements });
    this.fitAndForward().launch("lq_signround_apply", this.launches.perWeight, [{ pointer: this.weight }, { pointer: this.delta }, { pointer: out }, { i64: count }]);
  }

  /** lq_signround_fit then lq_signround_forward: scale, zero, codes, in-range flags and ΔW of the current parameters. */
  private fitAndForward(): CudaModule {
    const { outFeatures: n, inFeatures: k, quant } = this.problem;
    const module = this.engine.module("signround");
    const sym = quant.sym ? 1 : 0;
    module.launch("lq_signround_fit", this.launches.perGroup, [
      { pointer: this.tuned.minScale }, { pointer: this.tuned.maxScale }, { pointer: this.groupMin }, { pointer: this.groupMax },
      { pointer: this.groupScale }, { pointer: this.groupZero }, { pointer: this.groupFloored },
      { i64: n * this.nGroups }, { i32: quant.bits }, { i32: sym }, { i32: SCALE_DTYPE_CODES[quant.scaleDtype] }, { f32: scaleThreshold(quant.scaleDtype) }, { pointer: this.status },
    ]);
    module.launch("lq_signround_forward", this.launches.perWeight, [
      { pointer: this.weight }, { pointer: this.tuned.value }, { pointer: this.groupScale }, { pointer: this.groupZero },
      { pointer: this.relCode }, { pointer: this.inRange }, { pointer: this.delta },
      { i64: n }, { i64: k }, { i64: quant.groupSize }, { i64: this.nGroups }, { i32: quant.bits }, { i32: sym }, { pointer: this.status },
    ]);
    this.evaluated = true;
    return module;
  }

  /**
   * `lossGradient`: ∂loss/∂Ŵ on the device (N·K float64) in place of the layer's own ΔW·H or ΔW;
   * block-wise SignRound passes the block backward's gradient there. Only its signs matter: the
   * kernel scales it by the positive 2/lossNorm, as the CPU's step() does.
   */
  step(lrValue: number, lrMinmax: number, tuneMinmax: boolean, lossGradient?: DevicePointer): void {
    this.checkLive("step");
    if (!this.evaluated) throw new KernelError("LAUNCH_REFUSED", "signround: step before the first evaluate (no codes or gradients on the device yet)");
    for (const [name, lr] of [["lrValue", lrValue], ["lrMinmax", lrMinmax]] as const) {
      if (!Number.isFinite(lr)) throw new KernelError("LAUNCH_REFUSED", `signround: ${name} must be finite`, { expected: "a finite number", actual: lr });
    }
    const { outFeatures: n, inFeatures: k, quant } = this.problem;
    this.engine.module("signround").launch("lq_signround_backward", this.launches.perGroup, [
      { pointer: this.weight }, { pointer: this.tuned.value }, { pointer: this.tuned.minScale }, { pointer: this.tuned.maxScale },
      { pointer: this.groupMin }, { pointer: this.groupMax }, { pointer: this.groupScale }, { pointer: this.groupZero },
      { pointer: this.groupFloored }, { pointer: this.relCode }, { pointer: this.inRange }, { pointer: lossGradient ?? this.lossGrad },
      { i64: n }, { i64: k }, { i64: quant.groupSize }, { i64: this.nGroups }, { i32: quant.bits }, { i32: quant.sym ? 1 : 0 }, { i32: tuneMinmax ? 1 : 0 },
      { i64: doubleBits(lrValue) }, { i64: doubleBits(lrMinmax) }, { i64: doubleBits(2 / this.problem.lossNorm) }, { pointer: this.status },
    ]);
  }

  keepBest(): void {
    this.checkLive("keepBest");
    const context = this.engine.context;
    const { outFeatures: n, inFeatures: k } = this.problem;
    context.copy(this.bestTuned.value, this.tuned.value, n * k * 4);
    context.copy(this.bestTuned.minScale, this.tuned.minScale, n * this.nGroups * 4);
    context.copy(this.bestTuned.maxScale, this.tuned.maxScale, n * this.nGroups * 4);
  }

  best(): SignRoundParams {
    this.checkLive("best");
    const context = this.engine.context;
    const { outFeatures: n, inFeatures: k } = this.problem;
    const best = { value: new Float32Array(n * k), minScale: new Float32Array(n * this.nGroups), maxScale: new Float32Array(n * this.nGroups) };
    context.download(this.bestTuned.value, bytesOf(best.value));
    context.download(this.bestTuned.minScale, bytesOf(best.minScale));
    context.download(this.bestTuned.maxScale, bytesOf(best.maxScale));
    this.checkStatus();
    return best;
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    for (const pointer of this.owned) this.engine.context.free(pointer);
    this.owned.length = 0;
  }

  private checkLive(call: string): void {
    if (this.released) throw new KernelError("LAUNCH_REFUSED", `signround: ${call} after release`);
  }

  private checkStatus(): void {
    checkStatus(this.engine.context, this.status, { format: "signround", shape: `${this.problem.outFeatures}×${this.problem.inFeatures} W${this.problem.quant.bits}G${this.problem.quant.groupSize}` });
  }
}
