import { createHash, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, rename, rm, stat, type FileHandle } from "node:fs/promises";
import { dirname } from "node:path";
import { IoError, VerificationError } from "../../formats/errors.js";
import type { ProgressSink } from "../tensor-stream.js";

/**
 * Resumable, verified downloads of one Hub file into `blobs/<etag>`.
 *
 * Bytes go to `blobs/<etag>.incomplete`; when that file already exists (an interrupted earlier
 * run, ours or Python's) only the rest is requested with `Range: bytes=<size>-`. The whole file
 * is then hashed (the kept prefix from disk, the rest as it streams) and compared with the
 * digest the Hub listed before the rename into place. A mismatch deletes the partial file, so a
 * bad download is never resumed nor used.
 */

/** What the Hub promised for a file: sha256 for LFS/xet files, git blob sha1 for the rest. */
export interface FileDigest {
  algorithm: "sha256" | "git-sha1";
  hex: string;
}

export interface BlobDownload {
  /** `${endpoint}/${repo}/resolve/${sha}/${path}` */
  url: string;
  /** `owner/name@sha/path`, for messages. */
  label: string;
  /** Final blob path; the download runs in `${blobPath}.incomplete`. */
  blobPath: string;
  digest: FileDigest;
  nBytes: number;
  token: string | undefined;
  /** Receives downloaded byte counts (the CLI's progress bar). */
  progress?: ProgressSink | undefined;
}

/**
 * fetch() with the Hub's failures turned into typed errors naming `label` and the URL:
 * 404 → HUB_NOT_FOUND, 401/403 → HUB_AUTH (or HUB_NOT_FOUND when the Hub says the repo or
 * revision does not exist, which it also answers for private repos asked without a token),
 * anything else that is not 2xx, and connection failures → NETWORK.
 */
export async function hubFetch(url: string, init: RequestInit, label: string): Promise<Response> {
  let response: Response;
  try {
    response = await fetch(url, { ...init, redirect: "follow" });
  } catch (cause) {
    throw networkError(cause, url, label);
  }
  if (response.ok) return response;
  await response.body?.cancel().catch(() => undefined);
  const method = init.method ?? "GET";
  const hubCode = response.headers.get("x-error-code") ?? "";
  const answered = `${method} ${url} answered ${response.status}${hubCode === "" ? "" : ` (${hubCode})`}`;
  if (response.status === 404 || hubCode === "RepoNotFound" || hubCode === "RevisionNotFound" || hubCode === "EntryNotFound") {
    const hint = response.status === 401 ? "; if the repo is private or gated, set HF_TOKEN" : "";
    throw new IoError("HUB_NOT_FOUND", `not found on the Hub: ${answered}${hint}`, { file: label });
  }
  if (response.status === 401 || response.status === 403) {
    throw new IoError("HUB_AUTH", `the Hub refused access: ${answered}; set HF_TOKEN to a token that can read this repo (and accept its terms if it is gated)`, { file: label });
  }
  throw new IoError("NETWORK", `unexpected answer from the Hub: ${answered}`, { file: label });
}

export function networkError(cause: unknown, url: string, label: string): IoError {
  const reason = ((cause as { cause?: { code?: string; message?: string } }).cause?.code ?? (cause as Error).message) || String(cause);
  return new IoError("NETWORK", `cannot reach the Hub (${reason}): ${url}`, { file: label, cause });
}

/**
 * Downloads `request.url` into `request.blobPath`, resuming a partial file when there is one.
 * If a resumed download fails verification, the partial file may have been bad (written by
 * another tool or a misbehaving server), so the file is fetched once more from the start.
 */
export async function downloadBlob(request: BlobDownload): Promise<void> {
  await mkdir(dirname(request.blobPath), { recursive: true });
  const resumed = (await partialBytes(incompletePath(request))) > 0;
  try {
    await downloadOnce(request);
  } catch (error) {
    if (!resumed || !(error instanceof VerificationError)) throw error;
    await downloadOnce(request);
  }
}

export function incompletePath(request: Pick<BlobDownload, "blobPath">): string {
  return `${request.blobPath}.incomplete`;
}

async function downloadOnce(request: BlobDownload): Promise<void> {
  const partial = incompletePath(request);
  let offset = await partialBytes(partial);
  if (offset > request.nBytes) {
    await rm(partial, { force: true });
    offset = 0;
  }
  request.progress?.advance(offset, request.label); // what an earlier run already fetched
  let hash: Hash;
  let nBytes: number;
  if (offset > 0 && offset === request.nBytes) {
    // Complete but never renamed (interrupted between the last byte and the rename).
    hash = await hashPrefix(newHash(request), partial, offset);
    nBytes = offset;
  } else {
    ({ hash, nBytes } = await fetchInto(request, partial, offset));
  }
  const actual = hash.digest("hex");
  if (nBytes !== request.nBytes || actual !== request.digest.hex) {
    await rm(partial, { force: true });
    const what = nBytes !== request.nBytes ? `size (expected ${request.nBytes} bytes, got ${nBytes})` : `${request.digest.algorithm}`;
    throw new VerificationError("CHECKSUM_MISMATCH", `downloaded bytes do not match the ${what} the Hub listed; the partial download was deleted: ${request.url}`, { file: request.label, expected: request.digest.hex, actual });
  }
  try {
    await rename(partial, request.blobPath);
  } catch (cause) {
    throw new IoError("WRITE_FAILED", `cannot move the finished download into place: ${(cause as Error).message}`, { file: request.blobPath, cause });
  }
}

/** Requests the bytes from `offset` on and appends them; returns the hash of the whole file. */
async function fetchInto(request: BlobDownload, partial: string, offset: number): Promise<{ hash: Hash; nBytes: number }> {
  const headers: Record<string, string> = { "Accept-Encoding": "identity" };
  if (request.token !== undefined) headers["Authorization"] = `Bearer ${request.token}`;
  if (offset > 0) headers["Range"] = `bytes=${offset}-`;
  const response = await hubFetch(request.url, { headers }, request.label);
  // A server may ignore the Range header and send everything (200): start over then.
  if (response.status !== 206) offset = 0;
  else if (contentRangeStart(response) !== offset) {
    await response.body?.cancel().catch(() => undefined);
    throw new IoError("NETWORK", `the Hub answered a byte range other than the one asked for (bytes=${offset}-, got ${response.headers.get("content-range")}): ${request.url}`, { file: request.label });
  }
  const hash = offset > 0 ? await hashPrefix(newHash(request), partial, offset) : newHash(request);
  let handle: FileHandle;
  try {
    handle = await open(partial, offset > 0 ? "a" : "w");
  } catch (cause) {
    await response.body?.cancel().catch(() => undefined);
    throw new IoError("WRITE_FAILED", `cannot write the download: ${(cause as Error).message}`, { file: partial, cause });
  }
  let nBytes = offset;
  try {
    nBytes = await streamBody(response, request, handle, hash, offset);
    await handle.sync();
  } finally {
    await handle.close();
  }
  return { hash, nBytes };
}

async function streamBody(response: Response, request: BlobDownload, handle: FileHandle, hash: Hash, offset: number): Promise<number> {
  let nBytes = offset;
  if (response.body === null) return nBytes;
  try {
    for await (const chunk of response.body) {
      nBytes += chunk.length;
      // More bytes than listed cannot verify; stop before writing them.
      if (nBytes > request.nBytes) break;
      hash.update(chunk);
      await writeAll(handle, chunk);
      request.progress?.advance(chunk.length, request.label);
    }
  } catch (cause) {
    if (cause instanceof IoError) throw cause;
    // The partial file is kept: the next run resumes from what arrived.
    throw new IoError("NETWORK", `download interrupted after ${nBytes} bytes (run again to resume): ${request.url}`, { file: request.label, cause });
  }
  return nBytes;
}

async function writeAll(handle: FileHandle, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    try {
      done += (await handle.write(bytes, done, bytes.length - done)).bytesWritten;
    } catch (cause) {
      throw new IoError("WRITE_FAILED", `cannot write the download: ${(cause as Error).message}`, { cause });
    }
  }
}

function newHash(request: BlobDownload): Hash {
  if (request.digest.algorithm === "sha256") return createHash("sha256");
  // git's blob id: sha1 over "blob <size>\0" and the content.
  return createHash("sha1").update(`blob ${request.nBytes}\0`);
}

async function hashPrefix(hash: Hash, path: string, nBytes: number): Promise<Hash> {
  if (nBytes === 0) return hash;
  try {
    for await (const chunk of createReadStream(path, { end: nBytes - 1 })) hash.update(chunk as Buffer);
  } catch (cause) {
    throw new IoError("READ_FAILED", `cannot read the partial download: ${(cause as Error).message}`, { file: path, cause });
  }
  return hash;
}

function contentRangeStart(response: Response): number | undefined {
  const match = /^bytes (\d+)-\d+\/(?:\d+|\*)$/.exec(response.headers.get("content-range") ?? "");
  return match === null ? undefined : Number(match[1]);
}

async function partialBytes(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch {
    return 0;
  }
}
