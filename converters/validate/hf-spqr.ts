import type { SpqrTensor } from "../../formats/spqr/types.js";
import type { TensorEntry } from "../checkpoint.js";
import { SPQR_ARRAYS, type HfSpqrConfig } from "../spqr/hf-config.js";
import { groupSpqrLayers } from "../spqr/import-hf.js";
import type { Findings } from "./findings.js";
import { groupModules, modulesWith, reportOrphans, scanArray, type QuantContext, type QuantResult } from "./hf-quant.js";
import type { ScanArray } from "./types.js";

/**
 * HF SpQR layers: per module, the importer's grouping (array shapes against each other and the
 * config's `shapes`) and its unpacker (in_perm a permutation, row_offsets starting at 0 and
 * monotone, PTCSR blocks whole, columns below in_features, the duplicated second-order bytes
 * equal). Both ways with the config: every module its `shapes` names is stored. Deep: the fp16
 * second-order statistics and outlier values are finite.
 */
export async function checkSpqrLayers(tensors: TensorEntry[], sc: HfSpqrConfig, ctx: QuantContext): Promise<QuantResult> {
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const orphans = reportOrphans(tensors, ".dense_weights", SPQR_ARRAYS.filter((a) => a !== "dense_weights").map((a) => `.${a}`), "SpQR linear", ctx);
  const stored = new Set(modulesWith(tensors, ".dense_weights"));
  const declared = new Set(Object.keys(sc.shapes).map((key) => key.replace(/\.[a-z_]+\.shape$/, "")));
  for (const module of declared) {
    if (!stored.has(module) && !orphans.has(module)) ctx.findings.add("TENSOR_MISSING", "the config's shapes describe this SpQR linear, but it is not stored", { file: ctx.configFile, tensor: `${module}.dense_weights` });
  }
  const arrays: ScanArray[] = [];
  const { entries, failed } = await groupModules<SpqrTensor>(tensors, [...stored], {
    group: (subset) => groupSpqrLayers(subset, sc, ctx.configFile),
    loaded: (module, _entry, t) => {
      arrays.push(scanArray(byName.get(`${module}.col_vals`)!, "outlier-colvals", ctx));
      if (ctx.deep) return checkStatistics(t, byName.get(`${module}.dense_weights`)!, ctx.findings);
      return true;
    },
  }, ctx);
  for (const m of orphans) failed.add(m);
  return { entries, arrays, failedModules: failed, declared: { method: "spqr", bits: 3 } };
}

const TILE = 16;
const STAT_NAMES = ["scale of the scales", "zero of the scales", "scale of the zeros", "zero of the zeros"] as const;

/**
 * The fp16 second-order statistics, stored a byte at a time in bits 54–61 of the tile's words
 * (formats/spqr/hf-layout.ts): a non-finite one is reported at the first word of its pair.
 */
export function checkStatistics(t: SpqrTensor, dense: { file: string; name: string; byteOffset?: number | undefined }, findings: Findings): boolean {
  const rowTiles = t.outFeatures / TILE;
  const tilesAcross = t.inFeatures / TILE;
  const fields = [t.scaleScale, t.zeroScale, t.scaleZero, t.zeroZero];
  let ok = true;
  fields.forEach((field, f) => {
    const bad = field.findIndex((h) => (h & 0x7c00) === 0x7c00);
    if (bad < 0) return;
    ok = false;
    const ti = bad % rowTiles;
    const tj = Math.floor(bad / rowTiles);
    const word = (ti * tilesAcross + tj) * TILE + 4 * f;
    const count = field.reduce((n, h) => n + ((h & 0x7c00) === 0x7c00 ? 1 : 0), 0);
    findings.add("NONFINITE_VALUE", `tile (${ti}, ${tj}): the fp16 ${STAT_NAMES[f]} is not finite (${count} tile${count === 1 ? "" : "s"} in this layer)`, { file: dense.file, tensor: dense.name, byteOffset: (dense.byteOffset ?? 0) + 8 * word, expected: "a finite fp16", actual: `0x${field[bad]!.toString(16)}` });
  });
  return ok;
}
