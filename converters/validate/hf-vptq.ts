import type { VptqTensor } from "../../formats/vptq/types.js";
import type { TensorEntry } from "../checkpoint.js";
import type { HfVptqConfig } from "../vptq/hf-config.js";
import { groupVptqLayers } from "../vptq/import-hf.js";
import { groupModules, modulesWith, reportOrphans, scanArray, type QuantContext, type QuantResult } from "./hf-quant.js";
import type { ArrayRole, Declared, ScanArray } from "./types.js";

/**
 * HF VPTQ layers: per module, the importer's grouping (the layer's config_for_layers entry, its
 * parameters against each other and the layer shape, every array the parameters call for with
 * its dtype and shape, none they do not) and its unpacker (outlier indices below their codebook,
 * perm a permutation, index padding bits zero). Both ways with the config: every layer of
 * config_for_layers is stored. Deep: codebooks and norms are finite.
 */

const PARTS = [".centroids.weight", ".res_centroids.weight", ".outlier_centroids.weight", ".outlier_indices", ".perm", ".weight_scale", ".weight_bias"];
const ROLES: [string, ArrayRole][] = [["centroids.weight", "codebook"], ["res_centroids.weight", "codebook"], ["outlier_centroids.weight", "codebook"], ["weight_scale", "norm"], ["weight_bias", "norm"]];

export async function checkVptqLayers(tensors: TensorEntry[], vc: HfVptqConfig, ctx: QuantContext): Promise<QuantResult> {
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const orphans = reportOrphans(tensors, ".indices", PARTS, "VPTQ linear", ctx);
  const stored = new Set(modulesWith(tensors, ".indices"));
  const perLayer = (ctx.rawQuant as { config_for_layers?: unknown }).config_for_layers;
  for (const module of typeof perLayer === "object" && perLayer !== null ? Object.keys(perLayer) : []) {
    if (!stored.has(module) && !orphans.has(module)) ctx.findings.add("TENSOR_MISSING", "config_for_layers configures this VPTQ linear, but it is not stored", { file: ctx.configFile, tensor: `${module}.indices` });
  }
  const arrays: ScanArray[] = [];
  let declared: Declared = { method: "vptq" };
  const { entries, failed } = await groupModules<VptqTensor>(tensors, [...stored], {
    group: (subset) => groupVptqLayers(subset, vc, ctx.configFile),
    loaded: (module, _entry, t) => {
      const p = t.params;
      if (declared.vptq === undefined) declared = { method: "vptq", vptq: { vectorLen: p.vectorLen, centroids: p.numCentroids, resCentroids: p.numResCentroids } };
      for (const [suffix, role] of ROLES) {
        const part = byName.get(`${module}.${suffix}`);
        if (part !== undefined) arrays.push(scanArray(part, role, ctx));
      }
    },
  }, ctx);
  for (const m of orphans) failed.add(m);
  return { entries, arrays, failedModules: failed, declared };
}
