import { dtypeBytes } from "../../formats/dtype.js";
import { convertFloatBytes } from "../../formats/dense/convert.js";
import { viewAs } from "../../formats/packed-array.js";
import type { Checkpoint, TensorEntry } from "../checkpoint.js";
import { DEFAULT_MAX_RELATIVE_RMS, errorStats } from "../verify/verify-checkpoint.js";
import type { Findings } from "./findings.js";
import { arrayChunks, type ScanArray } from "./types.js";

/**
 * The numeric checks of `validate --deep`: stored scales, codebooks, outliers, norms and dense
 * weights are finite (and scales not degenerate), packed layers dequantize to something other
 * than zeros, and, with a base model, to weights near the base's. Arrays are read in chunks, so
 * memory stays flat; a dequantized layer is held one at a time.
 */

/** Bits of a float element: exponent all ones means NaN or ±Inf; sign and the rest for zero and sign tests. */
const FLOAT_BITS = {
  F16: { exponent: 0x7c00, magnitude: 0x7fff, sign: 0x8000 },
  BF16: { exponent: 0x7f80, magnitude: 0x7fff, sign: 0x8000 },
  F32: { exponent: 0x7f800000, magnitude: 0x7fffffff, sign: 0x80000000 },
} as const;

interface Tally {
  first: number;
  count: number;
  value: number;
}

/** Scans each array for values its role forbids; one finding per array and kind of fault, at the first bad element. */
export async function scanArrays(arrays: readonly ScanArray[], findings: Findings): Promise<void> {
  for (const array of arrays) {
    const bits = array.role === "outlier-colvals" ? FLOAT_BITS.F16 : FLOAT_BITS[array.dtype as keyof typeof FLOAT_BITS];
    // Only the float dtypes carry values to judge (an empty SpQR col_vals may be F32 [0]).
    if (bits === undefined || (array.role === "outlier-colvals" && array.dtype !== "I32")) continue;
    const elementBytes = dtypeBytes(array.dtype);
    const nonFinite: Tally = { first: -1, count: 0, value: 0 };
    const degenerate: Tally = { first: -1, count: 0, value: 0 };
    let index = 0;
    for await (const chunk of arrayChunks(array)) {
      const words = elementBytes === 2 ? viewAs(chunk, Uint16Array) : viewAs(chunk, Uint32Array);
      for (let i = 0; i < words.length; i++, index++) {
        const h = array.role === "outlier-colvals" ? words[i]! >>> 16 : words[i]!;
        if ((h & bits.exponent) === bits.exponent) tally(nonFinite, index, h);
        else if (array.role === "scale" ? (h & bits.magnitude) === 0 : array.role === "positive-scale" && ((h & bits.magnitude) === 0 || (h & bits.sign) !== 0)) tally(degenerate, index, h);
      }
    }
    const where = (t: Tally) => ({ file: array.file, tensor: array.name, byteOffset: array.byteOffset + t.first * elementBytes, actual: `0x${(t.value >>> 0).toString(16)}` });
    const of = (t: Tally) => `element ${t.first}${t.count > 1 ? ` (and ${t.count - 1} more)` : ""}`;
    if (nonFinite.count > 0) findings.add("NONFINITE_VALUE", `${array.role === "outlier-colvals" ? "outlier value" : array.role} ${of(nonFinite)} is NaN or infinite`, { ...where(nonFinite), expected: "a finite value" });
    if (degenerate.count > 0) findings.add("DEGENERATE_SCALE", `scale ${of(degenerate)} is ${array.role === "positive-scale" ? "zero or negative (this format's scales are max|w| over a positive maximum)" : "zero (its whole group dequantizes to 0)"}`, { ...where(degenerate), expected: array.role === "positive-scale" ? "> 0" : "≠ 0" });
  }
}

function tally(t: Tally, index: number, value: number): void {
  if (t.count === 0) {
    t.first = index;
    t.value = value;
  }
  t.count++;
}

export interface DequantOptions {
  base?: Checkpoint | undefined;
  maxRelativeRms?: number;
}

/**
 * Each packed layer dequantized: not all zeros, finite (unless a stored array was already
 * reported), and with a base, its relative RMS error against the base's tensor of the same name
 * within `maxRelativeRms` (verify's threshold: real quantizers stay under 0.45, broken layouts
 * give 1 to 1.4). Dense float tensors are compared with the base as well.
 */
export async function checkDequantized(entries: readonly TensorEntry[], findings: Findings, options: DequantOptions = {}): Promise<void> {
  const maxRelativeRms = options.maxRelativeRms ?? DEFAULT_MAX_RELATIVE_RMS;
  const baseByName = new Map((options.base?.tensors ?? []).map((t) => [t.name, t]));
  for (const entry of entries) {
    const isFloat = entry.dtype === "F32" || entry.dtype === "F16" || entry.dtype === "BF16";
    if (!isFloat || (entry.packed === undefined && options.base === undefined)) continue;
    // A layer whose stored arrays already have a finding (under its own or, for GGUF, the file's name) is not judged again.
    const names = [entry.name, entry.notes?.["ggufName"]].filter((n): n is string => typeof n === "string");
    const modules = names.map((n) => `${n.replace(/\.weight$/, "")}.`);
    if (findings.list.some((f) => f.tensor !== undefined && (names.includes(f.tensor) || modules.some((m) => f.tensor!.startsWith(m))))) continue;
    const where = { file: entry.file, tensor: entry.name };
    const weights = await findings.guard(where, async () => asFloat32(await entry.read(), entry.dtype as "F32" | "F16" | "BF16"));
    if (weights === undefined) continue;
    if (entry.packed !== undefined) {
      let nonFinite = 0;
      let nonZero = 0;
      for (const w of weights) {
        if (!Number.isFinite(w)) nonFinite++;
        else if (w !== 0) nonZero++;
      }
      if (nonFinite > 0) findings.add("NONFINITE_VALUE", `${nonFinite} dequantized weights are NaN or infinite`, { ...where, expected: "finite weights" });
      else if (nonZero === 0) findings.add("DEGENERATE_WEIGHTS", "every dequantized weight is zero", { ...where, expected: "a nonzero layer" });
    }
    const original = baseByName.get(entry.name);
    if (options.base === undefined) continue;
    if (original === undefined) {
      if (entry.packed !== undefined) findings.add("BASE_MISMATCH", "the base model has no tensor of this name to compare with", { ...where, expected: `a tensor in ${options.base.location}` }, "warning");
      continue;
    }
    if (original.dtype !== "F32" && original.dtype !== "F16" && original.dtype !== "BF16") continue;
    if (original.shape.join() !== entry.shape.join()) {
      findings.add("BASE_MISMATCH", "shape differs from the base model's", { ...where, expected: `[${original.shape.join(", ")}]`, actual: `[${entry.shape.join(", ")}]` });
      continue;
    }
    const reference = await findings.guard({ file: original.file, tensor: original.name }, async () => asFloat32(await original.read(), original.dtype as "F32" | "F16" | "BF16"));
    if (reference === undefined) continue;
    const stats = errorStats(weights, reference);
    if (!(stats.relativeRmsError <= maxRelativeRms)) {
      findings.add("BASE_MISMATCH", `dequantized weights are far from the base model's (relative RMS error ${stats.relativeRmsError.toFixed(4)}, SNR ${stats.snrDb.toFixed(1)} dB)`, { ...where, expected: `relative RMS error <= ${maxRelativeRms}`, actual: stats.relativeRmsError.toFixed(4) });
    }
  }
}

function asFloat32(bytes: Uint8Array, dtype: "F32" | "F16" | "BF16"): Float32Array {
  return viewAs(dtype === "F32" ? bytes : convertFloatBytes(bytes, dtype, "F32"), Float32Array);
}
