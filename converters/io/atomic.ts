import { randomBytes } from "node:crypto";
import { mkdir, open, readdir, rename, rm, stat, type FileHandle } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { IoError } from "../../formats/errors.js";

/**
 * Atomic outputs: everything is written under a temporary name in the destination's own
 * directory (same file system, so rename is atomic), flushed, then renamed into place.
 * An error leaves the destination as it was and removes the temporary; a process killed
 * outright (SIGKILL, power loss) leaves its temporary behind, never a partial destination, and
 * the next write of the same destination removes such leftovers (see removeStaleTemps).
 */

const TEMP_MARK = ".lmpack-tmp-";

function tempSibling(path: string): string {
  return join(dirname(path), `.${basename(path)}${TEMP_MARK}${process.pid}-${randomBytes(4).toString("hex")}`);
}

/**
 * Removes temporaries that an earlier, killed writer of `path` left beside it: those whose pid is
 * no longer alive. A live pid (another lmpack writing the same destination right now, or an
 * unrelated process that reused the number) keeps its file: deleting too little is harmless.
 */
export async function removeStaleTemps(path: string): Promise<void> {
  const prefix = `.${basename(path)}${TEMP_MARK}`;
  let names: string[];
  try {
    names = await readdir(dirname(path));
  } catch {
    return;
  }
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const pid = Number(name.slice(prefix.length).split("-")[0]);
    if (Number.isSafeInteger(pid) && pid > 0 && !processAlive(pid)) await rm(join(dirname(path), name), { recursive: true, force: true });
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** A file being written atomically: write with `handle`, then `commit()` or `abort()`. */
export class AtomicFile {
  private constructor(readonly path: string, readonly tempPath: string, readonly handle: FileHandle) {}

  static async create(path: string): Promise<AtomicFile> {
    await mkdir(dirname(path), { recursive: true });
    await removeStaleTemps(path);
    const tempPath = tempSibling(path);
    try {
      return new AtomicFile(path, tempPath, await open(tempPath, "wx"));
    } catch (cause) {
      throw new IoError("WRITE_FAILED", `cannot create temporary file: ${(cause as Error).message}`, { file: tempPath, cause });
    }
  }

  /** Writes all of `bytes` at `position` (or at the current end when omitted). */
  async write(bytes: Uint8Array, position?: number): Promise<void> {
    let done = 0;
    while (done < bytes.length) {
      const { bytesWritten } = await this.handle.write(bytes, done, bytes.length - done, position === undefined ? null : position + done);
      done += bytesWritten;
    }
  }

  async commit(): Promise<void> {
    try {
      await this.handle.sync();
      await this.handle.close();
      await rename(this.tempPath, this.path);
    } catch (cause) {
      await rm(this.tempPath, { force: true });
      throw new IoError("WRITE_FAILED", `cannot move finished file into place: ${(cause as Error).message}`, { file: this.path, cause });
    }
  }

  async abort(): Promise<void> {
    await this.handle.close().catch(() => undefined);
    await rm(this.tempPath, { force: true });
  }
}

/** Writes a small file atomically. */
export async function writeFileAtomic(path: string, bytes: Uint8Array | string): Promise<void> {
  const file = await AtomicFile.create(path);
  try {
    await file.write(typeof bytes === "string" ? new TextEncoder().encode(bytes) : bytes);
  } catch (cause) {
    await file.abort();
    throw cause;
  }
  await file.commit();
}

/**
 * A directory produced atomically: files go into a temporary sibling directory, and
 * `commit()` renames it into place. An existing destination is refused unless `overwrite`,
 * in which case it is swapped out only after the new one is complete.
 */
export class AtomicDirectory {
  private constructor(readonly path: string, readonly tempPath: string, private readonly overwrite: boolean) {}

  static async create(path: string, options: { overwrite?: boolean } = {}): Promise<AtomicDirectory> {
    await refuseExisting(path, options.overwrite ?? false);
    await removeStaleTemps(path);
    const tempPath = tempSibling(path);
    await mkdir(tempPath, { recursive: true });
    return new AtomicDirectory(path, tempPath, options.overwrite ?? false);
  }

  /** Path of `name` inside the temporary directory. */
  file(name: string): string {
    return join(this.tempPath, name);
  }

  async commit(): Promise<void> {
    let old: string | undefined;
    if (this.overwrite && (await exists(this.path))) {
      // Not a TEMP_MARK name: if a kill lands between the two renames, this copy is the user's
      // only one, and removeStaleTemps must not take it.
      old = join(dirname(this.path), `.${basename(this.path)}.lmpack-old-${process.pid}-${randomBytes(4).toString("hex")}`);
      await rename(this.path, old);
    }
    try {
      await rename(this.tempPath, this.path);
    } catch (cause) {
      if (old !== undefined) await rename(old, this.path).catch(() => undefined);
      throw new IoError("WRITE_FAILED", `cannot move finished directory into place: ${(cause as Error).message}`, { file: this.path, cause });
    }
    if (old !== undefined) await rm(old, { recursive: true, force: true });
  }

  async abort(): Promise<void> {
    await rm(this.tempPath, { recursive: true, force: true });
  }
}

/** Throws OUTPUT_EXISTS when `path` exists and overwriting was not asked for. */
export async function refuseExisting(path: string, overwrite: boolean): Promise<void> {
  if (!overwrite && (await exists(path))) {
    throw new IoError("OUTPUT_EXISTS", "output already exists (pass --force to replace it)", { file: path });
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
