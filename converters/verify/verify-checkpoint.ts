import { convertFloatBytes } from "../../formats/dense/convert.js";
import { FormatError, KernelError } from "../../formats/errors.js";
import { viewAs } from "../../formats/packed-array.js";
import type { Checkpoint, TensorEntry } from "../checkpoint.js";
import { inspectCheckpoint } from "../inspect.js";
import type { GpuEngine } from "../../kernels/engine.js";

/**
 * `lmpack verify`: every tensor of a packed checkpoint against the source it was made from.
 * Packed tensors are dequantized on the GPU when one is there (kernels/dequant.ts) and by the
 * CPU reference otherwise; with a GPU, the CPU reference is computed too and the two must agree
 * bit for bit. Per tensor: bits per weight (each method's own count, as `inspect`), max |error|,
 * relative RMS error √(Σ(w − ref)² / Σ ref²), SNR in dB, and the GPU = CPU verdict.
 *
 * The overall verdict fails when a GPU result differs from the CPU reference, when a weight is
 * not finite, or when a tensor's relative RMS error exceeds `maxRelativeRms`. The default, 0.8, is
 * well above real quantizers' errors: the shared tinystories-656K checkpoints give 0.086 (GPTQ
 * 4-bit), 0.05 (FP6) and up to 0.44 (VPTQ at 2.3 bits per weight). It is also below what broken
 * layouts give: 1 for a zeroed layer, and ≈ 1.4 for a transposed or mis-permuted one.
 */

export type VerifyDevice = "auto" | "cuda" | "cpu";
export const DEFAULT_MAX_RELATIVE_RMS = 0.8;

export interface TensorVerifyRow {
  name: string;
  representation: string;
  bitsPerWeight: number;
  maxAbsError: number;
  relativeRmsError: number;
  snrDb: number;
  /** Where the checked weights were dequantized. */
  device: "cuda" | "cpu";
  /** Elements whose GPU float32 bit pattern differs from the CPU reference's; undefined on the CPU path. */
  gpuCpuMismatches: number | undefined;
  nonFinite: number;
  ok: boolean;
}

export interface VerifyReport {
  device: string;
  maxRelativeRms: number;
  rows: TensorVerifyRow[];
  ok: boolean;
  /** Why the verdict failed, one line per failing tensor. */
  failures: string[];
  /** Dense tensors of the packed checkpoint that the source does not have (not checked). */
  skipped: string[];
}

export interface VerifyOptions {
  device?: VerifyDevice;
  maxRelativeRms?: number;
  onTensor?: (row: TensorVerifyRow) => void;
}

export async function verifyCheckpoint(packed: Checkpoint, source: Checkpoint, options: VerifyOptions = {}): Promise<VerifyReport> {
  const maxRelativeRms = options.maxRelativeRms ?? DEFAULT_MAX_RELATIVE_RMS;
  const engine = await openEngine(options.device ?? "auto");
  const bits = new Map(inspectCheckpoint(packed).tensors.map((t) => [t.name, t.quant?.effectiveBitsPerWeight ?? t.bitsPerWeight]));
  const sources = new Map(source.tensors.map((t) => [t.name, t]));
  const rows: TensorVerifyRow[] = [];
  const failures: string[] = [];
  const skipped: string[] = [];
  try {
    for (const entry of packed.tensors) {
      const original = sources.get(entry.name);
      if (original === undefined) {
        // A dense tensor the source lacks (a reference file of the linears alone) has nothing to be checked against.
        if (entry.packed === undefined) {
          skipped.push(entry.name);
          continue;
        }
        throw new FormatError("TENSOR_MISSING", "the source checkpoint has no tensor of this name", { file: source.location, tensor: entry.name });
      }
      if (original.nElements !== entry.nElements || original.shape.join() !== entry.shape.join()) {
        throw new FormatError("SHAPE_SIZE_MISMATCH", "packed and source shapes differ", { file: packed.location, tensor: entry.name, expected: original.shape, actual: entry.shape });
      }
      const reference = await asFloat32(original);
      const cpu = await asFloat32(entry);
      const gpu = engine === undefined ? undefined : await (await import("../../kernels/dequant.js")).dequantOnGpu(engine, entry, reference);
      const checked = gpu?.weights ?? cpu;
      const stats = errorStats(checked, reference);
      const row: TensorVerifyRow = {
        name: entry.name,
        representation: entry.representation,
        bitsPerWeight: bits.get(entry.name) ?? Number.NaN,
        maxAbsError: stats.maxAbsError,
        relativeRmsError: stats.relativeRmsError,
        snrDb: stats.snrDb,
        device: gpu === undefined ? "cpu" : "cuda",
        gpuCpuMismatches: gpu === undefined ? undefined : countMismatches(gpu.weights, cpu),
        nonFinite: stats.nonFinite,
        ok: true,
      };
      const reasons = [
        row.gpuCpuMismatches !== undefined && row.gpuCpuMismatches > 0 ? `${row.gpuCpuMismatches} elements differ between GPU and CPU` : "",
        row.nonFinite > 0 ? `${row.nonFinite} non-finite weights` : "",
        !(row.relativeRmsError <= maxRelativeRms) ? `relative RMS error ${row.relativeRmsError.toFixed(4)} > ${maxRelativeRms}` : "",
      ].filter((r) => r !== "");
      row.ok = reasons.length === 0;
      if (!row.ok) failures.push(`${entry.name}: ${reasons.join("; ")}`);
      rows.push(row);
      options.onTensor?.(row);
    }
  } finally {
    engine?.close();
  }
  if (rows.length === 0) throw new FormatError("TENSOR_MISSING", "no tensor of the packed checkpoint is in the source", { file: source.location });
  return { device: engine?.describe() ?? "cpu (CPU reference)", maxRelativeRms, rows, skipped, ok: failures.length === 0, failures };
}

async function openEngine(device: VerifyDevice): Promise<GpuEngine | undefined> {
  if (device === "cpu") return undefined;
  const { GpuEngine, gpuAvailable } = await import("../../kernels/engine.js");
  const probe = await gpuAvailable();
  if (!probe.ok) {
    if (device === "cuda") throw new KernelError("NO_DEVICE", `--device cuda: ${probe.reason}`);
    return undefined;
  }
  return GpuEngine.open();
}

async function asFloat32(entry: TensorEntry): Promise<Float32Array> {
  const bytes = await entry.read();
  if (entry.dtype !== "F32" && entry.dtype !== "F16" && entry.dtype !== "BF16") throw new FormatError("DTYPE_UNSUPPORTED", "verify compares float tensors", { tensor: entry.name, actual: entry.dtype });
  return viewAs(entry.dtype === "F32" ? bytes.slice() : convertFloatBytes(bytes, entry.dtype, "F32"), Float32Array);
}

/** Max |w − r|, √(Σ(w − r)² / Σ r²), 10·log10(Σ r² / Σ(w − r)²), and the count of non-finite w. */
export function errorStats(weights: Float32Array, reference: Float32Array): { maxAbsError: number; relativeRmsError: number; snrDb: number; nonFinite: number } {
  let [maxAbsError, squaredError, squaredReference, nonFinite] = [0, 0, 0, 0];
  for (let i = 0; i < weights.length; i++) {
    const w = weights[i]!;
    if (!Number.isFinite(w)) {
      nonFinite++;
      continue;
    }
    const e = w - reference[i]!;
    maxAbsError = Math.max(maxAbsError, Math.abs(e));
    squaredError += e * e;
    squaredReference += reference[i]! * reference[i]!;
  }
  const relativeRmsError = squaredReference === 0 ? (squaredError === 0 ? 0 : Number.POSITIVE_INFINITY) : Math.sqrt(squaredError / squaredReference);
  return { maxAbsError, relativeRmsError, snrDb: squaredError === 0 ? Number.POSITIVE_INFINITY : 10 * Math.log10(squaredReference / squaredError), nonFinite };
}

function countMismatches(a: Float32Array, b: Float32Array): number {
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  let count = 0;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) count++;
  return count;
}
