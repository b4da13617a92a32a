import type { BufferRing } from "./buffer-ring.js";
import type { RandomAccessSource } from "./random-access.js";

/** Streaming chunk size: large enough for full disk throughput, small enough to keep memory flat. */
export const DEFAULT_CHUNK_BYTES = 16 * 1024 * 1024;

/**
 * Reads `byteLength` bytes at `byteOffset` in chunks of whole elements (at most `maxChunkBytes`),
 * into fresh buffers, or into `ring`'s buffers when given.
 */
export async function* readRange(source: RandomAccessSource, byteOffset: number, byteLength: number, elementBytes: number, maxChunkBytes: number, ring?: BufferRing): AsyncGenerator<Uint8Array> {
  const chunkBytes = Math.max(elementBytes, maxChunkBytes - (maxChunkBytes % elementBytes));
  for (let done = 0; done < byteLength; done += chunkBytes) {
    const length = Math.min(chunkBytes, byteLength - done);
    if (ring === undefined) {
      yield await source.read(byteOffset + done, length);
    } else {
      const chunk = ring.take(length);
      await source.readInto(chunk, byteOffset + done);
      yield chunk;
    }
  }
}
