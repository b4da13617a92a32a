import { SafetensorsFile } from "../../converters/safetensors/reader.js";
import type { DType } from "../../formats/dtype.js";
import type { PackedArray } from "../../formats/packed-array.js";

/** Every tensor of a (small) safetensors file as a PackedArray, plus its metadata. */
export async function readAllArrays(path: string): Promise<{ arrays: Map<string, PackedArray>; metadata: Record<string, string> }> {
  const file = await SafetensorsFile.open(path);
  try {
    const arrays = new Map<string, PackedArray>();
    for (const info of file.tensors) {
      const bytes = await file.read(info.name);
      arrays.set(info.name, { name: info.name, dtype: info.dtype as DType, shape: info.shape.map(Number), bytes, file: path, byteOffset: Number(info.byteOffset) });
    }
    return { arrays, metadata: file.metadata ?? {} };
  } finally {
    await file.close();
  }
}
