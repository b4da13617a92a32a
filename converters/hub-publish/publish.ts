import { commitIter, createBranch, createRepo, listFiles, modelInfo, type CommitOperation, type ListFileEntry } from "@huggingface/hub";
import { openAsBlob } from "node:fs";
import { IoError, UsageError } from "../../formats/errors.js";
import { hubSettings, parseHubId, DEFAULT_REVISION } from "../hf/hub.js";
import { assertRevision, isCommitSha } from "../hf/hub-cache.js";
import { gitBlobSha1Of, listLocalFiles, sha256Of, type LocalFile } from "./local-files.js";
import { hubStatusOf, publishError, redactUrls } from "./redact.js";
import { DEFAULT_RETRY_POLICY, retryingFetch, type RetryPolicy } from "./retry-fetch.js";

/**
 * `lmpack publish`: a folder → a Hub model repo, through @huggingface/hub (createRepo, then one
 * commit: preupload, LFS batch, uploads, commit), with the plain LFS protocol (no xet) and no
 * web workers.
 *
 * Resumable and idempotent at the level of files:
 * - before committing, the branch is listed and every local file the same size as its remote
 *   namesake is hashed (sha256 for LFS files, git blob sha1 for the rest); identical files are
 *   left out, and when nothing differs no commit is made at all;
 * - the LFS batch answer names the objects the repo already holds, and those are not sent
 *   again, so a run cut off after some uploads resumes from the files that had not arrived;
 * - within a run, a dropped connection or a 5xx retries that one request (retry-fetch.ts).
 * The commit names the listed head as its parent, so a branch that moved meanwhile is refused
 * instead of silently overwritten. Files on the branch that are not in the folder are kept.
 */

export interface PublishOptions {
  dir: string;
  /** `owner/name` */
  repo: string;
  /** Branch to commit to (created from main when missing); default main. */
  revision?: string;
  /** Create the repo private (an existing repo keeps its visibility). */
  private?: boolean;
  /** Commit title. */
  message?: string;
  /** Content for repo paths the folder lacks (the generated README.md). */
  generated?: ReadonlyMap<string, Uint8Array>;
  /** Default $HF_ENDPOINT, then https://huggingface.co. */
  endpoint?: string;
  /** Default $HF_TOKEN. */
  token?: string;
  retry?: Partial<RetryPolicy>;
  onEvent?: (event: PublishEvent) => void;
}

export type PublishEvent =
  | { kind: "repo"; created: boolean; url: string }
  | { kind: "plan"; toCommit: number; unchanged: number; bytesToCommit: number }
  | { kind: "phase"; phase: "preuploading" | "uploadingLargeFiles" | "committing" }
  | { kind: "file"; path: string }
  /** `url` without its query string (a storage URL is presigned: the query is a write credential). */
  | { kind: "retry"; method: string; url: string; attempt: number; reason: string; delayMs: number };

export interface PublishedFile {
  path: string;
  nBytes: number;
  /** committed: part of this run's commit; unchanged: the branch already held these bytes. */
  status: "committed" | "unchanged";
}

export interface PublishResult {
  repo: string;
  revision: string;
  url: string;
  created: boolean;
  /** The new commit; undefined when the branch already held every file as it is. */
  commit: string | undefined;
  files: PublishedFile[];
  /** Bytes this run sent to LFS storage (a resumed run sends only what the Hub lacked). */
  lfsBytesSent: number;
}

export async function publishFolder(options: PublishOptions): Promise<PublishResult> {
  const settings = hubSettings({ ...(options.endpoint === undefined ? {} : { endpoint: options.endpoint }), ...(options.token === undefined ? {} : { token: options.token }) });
  const revision = options.revision ?? DEFAULT_REVISION;
  const token = settings.token;
  if (options.repo.includes("@")) throw new UsageError("BAD_ARGUMENT", "--repo is owner/name; give the branch with --revision", { actual: options.repo });
  parseHubId(options.repo);
  assertRevision(revision, options.repo);
  if (isCommitSha(revision)) throw new UsageError("BAD_ARGUMENT", "--revision must be a branch: a commit cannot be committed to", { actual: revision });
  assertPublishToken(token, options.repo);
  const label = `${options.repo}@${revision}`;
  try {
    return await publish(options, { endpoint: settings.endpoint, token, revision, label });
  } catch (error) {
    throw publishError(error, label, token, settings.endpoint);
  }
}

/** A token is needed to write; checked first, so a run without one fails before any work. */
export function assertPublishToken(token: string | undefined, repo: string): asserts token is string {
  if (token === undefined) throw new IoError("HUB_AUTH", "publishing needs HF_TOKEN: an access token with write access (huggingface.co/settings/tokens)", { file: repo });
  if (!token.startsWith("hf_")) throw new IoError("HUB_AUTH", "HF_TOKEN is not a Hugging Face access token (those start with hf_)", { file: repo });
}

interface Context {
  endpoint: string;
  token: string;
  revision: string;
  label: string;
}

async function publish(options: PublishOptions, context: Context): Promise<PublishResult> {
  const { endpoint, token, revision } = context;
  const files = await listLocalFiles(options.dir);
  for (const [path, content] of options.generated ?? []) {
    if (!files.some((f) => f.path === path)) files.push({ path, diskPath: undefined, nBytes: content.length, content });
  }
  let lfsBytesSent = 0;
  // A retried storage PUT's URL is presigned: the event carries it without its query.
  const retrying = retryingFetch({ ...DEFAULT_RETRY_POLICY, ...options.retry, onRetry: (info) => options.onEvent?.({ kind: "retry", ...info, url: redactUrls(info.url) }) });
  const fetch: typeof globalThis.fetch = async (input, init) => {
    const response = await retrying(input, init);
    // Storage PUTs (whole objects or parts) carry Blob bodies; the API calls carry strings.
    if (init?.method === "PUT" && init.body instanceof Blob && response.ok) lfsBytesSent += init.body.size;
    return response;
  };
  const hub = { hubUrl: endpoint, accessToken: token, fetch };
  const repo = { type: "model" as const, name: options.repo };

  let created = true;
  try {
    await createRepo({ ...hub, repo, ...(options.private === true ? { visibility: "private" as const } : {}) });
  } catch (error) {
    if (hubStatusOf(error) !== 409) throw error;
    created = false;
  }
  const url = `${endpoint}/${options.repo}`;
  options.onEvent?.({ kind: "repo", created, url });

  const head = await branchHead(options.repo, revision, hub);
  const remote = new Map<string, ListFileEntry>();
  for await (const entry of listFiles({ ...hub, repo, revision: head, recursive: true })) if (entry.type === "file") remote.set(entry.path, entry);
  const changed: LocalFile[] = [];
  for (const file of files) if (!(await sameAsRemote(file, remote.get(file.path)))) changed.push(file);
  const changedPaths = new Set(changed.map((f) => f.path));
  const published = files.map((f): PublishedFile => ({ path: f.path, nBytes: f.nBytes, status: changedPaths.has(f.path) ? "committed" : "unchanged" }));
  options.onEvent?.({ kind: "plan", toCommit: changed.length, unchanged: files.length - changed.length, bytesToCommit: changed.reduce((sum, f) => sum + f.nBytes, 0) });
  if (changed.length === 0) return { repo: options.repo, revision, url, created, commit: undefined, files: published, lfsBytesSent };

  const operations: CommitOperation[] = [];
  for (const file of changed) operations.push({ operation: "addOrUpdate", path: file.path, content: file.content !== undefined ? new Blob([new Uint8Array(file.content)]) : await openAsBlob(file.diskPath!) });
  const iterator = commitIter({ ...hub, repo, operations, title: options.message ?? `Upload ${changed.length} file${changed.length === 1 ? "" : "s"} with lmpack`, branch: revision, parentCommit: head, useXet: false, useWebWorkers: false });
  const reported = new Set<string>();
  let step = await iterator.next();
  for (; step.done !== true; step = await iterator.next()) {
    const event = step.value;
    if (event.event === "phase") options.onEvent?.({ kind: "phase", phase: event.phase });
    else if (event.state === "uploading" && event.progress >= 1 && !reported.has(event.path)) {
      reported.add(event.path);
      options.onEvent?.({ kind: "file", path: event.path });
    }
  }
  const commit = step.value?.commit.oid;
  if (typeof commit !== "string") throw new IoError("NETWORK", "the Hub answered the commit without a commit id", { file: context.label });
  return { repo: options.repo, revision, url, created, commit, files: published, lfsBytesSent };
}

type HubParams = { hubUrl: string; accessToken: string; fetch: typeof fetch };

/** The branch's head commit; a missing branch other than main is created from main. */
async function branchHead(repo: string, revision: string, hub: HubParams): Promise<string> {
  const head = async () => (await modelInfo({ ...hub, name: repo, revision, additionalFields: ["sha"] })).sha;
  let sha: unknown;
  try {
    sha = await head();
  } catch (error) {
    if (hubStatusOf(error) !== 404 || revision === DEFAULT_REVISION) throw error;
    await createBranch({ ...hub, repo: { type: "model", name: repo }, branch: revision });
    sha = await head();
  }
  if (typeof sha !== "string" || !isCommitSha(sha)) throw new IoError("NETWORK", "unexpected answer from the Hub: no commit sha for the branch", { file: `${repo}@${revision}`, actual: sha });
  return sha;
}

/** Same size, then same digest: the LFS sha256 for LFS entries, the git blob sha1 for the rest. */
async function sameAsRemote(file: LocalFile, entry: ListFileEntry | undefined): Promise<boolean> {
  if (entry === undefined) return false;
  if ((entry.lfs?.size ?? entry.size) !== file.nBytes) return false;
  if (entry.lfs !== undefined) return (await sha256Of(file)) === entry.lfs.oid;
  return entry.oid !== undefined && (await gitBlobSha1Of(file)) === entry.oid;
}
