import { FormatError, isLmpackError } from "../../formats/errors.js";
import { checkVptqParams, unpackVptq, VPTQ_SUFFIXES, vptqArraySpecs, type VptqSuffix } from "../../formats/vptq/hf-layout.js";
import type { VptqFloat } from "../../formats/vptq/types.js";
import type { PackedArray } from "../../formats/packed-array.js";
import type { PackedVptq, TensorEntry } from "../checkpoint.js";
import { vptqEntry } from "./entry.js";
import type { HfVptqConfig } from "./hf-config.js";

/**
 * Replaces each VPTQ linear's arrays (`<m>.indices`, `<m>.centroids.weight`, ...) with one vptq
 * entry `<m>.weight` at the indices' place; `<m>.bias` and every other tensor pass through. The
 * layer's parameters and shape come from config.json (never the repo name); every array the
 * parameters call for must be there with the right dtype and shape (checked from headers),
 * and its values are validated when loaded (hf-layout.ts).
 */
export function groupVptqLayers(tensors: readonly TensorEntry[], config: HfVptqConfig, configFile: string): TensorEntry[] {
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const consumed = new Set<string>();
  const replacement = new Map<string, TensorEntry>();
  for (const indices of tensors.filter((t) => t.name.endsWith(".indices"))) {
    const module = indices.name.slice(0, -".indices".length);
    const layer = config.layer(module);
    if (layer === undefined) throw new FormatError("QUANT_CONFIG_INVALID", `config_for_layers has no entry for ${module}, which is stored packed`, { file: configFile, tensor: indices.name });
    try {
      checkVptqParams(layer.params, layer.outFeatures, layer.inFeatures, module);
    } catch (cause) {
      throw new FormatError("QUANT_CONFIG_INVALID", `${module}: ${isLmpackError(cause) ? cause.detail : "inconsistent parameters"}`, { file: configFile, tensor: module, cause });
    }
    const centroids = byName.get(`${module}.centroids.weight`);
    if (centroids === undefined) throw new FormatError("TENSOR_MISSING", `VPTQ linear "${module}" has indices but no centroids.weight`, { file: indices.file, tensor: `${module}.centroids.weight` });
    const dtype = centroids.dtype as VptqFloat;
    const specs = vptqArraySpecs(layer.params, layer.outFeatures, layer.inFeatures, dtype === "BF16" ? "BF16" : "F16");
    const parts = new Map<VptqSuffix, TensorEntry>();
    for (const suffix of VPTQ_SUFFIXES) {
      const entry = byName.get(`${module}.${suffix}`);
      const spec = specs.get(suffix);
      if (spec === undefined) {
        if (entry !== undefined) throw new FormatError("QUANT_CONFIG_INVALID", `${entry.name} is stored, but the layer's config does not call for it`, { file: configFile, tensor: entry.name });
        continue;
      }
      if (entry === undefined) throw new FormatError("TENSOR_MISSING", `VPTQ linear "${module}" lacks ${suffix}`, { file: indices.file, tensor: `${module}.${suffix}` });
      if (entry.dtype !== spec.dtype) throw new FormatError("PACKED_DTYPE_MISMATCH", `${suffix} has the wrong dtype`, { file: entry.file, tensor: entry.name, byteOffset: entry.byteOffset, expected: spec.dtype, actual: entry.dtype });
      if (entry.shape.join() !== spec.shape.join()) {
        throw new FormatError("PACKED_SHAPE_MISMATCH", `${suffix} does not match the layer's config`, { file: entry.file, tensor: entry.name, byteOffset: entry.byteOffset, expected: `[${spec.shape.join(", ")}]`, actual: `[${entry.shape.join(", ")}]` });
      }
      parts.set(suffix, entry);
      consumed.add(entry.name);
    }
    const load = async () => {
      const arrays = new Map<VptqSuffix, PackedArray>();
      for (const [suffix, e] of parts) arrays.set(suffix, { name: e.name, dtype: e.dtype, shape: e.shape, bytes: await e.read(), file: e.file, ...(e.byteOffset === undefined ? {} : { byteOffset: e.byteOffset }) });
      return unpackVptq(arrays, layer.params, layer.outFeatures, layer.inFeatures, module);
    };
    const storedBytes = [...parts.values()].reduce((sum, e) => sum + e.byteLength, 0);
    const packed: PackedVptq = { representation: "vptq", params: layer.params, outFeatures: layer.outFeatures, inFeatures: layer.inFeatures, dtype: centroids.dtype === "BF16" ? "BF16" : "F16", storedBytes, sourceLayout: "hf-vptq", load };
    replacement.set(indices.name, vptqEntry(`${module}.weight`, indices.file, packed, { sourceLayout: "hf-vptq", hasBias: layer.bias }));
  }
  return tensors.flatMap((t) => replacement.get(t.name) ?? (consumed.has(t.name) ? [] : [t]));
}
