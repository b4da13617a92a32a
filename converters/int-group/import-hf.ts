import { FormatError } from "../../formats/errors.js";
import { awqGeometry, unpackAwq } from "../../formats/int-group/awq-layout.js";
import { gptqGeometry, unpackGptq, type LayerGeometry } from "../../formats/int-group/gptq-layout.js";
import type { PackedArray } from "../../formats/packed-array.js";
import type { PackedIntGroup, QuantizationSummary, TensorEntry } from "../checkpoint.js";
import { intGroupEntry } from "./entry.js";
import type { HfIntQuantConfig, LayerQuantSpec } from "./hf-quant-config.js";

/**
 * Replaces each packed linear's stored tensors (`<m>.qweight`, `.qzeros`, `.scales`, `.g_idx`)
 * with one int-group entry `<m>.weight`, at qweight's place in storage order. Everything else
 * (biases, norms, embeddings, unquantized linears) passes through. Shapes and dtypes are
 * checked here, from headers; codes are read and decoded only when an exporter asks.
 */
export function groupIntLayers(tensors: readonly TensorEntry[], config: HfIntQuantConfig): TensorEntry[] {
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const modules = tensors.filter((t) => t.name.endsWith(".qweight")).map((t) => t.name.slice(0, -".qweight".length));
  const consumed = new Set<string>();
  const replacement = new Map<string, TensorEntry>();
  for (const module of modules) {
    const spec = config.layer(module);
    const qweight = byName.get(`${module}.qweight`)!;
    if (spec === "skip") throw new FormatError("QUANT_CONFIG_INVALID", "the config excludes this module from quantization, but it is stored packed", { file: qweight.file, tensor: qweight.name });
    const parts = packedParts(module, byName, config);
    for (const part of Object.values(parts)) if (part !== undefined) consumed.add(part.name);
    replacement.set(qweight.name, layerEntry(module, parts, spec, config));
  }
  return tensors.flatMap((t) => replacement.get(t.name) ?? (consumed.has(t.name) ? [] : [t]));
}

type Parts = { qweight: TensorEntry; qzeros: TensorEntry; scales: TensorEntry; gIdx: TensorEntry | undefined };

function packedParts(module: string, byName: Map<string, TensorEntry>, config: HfIntQuantConfig): Parts {
  const need = (suffix: string) => {
    const entry = byName.get(`${module}.${suffix}`);
    if (entry === undefined) throw new FormatError("TENSOR_MISSING", `packed linear "${module}" has a qweight but no ${suffix}`, { file: byName.get(`${module}.qweight`)!.file, tensor: `${module}.${suffix}` });
    return entry;
  };
  const gIdx = config.tensorLayout === "gptq" ? byName.get(`${module}.g_idx`) : undefined;
  return { qweight: need("qweight"), qzeros: need("qzeros"), scales: need("scales"), gIdx };
}

/** Header-only view of an entry (bytes are filled in on load). */
function headerArray(entry: TensorEntry, bytes: Uint8Array = new Uint8Array(0)): PackedArray {
  return { name: entry.name, dtype: entry.dtype, shape: entry.shape, bytes, file: entry.file, ...(entry.byteOffset === undefined ? {} : { byteOffset: entry.byteOffset }) };
}

function layerEntry(module: string, parts: Parts, spec: LayerQuantSpec, config: HfIntQuantConfig): TensorEntry {
  const headers = { qweight: headerArray(parts.qweight), qzeros: headerArray(parts.qzeros), scales: headerArray(parts.scales), gIdx: parts.gIdx === undefined ? undefined : headerArray(parts.gIdx) };
  const gptqSpec = { ...spec, zeros: config.zeros };
  const geometry: LayerGeometry = config.tensorLayout === "gptq" ? gptqGeometry(headers, gptqSpec) : awqGeometry(headers, spec);
  const storedBytes = Object.values(parts).reduce((sum, p) => sum + (p?.byteLength ?? 0), 0);
  const load = async () => {
    const [qweight, qzeros, scales, gIdx] = await Promise.all([parts.qweight, parts.qzeros, parts.scales, parts.gIdx].map(async (p) => (p === undefined ? undefined : headerArray(p, await p.read()))));
    const arrays = { qweight: qweight!, qzeros: qzeros!, scales: scales!, gIdx };
    return config.tensorLayout === "gptq" ? unpackGptq(arrays, gptqSpec) : unpackAwq(arrays, spec);
  };
  const packed: PackedIntGroup = {
    representation: "int-group",
    // sym is confirmed against the zeros on load (a sym config with other zeros decodes as asym).
    params: { bits: spec.bits, groupSize: geometry.groupSize, sym: spec.sym, scaleDtype: parts.scales.dtype as "F16" | "BF16" | "F32" },
    outFeatures: geometry.outFeatures,
    inFeatures: geometry.inFeatures,
    actOrder: config.descAct && parts.gIdx !== undefined,
    storedBytes,
    sourceLayout: config.tensorLayout === "awq" ? "awq" : `gptq-${config.zeros}`,
    load,
  };
  return intGroupEntry(`${module}.weight`, parts.qweight.file, packed, { sourceLayout: packed.sourceLayout, quantMethod: config.method, format: config.format });
}

export function summarise(config: HfIntQuantConfig): QuantizationSummary {
  return { method: config.method, format: config.format, bits: config.global.bits, groupSize: config.global.groupSize, sym: config.global.sym, descAct: config.descAct };
}

