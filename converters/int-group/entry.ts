import type { DType } from "../../formats/dtype.js";
import { bytesOf } from "../../formats/packed-array.js";
import { dequantize } from "../../formats/int-group/reference.js";
import { convertFloatBytes } from "../../formats/dense/convert.js";
import type { IntGroupTensor } from "../../formats/int-group/types.js";
import type { PackedIntGroup, TensorEntry } from "../checkpoint.js";
import { packedEntry } from "../packed-entry.js";

/**
 * A checkpoint entry for an integer-group packed linear weight `<prefix>.weight`: its packed
 * form for exporters that repack, and its dequantized data (reference dequant, in the scale
 * dtype as the loaders compute it) for those that write dense tensors.
 */
export function intGroupEntry(name: string, file: string, packed: PackedIntGroup, notes?: Record<string, unknown>): TensorEntry {
  const dtype: DType = packed.params.scaleDtype;
  return packedEntry(name, file, packed, dtype, async () => dequantizedBytes(await packed.load(), dtype), notes);
}

/** Reference dequant as bytes of `dtype` (F16/BF16 values are exact: dequant rounds to them). */
export function dequantizedBytes(tensor: IntGroupTensor, dtype: DType): Uint8Array {
  const f32 = bytesOf(dequantize(tensor));
  return dtype === "F32" ? f32 : convertFloatBytes(f32, "F32", dtype as "F16" | "BF16");
}
