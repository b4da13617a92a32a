import { FormatError } from "../../formats/errors.js";
import type { BufferRing } from "../io/buffer-ring.js";
import { FileSource, type RandomAccessSource } from "../io/random-access.js";
import { DEFAULT_CHUNK_BYTES, readRange } from "../io/read-range.js";
import { parseHeader, parseHeaderLength, SAFETENSORS_PREFIX_BYTES, type SafetensorsHeader, type SafetensorsTensorInfo } from "./header.js";

/**
 * An open safetensors file. The header is validated completely on open; tensor data is read
 * later, by byte range, with positional reads: the file is never loaded whole.
 */
export class SafetensorsFile {
  private readonly byName: Map<string, SafetensorsTensorInfo>;

  private constructor(readonly source: RandomAccessSource, readonly header: SafetensorsHeader) {
    this.byName = new Map(header.tensors.map((t) => [t.name, t]));
  }

  static async open(path: string): Promise<SafetensorsFile> {
    const source = await FileSource.open(path);
    try {
      return await SafetensorsFile.fromSource(source);
    } catch (error) {
      await source.close();
      throw error;
    }
  }

  /** Validates the header of any random-access source (used with in-memory buffers in tests). */
  static async fromSource(source: RandomAccessSource): Promise<SafetensorsFile> {
    const prefixLength = Math.min(SAFETENSORS_PREFIX_BYTES, source.byteLength);
    const prefix = await source.read(0, prefixLength);
    const headerByteLength = parseHeaderLength(prefix, source.byteLength, source.name);
    const headerBytes = await source.read(SAFETENSORS_PREFIX_BYTES, headerByteLength);
    return new SafetensorsFile(source, parseHeader(headerBytes, source.byteLength, source.name));
  }

  get path(): string {
    return this.source.name;
  }

  get tensors(): readonly SafetensorsTensorInfo[] {
    return this.header.tensors;
  }

  get metadata(): Record<string, string> | undefined {
    return this.header.metadata;
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  tensor(name: string): SafetensorsTensorInfo {
    const info = this.byName.get(name);
    if (info === undefined) throw new FormatError("TENSOR_MISSING", "no such tensor in the file", { file: this.path, tensor: name });
    return info;
  }

  /** The whole tensor's bytes (memory: one tensor). Prefer `readChunks` for large tensors. */
  async read(name: string): Promise<Uint8Array> {
    const info = this.tensor(name);
    return this.source.read(info.byteOffset, info.byteLength);
  }

  /**
   * The tensor's bytes in consecutive chunks of at most `maxChunkBytes`, each holding whole
   * elements, so a consumer can convert or hash chunk by chunk with flat memory.
   */
  async *readChunks(name: string, maxChunkBytes = DEFAULT_CHUNK_BYTES, ring?: BufferRing): AsyncGenerator<Uint8Array> {
    const info = this.tensor(name);
    const elementBytes = info.nElements === 0 ? 1 : info.byteLength / info.nElements;
    yield* readRange(this.source, info.byteOffset, info.byteLength, elementBytes, maxChunkBytes, ring);
  }

  async close(): Promise<void> {
    await this.source.close();
  }
}
