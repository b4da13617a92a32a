import { dtypeBytes, type DType } from "../formats/dtype.js";
import type { PackedTensor, TensorEntry } from "./checkpoint.js";

/**
 * A checkpoint entry for a packed linear weight [out, in]: the packed form for exporters that
 * carry it over, and its dequantized bytes (in `dtype`) for those that write dense tensors.
 * Dequantization needs the whole packed layer, so `readChunks` slices one read into whole rows.
 */
export function packedEntry(name: string, file: string, packed: PackedTensor, dtype: DType, dequantized: () => Promise<Uint8Array>, notes?: Record<string, unknown>): TensorEntry {
  const shape = [packed.outFeatures, packed.inFeatures];
  const nElements = packed.outFeatures * packed.inFeatures;
  return {
    name,
    representation: packed.representation,
    dtype,
    shape,
    nElements,
    byteLength: nElements * dtypeBytes(dtype),
    file,
    packed,
    ...(notes === undefined ? {} : { notes }),
    read: dequantized,
    readChunks: async function* (maxChunkBytes?: number) {
      const bytes = await dequantized();
      const rowBytes = Math.max(1, packed.inFeatures * dtypeBytes(dtype));
      const step = maxChunkBytes === undefined ? bytes.length : Math.max(rowBytes, Math.floor(maxChunkBytes / rowBytes) * rowBytes);
      for (let at = 0; at < bytes.length; at += step) yield bytes.subarray(at, Math.min(bytes.length, at + step));
    },
  };
}
