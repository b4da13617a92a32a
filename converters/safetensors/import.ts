import type { Checkpoint, TensorEntry } from "../checkpoint.js";
import type { BufferRing } from "../io/buffer-ring.js";
import { SafetensorsFile } from "./reader.js";

/** Checkpoint entries backed by one open safetensors file (data read lazily by byte range). */
export function safetensorsEntries(file: SafetensorsFile): TensorEntry[] {
  return file.tensors.map((info) => ({
    name: info.name,
    representation: "dense",
    dtype: info.dtype,
    shape: info.shape,
    nElements: info.nElements,
    byteLength: info.byteLength,
    file: file.path,
    byteOffset: info.byteOffset,
    read: () => file.read(info.name),
    readChunks: (maxChunkBytes?: number, ring?: BufferRing) => file.readChunks(info.name, maxChunkBytes, ring),
  }));
}

/** A bare .safetensors file: tensors and metadata, no config or side files. */
export async function openSafetensorsCheckpoint(path: string): Promise<Checkpoint> {
  const file = await SafetensorsFile.open(path);
  return {
    layout: "safetensors",
    location: path,
    files: [path],
    config: undefined,
    rawConfig: undefined,
    rawConfigText: undefined,
    sideFiles: new Map(),
    metadata: { ...(file.metadata ?? {}) },
    tensors: safetensorsEntries(file),
    close: () => file.close(),
  };
}
