import { createHash, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { IoError, UsageError } from "../../formats/errors.js";
import { ioErrorFor } from "../io/random-access.js";

/**
 * The files of a directory to publish, as repo paths, and the two digests the Hub names files
 * by: sha256 for LFS files (the LFS object id) and git's blob sha1 for regular ones.
 *
 * Skipped: every name that starts with "." except `.gitattributes` (.git, .cache, lmpack's own
 * `.<name>.lmpack-tmp-*` temporaries of an interrupted write), as huggingface_hub's
 * upload_folder skips .git and .cache. Symlinks are followed (an HF cache snapshot is all
 * symlinks); a link to a directory is refused rather than walked, so a loop cannot hang us.
 */

export interface LocalFile {
  /** Repo path, "/"-separated. */
  path: string;
  /** Absolute or caller-relative path on disk; undefined for generated content. */
  diskPath: string | undefined;
  nBytes: number;
  /** Generated content (the model card), when there is no file on disk. */
  content?: Uint8Array;
}

/** More files than this is likelier a wrong path (a home folder) than a model; the Hub also asks for under 10k per folder. */
export const MAX_FILES = 10_000;

export async function listLocalFiles(dir: string): Promise<LocalFile[]> {
  let root;
  try {
    root = await stat(dir);
  } catch (cause) {
    throw ioErrorFor(cause, dir, "cannot read the folder to publish");
  }
  if (!root.isDirectory()) throw new UsageError("BAD_ARGUMENT", "publish takes a folder (put a single .lmpack or .gguf file in one)", { file: dir });
  const files: LocalFile[] = [];
  await walk(dir, "", files);
  return files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

async function walk(dir: string, prefix: string, out: LocalFile[]): Promise<void> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (cause) {
    throw ioErrorFor(cause, dir, "cannot list the folder to publish");
  }
  for (const entry of entries) {
    if (entry.name.startsWith(".") && entry.name !== ".gitattributes") continue;
    const diskPath = join(dir, entry.name);
    const path = prefix === "" ? entry.name : `${prefix}/${entry.name}`;
    if (entry.name.includes("\\") || entry.name.includes("\n")) throw new UsageError("BAD_ARGUMENT", "a file name the Hub cannot hold (backslash or newline)", { file: diskPath });
    if (entry.isDirectory()) {
      await walk(diskPath, path, out);
      continue;
    }
    let stats;
    try {
      stats = await stat(diskPath);
    } catch (cause) {
      throw ioErrorFor(cause, diskPath, "cannot read a file to publish (a dangling link?)");
    }
    if (stats.isDirectory()) throw new UsageError("BAD_ARGUMENT", "a symlink to a folder is not followed; copy the folder in instead", { file: diskPath });
    if (!stats.isFile()) continue;
    out.push({ path, diskPath, nBytes: stats.size });
    if (out.length > MAX_FILES) throw new UsageError("BAD_ARGUMENT", `more than ${MAX_FILES} files to publish: is this the right folder?`, { file: dir });
  }
}

/** sha256 of the file: its LFS object id. */
export function sha256Of(file: LocalFile): Promise<string> {
  return digest(file, createHash("sha256"));
}

/** git's blob id: sha1 over "blob <size>\0" and the content, what the Hub lists for regular files. */
export function gitBlobSha1Of(file: LocalFile): Promise<string> {
  return digest(file, createHash("sha1").update(`blob ${file.nBytes}\0`));
}

async function digest(file: LocalFile, hash: Hash): Promise<string> {
  if (file.content !== undefined) return hash.update(file.content).digest("hex");
  let nBytes = 0;
  try {
    for await (const chunk of createReadStream(file.diskPath!)) {
      nBytes += (chunk as Buffer).length;
      hash.update(chunk as Buffer);
    }
  } catch (cause) {
    throw ioErrorFor(cause, file.diskPath!, "cannot read a file to publish");
  }
  if (nBytes !== file.nBytes) throw new IoError("READ_FAILED", "the file changed size while being published", { file: file.diskPath, expected: file.nBytes, actual: nBytes });
  return hash.digest("hex");
}
