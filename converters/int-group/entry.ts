import { dtypeBytes, type DType } from "../../formats/dtype.js";
import { bytesOf } from "../../formats/int-group/packed-array.js";
import { dequantize } from "../../formats/int-group/reference.js";
import { convertFloatBytes } from "../../formats/dense/convert.js";
import type { IntGroupTensor } from "../../formats/int-group/types.js";
import type { PackedIntGroup, TensorEntry } from "../checkpoint.js";

/**
 * A checkpoint entry for an integer-group packed linear weight `<prefix>.weight`: its packed
 * form for exporters that repack, and its dequantized data (reference dequant, in the scale
 * dtype as the loaders compute it) for those that write dense tensors.
 */
export function intGroupEntry(name: string, file: string, packed: PackedIntGroup, notes?: Record<string, unknown>): TensorEntry {
  const dtype: DType = packed.params.scaleDtype;
  const shape = [packed.outFeatures, packed.inFeatures];
  const nElements = packed.outFeatures * packed.inFeatures;
  const read = async () => dequantizedBytes(await packed.load(), dtype);
  return {
    name,
    representation: "int-group",
    dtype,
    shape,
    nElements,
    byteLength: nElements * dtypeBytes(dtype),
    file,
    packed,
    ...(notes === undefined ? {} : { notes }),
    read,
    readChunks: async function* (maxChunkBytes?: number) {
      // Dequantization needs the whole packed layer anyway; hand it out in row-aligned slices.
      const bytes = await read();
      const rowBytes = Math.max(1, packed.inFeatures * dtypeBytes(dtype));
      const step = maxChunkBytes === undefined ? bytes.length : Math.max(rowBytes, Math.floor(maxChunkBytes / rowBytes) * rowBytes);
      for (let at = 0; at < bytes.length; at += step) yield bytes.subarray(at, Math.min(bytes.length, at + step));
    },
  };
}

/** Reference dequant as bytes of `dtype` (F16/BF16 values are exact: dequant rounds to them). */
export function dequantizedBytes(tensor: IntGroupTensor, dtype: DType): Uint8Array {
  const f32 = bytesOf(dequantize(tensor));
  return dtype === "F32" ? f32 : convertFloatBytes(f32, "F32", dtype as "F16" | "BF16");
}
