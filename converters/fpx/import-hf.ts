import { FormatError } from "../../formats/errors.js";
import { fitsTcLayout, TC_COL_MULTIPLE, TC_ROW_MULTIPLE } from "../../formats/fpx/tc-layout.js";
import { fpxStoredBytes, type FpxTensor } from "../../formats/fpx/types.js";
import { viewAs } from "../../formats/packed-array.js";
import type { PackedFpx, TensorEntry } from "../checkpoint.js";
import { fpxEntry } from "./entry.js";
import type { HfFpxConfig } from "./hf-config.js";

/**
 * Replaces each FPx linear's stored pair (`<m>.weight_packed` U8 [out, in·nbits/8] and
 * `<m>.weight_scale` F16 [out]) with one fpx entry `<m>.weight` at weight_packed's place in
 * storage order; everything else passes through. Shapes and dtypes are checked from headers;
 * the bytes are read only when an exporter asks.
 */
export function groupFpxLayers(tensors: readonly TensorEntry[], config: HfFpxConfig): TensorEntry[] {
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const consumed = new Set<string>();
  const replacement = new Map<string, TensorEntry>();
  for (const packedTensor of tensors.filter((t) => t.name.endsWith(".weight_packed"))) {
    const module = packedTensor.name.slice(0, -".weight_packed".length);
    const where = { file: packedTensor.file, tensor: packedTensor.name, byteOffset: packedTensor.byteOffset };
    // transformers' rule: a module is excluded when any listed string occurs in its name.
    if (config.modulesToNotConvert.some((s) => module.includes(s))) {
      throw new FormatError("QUANT_CONFIG_INVALID", "modules_to_not_convert lists this module, but it is stored packed", where);
    }
    const scale = byName.get(`${module}.weight_scale`);
    if (scale === undefined) throw new FormatError("TENSOR_MISSING", `FPx linear "${module}" has weight_packed but no weight_scale`, { file: packedTensor.file, tensor: `${module}.weight_scale` });
    const { outFeatures, inFeatures } = geometry(packedTensor, scale, config);
    consumed.add(scale.name);
    const load = async (): Promise<FpxTensor> => {
      const [packed, scaleBytes] = await Promise.all([packedTensor.read(), scale.read()]);
      return { format: config.format, outFeatures, inFeatures, packed, scales: viewAs(scaleBytes, Uint16Array) };
    };
    const packed: PackedFpx = { representation: "fpx", format: config.format, outFeatures, inFeatures, storedBytes: fpxStoredBytes(config.format, outFeatures, inFeatures), sourceLayout: "hf-fp6", load };
    replacement.set(packedTensor.name, fpxEntry(`${module}.weight`, packedTensor.file, packed, { sourceLayout: "hf-fp6", format: config.format.name }));
  }
  return tensors.flatMap((t) => replacement.get(t.name) ?? (consumed.has(t.name) ? [] : [t]));
}

function geometry(packed: TensorEntry, scale: TensorEntry, config: HfFpxConfig): { outFeatures: number; inFeatures: number } {
  const nbits = config.format.nbits;
  const where = (t: TensorEntry) => ({ file: t.file, tensor: t.name, byteOffset: t.byteOffset });
  if (packed.dtype !== "U8") throw new FormatError("PACKED_DTYPE_MISMATCH", "weight_packed must be U8", { ...where(packed), expected: "U8", actual: packed.dtype });
  if (scale.dtype !== "F16") throw new FormatError("PACKED_DTYPE_MISMATCH", "weight_scale must be F16 (the FP6-LLM kernel's scale type)", { ...where(scale), expected: "F16", actual: scale.dtype });
  const [outFeatures, packedCols] = packed.shape as [number, number];
  const inFeatures = (packedCols * 8) / nbits;
  if (packed.shape.length !== 2 || !Number.isInteger(inFeatures)) {
    throw new FormatError("PACKED_SHAPE_MISMATCH", `weight_packed must be [out, in·${nbits}/8]`, { ...where(packed), expected: `[out, in·${nbits}/8]`, actual: `[${packed.shape.join(", ")}]` });
  }
  if (!fitsTcLayout(outFeatures, inFeatures)) {
    throw new FormatError("PACKED_SHAPE_MISMATCH", `the tensor-core layout needs out % ${TC_ROW_MULTIPLE} = 0 and in % ${TC_COL_MULTIPLE} = 0`, { ...where(packed), expected: `multiples of ${TC_ROW_MULTIPLE}x${TC_COL_MULTIPLE}`, actual: `${outFeatures}x${inFeatures}` });
  }
  if (scale.shape.length !== 1 || scale.shape[0] !== outFeatures) {
    throw new FormatError("PACKED_SHAPE_MISMATCH", "weight_scale must hold one scale per output row", { ...where(scale), expected: `[${outFeatures}]`, actual: `[${scale.shape.join(", ")}]` });
  }
  return { outFeatures, inFeatures };
}
