import { randomBytes } from "node:crypto";
import { copyFile, mkdir, readFile, rename, rm, stat, symlink } from "node:fs/promises";
import { dirname, join, relative } from "node:path";
import { FormatError, IoError, UsageError } from "../../formats/errors.js";
import { writeFileAtomic } from "../io/atomic.js";

/**
 * The Hugging Face cache, laid out exactly as Python's huggingface_hub lays it out, so either
 * tool reuses the other's downloads:
 *
 *   <cache>/models--owner--name/
 *     refs/<revision>           40-hex commit sha, no newline (only for names, never for shas)
 *     blobs/<etag>              file content; etag = sha256 for LFS/xet files, git blob sha1 otherwise
 *     blobs/<etag>.incomplete   a download in progress, resumed with a Range request
 *     snapshots/<sha>/<path>    relative symlink to ../../blobs/<etag> (one more ../ per folder)
 *
 * Reference: huggingface_hub file_download.py (`repo_folder_name`, `_create_symlink`,
 * `_cache_commit_hash_for_specific_revision`, `try_to_load_from_cache`).
 */

const COMMIT_SHA = /^[0-9a-f]{40}$/;
/** Blob names are hashes: anything else in that position would be a path we did not choose. */
const ETAG = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;

export function isCommitSha(value: string): boolean {
  return COMMIT_SHA.test(value);
}

/** `<cache>/models--owner--name` (huggingface_hub `repo_folder_name`). */
export function repoCacheDir(cacheDir: string, repo: string): string {
  return join(cacheDir, ["models", ...repo.split("/")].join("--"));
}

export function snapshotDir(repoDir: string, sha: string): string {
  if (!isCommitSha(sha)) throw new FormatError("HUB_LISTING_INVALID", "not a 40-hex commit sha", { file: repoDir, actual: sha });
  return join(repoDir, "snapshots", sha);
}

export function blobPath(repoDir: string, etag: string): string {
  if (!ETAG.test(etag)) throw new FormatError("HUB_LISTING_INVALID", "blob id is not a sha1 or sha256 hex digest", { file: repoDir, actual: etag });
  return join(repoDir, "blobs", etag);
}

/**
 * Refuses repo file paths that would land outside the snapshot once joined onto it: absolute,
 * drive or UNC paths, `..` or `.` segments, backslashes (a separator on Windows) and NUL.
 * A real Hub never lists such names; a hostile or broken server might.
 */
export function assertRepoPath(path: string, repo: string): void {
  const segments = path.split("/");
  const unsafe = path.length === 0 || path.includes("\\") || path.includes("\0") || /^[A-Za-z]:/.test(path) || segments.some((s) => s === "" || s === "." || s === "..");
  if (unsafe) throw new FormatError("HUB_LISTING_INVALID", "the Hub listed a file path that would escape the cache folder", { file: repo, actual: path });
}

/** A revision is a path under refs/: the same segment rules as repo paths. */
export function assertRevision(revision: string, id: string): void {
  const segments = revision.split("/");
  if (revision.length === 0 || segments.some((s) => s === "" || s === "." || s === "..")) {
    throw new UsageError("BAD_SOURCE", "revision must be a branch, tag or commit sha without empty, '.' or '..' parts", { file: id, actual: revision });
  }
}

export function pointerPath(repoDir: string, sha: string, repoPath: string, repo: string): string {
  assertRepoPath(repoPath, repo);
  return join(snapshotDir(repoDir, sha), ...repoPath.split("/"));
}

/** The commit sha `refs/<revision>` holds, or undefined when there is no such ref. */
export async function readRef(repoDir: string, revision: string): Promise<string | undefined> {
  let text: string;
  try {
    text = await readFile(join(repoDir, "refs", ...revision.split("/")), "utf8");
  } catch {
    return undefined;
  }
  const sha = text.trim();
  return isCommitSha(sha) ? sha : undefined;
}

/** Points `refs/<revision>` at `sha`; shas are their own ref and get no file (as in Python). */
export async function writeRef(repoDir: string, revision: string, sha: string): Promise<void> {
  if (revision === sha) return;
  if ((await readRef(repoDir, revision)) === sha) return;
  await writeFileAtomic(join(repoDir, "refs", ...revision.split("/")), sha);
}

/**
 * The snapshot folder `revision` names in the cache, without any network: through
 * refs/<revision>, else the revision itself when it is a commit sha with a snapshot.
 */
export async function cachedSnapshot(repoDir: string, revision: string): Promise<string | undefined> {
  const sha = (await readRef(repoDir, revision)) ?? (isCommitSha(revision) ? revision : undefined);
  if (sha === undefined) return undefined;
  const dir = snapshotDir(repoDir, sha);
  return (await isDirectory(dir)) ? dir : undefined;
}

/**
 * Makes `snapshots/<sha>/<repoPath>` a relative symlink to `blobs/<etag>`. The link is made
 * under a temporary name and renamed over any old entry, so readers never see a missing file.
 * Where symlinks are not allowed (Windows without developer mode) the blob is copied, as
 * Python does.
 */
export async function linkBlob(repoDir: string, sha: string, repoPath: string, etag: string, repo: string): Promise<string> {
  const pointer = pointerPath(repoDir, sha, repoPath, repo);
  const blob = blobPath(repoDir, etag);
  const temp = `${pointer}.lmpack-link-${process.pid}-${randomBytes(4).toString("hex")}`;
  try {
    await mkdir(dirname(pointer), { recursive: true });
    try {
      await symlink(relative(dirname(pointer), blob), temp);
    } catch (cause) {
      if ((cause as { code?: string }).code !== "EPERM") throw cause;
      await copyFile(blob, temp);
    }
    await rename(temp, pointer);
  } catch (cause) {
    await rm(temp, { force: true });
    throw new IoError("WRITE_FAILED", `cannot link the snapshot file to its blob: ${(cause as Error).message}`, { file: pointer, cause });
  }
  return pointer;
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}
