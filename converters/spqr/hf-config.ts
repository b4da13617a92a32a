import { FormatError } from "../../formats/errors.js";
import { SPQR_DEFAULTS } from "../../formats/spqr/types.js";
import type { QuantizationSummary } from "../checkpoint.js";

/**
 * `quantization_config` of SpQR checkpoints (Vahe1994/SpQR convert_to_hf.py; transformers
 * SpQRConfig, which accepts bits 3, beta1 16, beta2 16 only):
 *
 *   {"quant_method": "spqr", "bits": 3, "beta1": 16, "beta2": 16,
 *    "modules_to_not_convert": [<parameter names ending in .weight>],
 *    "shapes": {"<module>.dense_weights.shape": 1024, "<module>.row_offsets.shape": 129,
 *               "<module>.col_vals.shape": 173, "<module>.in_perm.shape": 64, ...}}
 *
 * transformers requires all four `shapes` entries of every converted linear.
 */
export const SPQR_METHOD = "spqr";
export const SPQR_ARRAYS = ["dense_weights", "row_offsets", "col_vals", "in_perm"] as const;

export interface HfSpqrConfig {
  /** Parameter names left unconverted. */
  modulesToNotConvert: string[];
  /** `<module>.<array>.shape` → length. */
  shapes: Record<string, number>;
}

export function parseHfSpqrConfig(raw: unknown, file: string): HfSpqrConfig | undefined {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return undefined;
  const q = raw as Record<string, unknown>;
  if (q["quant_method"] !== SPQR_METHOD) return undefined;
  for (const [key, expected] of [["bits", SPQR_DEFAULTS.bits], ["beta1", SPQR_DEFAULTS.beta1], ["beta2", SPQR_DEFAULTS.beta2]] as const) {
    if ((q[key] ?? expected) !== expected) throw new FormatError("QUANT_CONFIG_INVALID", `SpQR ${key} must be ${expected} (the only layout the format's kernels and transformers accept)`, { file, expected, actual: q[key] });
  }
  const shapes = q["shapes"] ?? {};
  if (typeof shapes !== "object" || shapes === null || Array.isArray(shapes) || Object.values(shapes).some((v) => !Number.isSafeInteger(v) || (v as number) < 0)) {
    throw new FormatError("QUANT_CONFIG_INVALID", "SpQR shapes must map names to non-negative integer lengths", { file });
  }
  const skip = q["modules_to_not_convert"] ?? [];
  if (!Array.isArray(skip) || skip.some((s) => typeof s !== "string")) throw new FormatError("QUANT_CONFIG_INVALID", "modules_to_not_convert must be a list of strings", { file });
  return { modulesToNotConvert: skip as string[], shapes: shapes as Record<string, number> };
}

export function buildHfSpqrConfig(modulesToNotConvert: string[], shapes: Record<string, number>): Record<string, unknown> {
  return { quant_method: SPQR_METHOD, bits: SPQR_DEFAULTS.bits, beta1: SPQR_DEFAULTS.beta1, beta2: SPQR_DEFAULTS.beta2, modules_to_not_convert: modulesToNotConvert, shapes };
}

export function spqrQuantizationSummary(method: string): QuantizationSummary {
  return { method, format: "16x16", bits: SPQR_DEFAULTS.bits, groupSize: SPQR_DEFAULTS.beta2, sym: false, descAct: true };
}
