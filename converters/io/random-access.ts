import { open, type FileHandle } from "node:fs/promises";
import { IoError } from "../../formats/errors.js";

/**
 * Positional reads from a file or a buffer. Every reader in lmpack goes through this, so
 * nothing ever loads a whole file, and tests can substitute an in-memory source that
 * records the largest read (the fuzz test uses this to prove no read exceeds the file).
 */
export interface RandomAccessSource {
  /** Name used in error messages (usually the path). */
  readonly name: string;
  readonly byteLength: number;
  /** Reads exactly `length` bytes at `byteOffset`; throws IoError on a short read. */
  read(byteOffset: number, length: number): Promise<Uint8Array>;
  /** Reads into `target` (exactly its length) at `byteOffset`, for callers reusing buffers. */
  readInto(target: Uint8Array, byteOffset: number): Promise<void>;
  close(): Promise<void>;
}

export class FileSource implements RandomAccessSource {
  private constructor(readonly name: string, readonly byteLength: number, private readonly handle: FileHandle) {}

  static async open(path: string): Promise<FileSource> {
    let handle: FileHandle;
    try {
      handle = await open(path, "r");
    } catch (cause) {
      throw ioErrorFor(cause, path, "cannot open");
    }
    const stats = await handle.stat();
    if (!stats.isFile()) {
      await handle.close();
      throw new IoError("READ_FAILED", "not a regular file", { file: path });
    }
    return new FileSource(path, stats.size, handle);
  }

  async read(byteOffset: number, length: number): Promise<Uint8Array> {
    const target = new Uint8Array(length);
    await this.readInto(target, byteOffset);
    return target;
  }

  async readInto(target: Uint8Array, byteOffset: number): Promise<void> {
    checkRange(this, byteOffset, target.length);
    let done = 0;
    while (done < target.length) {
      const { bytesRead } = await this.handle.read(target, done, target.length - done, byteOffset + done);
      if (bytesRead === 0) {
        throw new IoError("READ_FAILED", "file ended early (was it truncated while reading?)", { file: this.name, byteOffset: byteOffset + done, expected: target.length, actual: done });
      }
      done += bytesRead;
    }
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

export class BufferSource implements RandomAccessSource {
  /** Largest single read requested so far: the fuzz test asserts it never exceeds the input. */
  maxReadLength = 0;
  constructor(private readonly bytes: Uint8Array, readonly name = "<buffer>") {}

  get byteLength(): number {
    return this.bytes.length;
  }

  async read(byteOffset: number, length: number): Promise<Uint8Array> {
    checkRange(this, byteOffset, length);
    this.maxReadLength = Math.max(this.maxReadLength, length);
    return this.bytes.slice(byteOffset, byteOffset + length);
  }

  async readInto(target: Uint8Array, byteOffset: number): Promise<void> {
    target.set(await this.read(byteOffset, target.length));
  }

  async close(): Promise<void> {}
}

function checkRange(source: RandomAccessSource, byteOffset: number, length: number): void {
  if (!Number.isSafeInteger(byteOffset) || !Number.isSafeInteger(length) || byteOffset < 0 || length < 0 || byteOffset + length > source.byteLength) {
    // Callers validate ranges before reading; reaching this is a bug in lmpack, not bad input.
    throw new RangeError(`${source.name}: read of ${length} bytes at ${byteOffset} outside 0..${source.byteLength}`);
  }
}

export function ioErrorFor(cause: unknown, path: string, what: string): IoError {
  const code = (cause as { code?: string }).code;
  if (code === "ENOENT") return new IoError("NOT_FOUND", `${what}: no such file or directory`, { file: path, cause });
  return new IoError("READ_FAILED", `${what}: ${(cause as Error).message ?? String(cause)}`, { file: path, cause });
}
