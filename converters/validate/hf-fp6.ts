import type { FpxTensor } from "../../formats/fpx/types.js";
import type { TensorEntry } from "../checkpoint.js";
import type { HfFpxConfig } from "../fpx/hf-config.js";
import { groupFpxLayers } from "../fpx/import-hf.js";
import { llamaTensorTable } from "./config-tensors.js";
import { groupModules, modulesWith, reportOrphans, scanArray, type QuantContext, type QuantResult } from "./hf-quant.js";
import type { ScanArray } from "./types.js";

/**
 * HF FP6/FP5 (fp6_tc) layers: per module, the importer's grouping (weight_packed U8
 * [out, in·nbits/8] in 64×64 tiles, weight_scale F16 [out]). Every code of an eXmY format is a
 * valid number, so the values left to judge are the scales (deep pass: finite and > 0, since a
 * scale is max|w| of its row over the format's maximum). A weight_packed whose width fits the
 * config's in_features at another bit width is reported as BITS_MISMATCH.
 */
export async function checkFpxLayers(tensors: TensorEntry[], fc: HfFpxConfig, ctx: QuantContext): Promise<QuantResult> {
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const orphans = reportOrphans(tensors, ".weight_packed", [".weight_scale"], "FPx linear", ctx);
  const arrays: ScanArray[] = [];
  const expected = ctx.config === undefined ? undefined : llamaTensorTable(ctx.config);
  /** Reports (and returns true) when weight_packed's width means another bit width at the config's in_features. */
  const bitsMismatch = (module: string): boolean => {
    const want = expected?.get(`${module}.weight`)?.shape;
    const packed = byName.get(`${module}.weight_packed`);
    if (want === undefined || packed === undefined || packed.shape.length !== 2) return false;
    // A row of codes is in_features · nbits / 8 bytes: at the config's in_features that gives the stored bits.
    const storedBits = (packed.shape[1]! * 8) / want[1]!;
    if (!Number.isInteger(storedBits) || storedBits === fc.format.nbits) return false;
    ctx.findings.add("BITS_MISMATCH", `weight_packed rows hold ${storedBits}-bit codes for in_features ${want[1]}, but the config declares ${fc.format.name} (${fc.format.nbits} bits)`, { file: packed.file, tensor: packed.name, byteOffset: packed.byteOffset, expected: `${fc.format.nbits} bits (${ctx.configFile})`, actual: `${storedBits} bits` });
    return true;
  };
  const { entries, failed } = await groupModules<FpxTensor>(tensors, modulesWith(tensors, ".weight_packed"), {
    group: (subset) => groupFpxLayers(subset, fc),
    explain: (module) => bitsMismatch(module),
    loaded: (module) => {
      if (bitsMismatch(module)) return false;
      arrays.push(scanArray(byName.get(`${module}.weight_scale`)!, "positive-scale", ctx));
      return true;
    },
  }, ctx);
  for (const m of orphans) failed.add(m);
  return { entries, arrays, failedModules: failed, declared: { method: "fp6_tc", bits: fc.format.nbits } };
}
