import { FormatError, isLmpackError } from "../../formats/errors.js";
import { fpxFormat, type FpxFormat } from "../../formats/fpx/format.js";
import { regionsOf } from "../../formats/fpx/tc-layout.js";
import type { QuantizationSummary } from "../checkpoint.js";

/**
 * `quantization_config` of FP6-LLM tensor-core checkpoints. No Hub standard exists for FP6
 * weights; this is the convention of ../shared/checkpoints/tinystories-656K-fp6 (its README):
 *
 *   {"quant_method": "fp6_tc", "ebits": 3, "mbits": 2, "layout": "fp6_llm_4+2",
 *    "modules_to_not_convert": ["lm_head"]}
 *
 * with, per quantized linear `<m>`, `<m>.weight_packed` U8 [out, in·nbits/8] (tc-layout bytes,
 * not row-major) and `<m>.weight_scale` F16 [out]. FP5 formats use layout "fp6_llm_4+1".
 */
export const FP6_TC_METHOD = "fp6_tc";

export interface HfFpxConfig {
  format: FpxFormat;
  layout: string;
  /** Module names (or name fragments) left unquantized. */
  modulesToNotConvert: string[];
}

/** Layout label of nbits: its regions from widest to narrowest ("fp6_llm_4+2", "fp6_llm_4+1"). */
export function tcLayoutName(nbits: number): string {
  return `fp6_llm_${regionsOf(nbits).reverse().join("+")}`;
}

/** Parses the config; undefined when it is absent or another method. */
export function parseHfFpxConfig(raw: unknown, file: string): HfFpxConfig | undefined {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return undefined;
  const q = raw as Record<string, unknown>;
  if (q["quant_method"] !== FP6_TC_METHOD) return undefined;
  const ebits = q["ebits"] ?? 3;
  const mbits = q["mbits"] ?? 2;
  let format: FpxFormat;
  try {
    if (typeof ebits !== "number" || typeof mbits !== "number") throw new TypeError("not numbers");
    format = fpxFormat(ebits, mbits);
  } catch (cause) {
    throw new FormatError("QUANT_CONFIG_INVALID", `fp6_tc ebits/mbits do not name a supported FPx format${isLmpackError(cause) ? `: ${cause.detail}` : ""}`, { file, expected: "ebits ≥ 1, mbits ≥ 0, 3 ≤ 1 + ebits + mbits ≤ 7", actual: `ebits ${JSON.stringify(ebits)}, mbits ${JSON.stringify(mbits)}` });
  }
  const layout = tcLayoutName(format.nbits);
  if (q["layout"] !== undefined && q["layout"] !== layout) throw new FormatError("QUANT_CONFIG_INVALID", `fp6_tc layout "${String(q["layout"])}" is not the tensor-core layout of ${format.name}`, { file, expected: layout, actual: q["layout"] });
  const skip = q["modules_to_not_convert"] ?? [];
  if (!Array.isArray(skip) || skip.some((s) => typeof s !== "string")) throw new FormatError("QUANT_CONFIG_INVALID", "modules_to_not_convert must be a list of strings", { file, actual: JSON.stringify(skip) });
  return { format, layout, modulesToNotConvert: skip as string[] };
}

/** The config lmpack writes (key order as the reference checkpoint's). */
export function buildHfFpxConfig(format: FpxFormat, modulesToNotConvert: string[]): Record<string, unknown> {
  return { quant_method: FP6_TC_METHOD, ebits: format.ebits, mbits: format.mbits, layout: tcLayoutName(format.nbits), modules_to_not_convert: modulesToNotConvert };
}

/** How inspect reports an FPx checkpoint: per-row scales, so group size −1 (per channel). */
export function fpxQuantizationSummary(method: string, format: FpxFormat): QuantizationSummary {
  return { method, format: format.name, bits: format.nbits, groupSize: -1, sym: true, descAct: false };
}
