import { createHash, randomBytes } from "node:crypto";
import { mkdir, open, readdir, rename, rm, stat, type FileHandle } from "node:fs/promises";
import { hostname } from "node:os";
import { basename, dirname, join } from "node:path";
import { IoError } from "../../formats/errors.js";

/**
 * Atomic outputs: everything is written under a temporary name in the destination's own
 * directory (same file system, so rename is atomic), flushed, then renamed into place.
 * An error leaves the destination as it was and removes the temporary; a process killed
 * outright (SIGKILL, power loss) leaves its temporary behind, never a partial destination, and
 * the next write of the same destination on the same host removes such leftovers (see
 * removeStaleTemps).
 */

const TEMP_MARK = ".lmpack-tmp-";
/** Host tags longer than this are cut (and told apart by a hash): a file name has 255 bytes in all. */
const MAX_HOST_TAG_CHARS = 64;
const HOST_HASH_CHARS = 8;
/** What follows TEMP_MARK: `<host tag>-<pid>-<8 hex>`; the host tag may hold "-", so it is read from the right. */
const TEMP_OWNER = /^(.+)-(\d+)-[0-9a-f]{8}$/;

/**
 * This machine's name as temporaries carry it: letters, digits, "." and "-" kept, anything
 * else "_"; a name longer than MAX_HOST_TAG_CHARS is cut and ends with a hash of the whole, so
 * two hosts sharing a long prefix still differ.
 */
export function hostTag(name: string = hostname()): string {
  const safe = name.replace(/[^A-Za-z0-9.-]/g, "_");
  if (safe === "") return "unknown-host";
  if (safe.length <= MAX_HOST_TAG_CHARS) return safe;
  const hash = createHash("sha256").update(name).digest("hex").slice(0, HOST_HASH_CHARS);
  return `${safe.slice(0, MAX_HOST_TAG_CHARS - HOST_HASH_CHARS - 1)}-${hash}`;
}

/** `.<name>.lmpack-tmp-<host tag>-<pid>-<8 hex>`: the writer's host and pid, so removeStaleTemps can tell whose it is. */
export function temporaryName(name: string, host: string = hostTag(), pid: number = process.pid): string {
  return `.${name}${TEMP_MARK}${host}-${pid}-${randomBytes(4).toString("hex")}`;
}

function tempSibling(path: string): string {
  return join(dirname(path), temporaryName(basename(path)));
}

/**
 * Removes temporaries that an earlier, killed writer of `path` left beside it: those written on
 * this host (by its host tag) by a pid that is no longer alive. Everything else is kept, because
 * deleting too little is harmless and deleting too much destroys a write in progress:
 * - another host's temporary (a directory on NFS or another shared file system): its pid means
 *   nothing here, and its writer may still be running; remove it from that host, or by hand;
 * - a live pid (another lmpack writing the same destination right now, or an unrelated process
 *   that reused the number);
 * - a temporary left by an older lmpack, named without a host tag (`…lmpack-tmp-<pid>-<hex>`):
 *   its host is unknown.
 * Host tags come from the host name, so machines (or containers, with their own pid numbers)
 * that write one directory must have different host names, as they do by default.
 */
export async function removeStaleTemps(path: string): Promise<void> {
  const prefix = `.${basename(path)}${TEMP_MARK}`;
  const ourHost = hostTag();
  let names: string[];
  try {
    names = await readdir(dirname(path));
  } catch {
    return;
  }
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const owner = TEMP_OWNER.exec(name.slice(prefix.length));
    if (owner === null || owner[1] !== ourHost) continue;
    const pid = Number(owner[2]);
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
