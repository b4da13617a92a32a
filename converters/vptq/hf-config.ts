import { FormatError } from "../../formats/errors.js";
import { indexBits, type VptqParams } from "../../formats/vptq/types.js";
import type { QuantizationSummary } from "../checkpoint.js";

/**
 * `quantization_config` of VPTQ checkpoints (microsoft/VPTQ vptq/utils/pack.py
 * `convert_idx_dtype`; transformers VptqConfig; ../shared/ref/vptq-spqr.md 1.3):
 *
 *   {"quant_method": "vptq", "config_for_layers": {"<module path>": {
 *      "bias": false, "enable_norm": true, "enable_perm": true, "group_num": 1, "group_size": 128,
 *      "in_features": 128, "indices_as_float": false, "is_indice_packed": true,
 *      "num_centroids": [-1, 256], "num_res_centroids": [-1, 16], "out_features": 128,
 *      "outlier_size": 0, "vector_lens": [-1, 8]}, ...},
 *    "shared_layer_config": {"<leaf name>": {...}}}
 *
 * Per-layer entries win over shared ones; unknown keys (the algorithm branch's norm_dim,
 * enable_proxy_error) are ignored; the repo name is never consulted.
 */
export const VPTQ_METHOD = "vptq";

export interface VptqLayerConfig {
  params: VptqParams;
  inFeatures: number;
  outFeatures: number;
  bias: boolean;
}

export interface HfVptqConfig {
  /** The layer's configuration, or undefined when the config does not name it. */
  layer(module: string): VptqLayerConfig | undefined;
}

export function parseHfVptqConfig(raw: unknown, file: string): HfVptqConfig | undefined {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return undefined;
  const q = raw as Record<string, unknown>;
  if (q["quant_method"] !== VPTQ_METHOD) return undefined;
  const perLayer = objectOf(q["config_for_layers"], "config_for_layers", file);
  const shared = objectOf(q["shared_layer_config"], "shared_layer_config", file);
  return {
    layer: (module) => {
      const entry = perLayer[module] ?? shared[module.slice(module.lastIndexOf(".") + 1)];
      return entry === undefined ? undefined : layerConfig(entry, module, file);
    },
  };
}

function objectOf(value: unknown, key: string, file: string): Record<string, unknown> {
  if (value === undefined || value === null) return {};
  if (typeof value !== "object" || Array.isArray(value)) throw new FormatError("QUANT_CONFIG_INVALID", `${key} must be an object`, { file });
  return value as Record<string, unknown>;
}

function layerConfig(entry: unknown, module: string, file: string): VptqLayerConfig {
  const bad = (detail: string, actual?: unknown) => new FormatError("QUANT_CONFIG_INVALID", `${module}: ${detail}`, { file, actual: actual === undefined ? undefined : JSON.stringify(actual) });
  if (typeof entry !== "object" || entry === null || Array.isArray(entry)) throw bad("layer config must be an object");
  const c = entry as Record<string, unknown>;
  const int = (key: string) => {
    const v = c[key];
    if (!Number.isSafeInteger(v)) throw bad(`${key} must be an integer`, v);
    return v as number;
  };
  const pair = (key: string): [number, number] => {
    const v = c[key];
    if (!Array.isArray(v) || v.length !== 2 || !v.every(Number.isSafeInteger)) throw bad(`${key} must be a pair of integers`, v);
    return v as [number, number];
  };
  const flag = (key: string, fallback: boolean) => {
    const v = c[key] ?? fallback;
    if (typeof v !== "boolean") throw bad(`${key} must be a boolean`, v);
    return v;
  };
  if (c["is_indice_packed"] === false) throw bad("unpacked indices (is_indice_packed false) are not a checkpoint layout transformers loads");
  if (c["indices_as_float"] === true) throw bad("indices_as_float (fp16-typed indices) is not supported");
  const [outlierVectorLen, vectorLen] = pair("vector_lens");
  const [outlierNumCentroids, numCentroids] = pair("num_centroids");
  const [, numResCentroids] = pair("num_res_centroids");
  const outlierSize = int("outlier_size");
  return {
    params: {
      vectorLen,
      numCentroids,
      numResCentroids: Math.max(0, numResCentroids),
      groupNum: int("group_num"),
      groupSize: int("group_size"),
      outlierSize,
      outlierVectorLen: outlierSize > 0 ? outlierVectorLen : 0,
      outlierNumCentroids: outlierSize > 0 ? outlierNumCentroids : 0,
      enableNorm: flag("enable_norm", false),
      enablePerm: flag("enable_perm", false),
    },
    inFeatures: int("in_features"),
    outFeatures: int("out_features"),
    bias: flag("bias", false),
  };
}

/** One `config_for_layers` entry, with every key the vptq and transformers loaders read. */
export function buildVptqLayerConfig(p: VptqParams, inFeatures: number, outFeatures: number, bias: boolean): Record<string, unknown> {
  return {
    bias,
    enable_norm: p.enableNorm,
    enable_perm: p.enablePerm,
    group_num: p.groupNum,
    group_size: p.groupSize,
    in_features: inFeatures,
    indices_as_float: false,
    is_indice_packed: true,
    num_centroids: [p.outlierSize > 0 ? p.outlierNumCentroids : -1, p.numCentroids],
    num_res_centroids: [-1, p.numResCentroids > 0 ? p.numResCentroids : -1],
    out_features: outFeatures,
    outlier_size: p.outlierSize,
    vector_lens: [p.outlierSize > 0 ? p.outlierVectorLen : -1, p.vectorLen],
  };
}

export function vptqQuantizationSummary(method: string, first: VptqParams | undefined): QuantizationSummary {
  // bits: index bits per weight of the first layer, (log2 k + log2 k_res) / v, as the VPTQ names count them.
  const bits = first === undefined ? 0 : (indexBits(first.numCentroids) + indexBits(first.numResCentroids)) / first.vectorLen;
  return { method, format: first === undefined ? "" : `v${first.vectorLen}-k${first.numCentroids}-${first.numResCentroids}`, bits, groupSize: first?.groupSize ?? 0, sym: false, descAct: first?.enablePerm ?? false };
}
