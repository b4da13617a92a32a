import { listFiles, modelInfo, type ListFileEntry } from "@huggingface/hub";
import { homedir } from "node:os";
import { join } from "node:path";
import { FormatError, IoError, UsageError } from "../../formats/errors.js";
import { SIDE_FILE_NAMES, type Checkpoint } from "../checkpoint.js";
import { INDEX_FILE, SINGLE_WEIGHTS_FILE, openHfDirectory, readWeightMap } from "./import-local.js";
import { assertRepoPath, assertRevision, blobPath, cachedSnapshot, isCommitSha, linkBlob, pointerPath, repoCacheDir, snapshotDir, writeRef } from "./hub-cache.js";
import { downloadBlob, hubFetch, type FileDigest } from "./hub-download.js";
import { fileExists } from "../io/json-file.js";
import type { ProgressSink } from "../tensor-stream.js";

/**
 * Hugging Face Hub importer: `owner/name[@revision]` → a snapshot folder in the standard HF
 * cache (shared with Python's huggingface_hub, see hub-cache.ts) → `openHfDirectory`.
 *
 * Online, the revision is resolved to a commit sha and the repo root is listed (through
 * @huggingface/hub), then only the files lmpack reads are fetched: config.json, the side
 * files, the safetensors index and the weights it lists. Pickle weights are never fetched.
 * Offline, nothing touches the network: the cache alone answers.
 */

export interface HubOptions {
  /** Hub endpoint; default $HF_ENDPOINT or https://huggingface.co. */
  endpoint?: string;
  /** Cache root holding `models--owner--name/`; default $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub. */
  cacheDir?: string;
  /** Access token; default $HF_TOKEN. */
  token?: string;
  /** Use the cache only; default true when $HF_HUB_OFFLINE is 1/true/yes (or on, as in Python). */
  offline?: boolean;
  /** Receives download progress (bytes); downloads are the long part of opening a Hub model. */
  progress?: ProgressSink;
}

export interface HubSettings {
  endpoint: string;
  cacheDir: string;
  token: string | undefined;
  offline: boolean;
}

export const DEFAULT_HUB_ENDPOINT = "https://huggingface.co";
export const DEFAULT_REVISION = "main";
/** Python's huggingface_hub reads these values of HF_HUB_OFFLINE as true (case-insensitive). */
const TRUE_VALUES = new Set(["1", "true", "yes", "on"]);
/** Digests become blob file names, so they must be exactly hex of the right length. */
const DIGEST_HEX: Record<FileDigest["algorithm"], RegExp> = { sha256: /^[0-9a-f]{64}$/, "git-sha1": /^[0-9a-f]{40}$/ };
/** A Hub repo name (huggingface_hub `validate_repo_id`: no `--` or `..`, which the cache folder names rely on). */
const REPO_ID = /^[A-Za-z0-9][A-Za-z0-9._-]*\/[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** The options with their defaults filled in from HF_* variables, as huggingface_hub reads them. */
export function hubSettings(options: HubOptions = {}, env: NodeJS.ProcessEnv = process.env): HubSettings {
  const hfHome = set(env["HF_HOME"]) ?? join(set(env["XDG_CACHE_HOME"]) ?? join(homedir(), ".cache"), "huggingface");
  return {
    endpoint: (options.endpoint ?? set(env["HF_ENDPOINT"]) ?? DEFAULT_HUB_ENDPOINT).replace(/\/+$/, ""),
    cacheDir: expandHome(options.cacheDir ?? set(env["HF_HUB_CACHE"]) ?? join(expandHome(hfHome), "hub")),
    token: options.token ?? set(env["HF_TOKEN"]),
    offline: options.offline ?? TRUE_VALUES.has((env["HF_HUB_OFFLINE"] ?? "").trim().toLowerCase()),
  };
}

/** Splits `owner/name[@revision]`; the revision defaults to main. */
export function parseHubId(id: string): { repo: string; revision: string } {
  const at = id.indexOf("@");
  const repo = at < 0 ? id : id.slice(0, at);
  const revision = at < 0 ? DEFAULT_REVISION : id.slice(at + 1);
  if (!REPO_ID.test(repo) || repo.includes("--") || repo.includes("..")) {
    throw new UsageError("BAD_SOURCE", "not a Hub model id (owner/name[@revision])", { file: id, actual: repo });
  }
  assertRevision(revision, id);
  return { repo, revision };
}

export async function openHubCheckpoint(id: string, options: HubOptions = {}): Promise<Checkpoint> {
  const settings = hubSettings(options);
  const { repo, revision } = parseHubId(id);
  const context: HubContext = { settings, repo, revision, repoDir: repoCacheDir(settings.cacheDir, repo), label: `${repo}@${revision}` };
  const snapshot = settings.offline ? await offlineSnapshot(context) : await onlineSnapshot(context, options.progress);
  return openHfDirectory(snapshot, id);
}

interface HubContext {
  settings: HubSettings;
  repo: string;
  revision: string;
  /** `<cache>/models--owner--name` */
  repoDir: string;
  /** `owner/name@revision`, for messages. */
  label: string;
}

/** A repo file as the Hub lists it: what to fetch and what it must hash to. */
export interface HubFile {
  path: string;
  nBytes: number;
  digest: FileDigest;
}

async function offlineSnapshot(context: HubContext): Promise<string> {
  const dir = await cachedSnapshot(context.repoDir, context.revision);
  if (dir === undefined) {
    throw new IoError("HUB_OFFLINE_MISS", `offline (HF_HUB_OFFLINE) and ${context.label} is not in the cache`, { file: context.repoDir });
  }
  return dir;
}

async function onlineSnapshot(context: HubContext, progress?: ProgressSink): Promise<string> {
  if (context.settings.token !== undefined && !context.settings.token.startsWith("hf_")) {
    throw new IoError("HUB_AUTH", "HF_TOKEN is not a Hugging Face access token (those start with hf_)", { file: context.label });
  }
  let sha: string;
  let files: Map<string, HubFile>;
  try {
    sha = await resolveCommit(context);
    files = await listRootFiles(context, sha);
  } catch (error) {
    // As in huggingface_hub: when the Hub cannot be reached, a cached snapshot still opens.
    if (error instanceof IoError && error.code === "NETWORK") {
      const cached = await cachedSnapshot(context.repoDir, context.revision);
      if (cached !== undefined) return cached;
    }
    throw error;
  }
  const index = files.get(INDEX_FILE);
  const weightMap = index === undefined ? undefined : await readWeightMap(await ensureFile(context, sha, index));
  try {
    for (const file of selectFiles(files, weightMap, `${context.repo}@${sha}`)) await ensureFile(context, sha, file, progress);
  } finally {
    progress?.finish();
  }
  // The ref moves last, so a ref never names a snapshot this run left half-filled.
  await writeRef(context.repoDir, context.revision, sha);
  return snapshotDir(context.repoDir, sha);
}

async function resolveCommit(context: HubContext): Promise<string> {
  const { settings, repo, revision, label } = context;
  const info = await callHub(label, () => modelInfo({ name: repo, revision, additionalFields: ["sha"], hubUrl: settings.endpoint, accessToken: settings.token, fetch: apiFetch(label) }));
  if (typeof info.sha !== "string" || !isCommitSha(info.sha)) {
    throw new IoError("NETWORK", `unexpected answer from the Hub: no commit sha for the revision (${settings.endpoint}/api/models/${repo}/revision/${revision})`, { file: label, actual: info.sha });
  }
  return info.sha;
}

/** The files at the repo root (lmpack reads nothing deeper), keyed by path. */
async function listRootFiles(context: HubContext, sha: string): Promise<Map<string, HubFile>> {
  const { settings, repo } = context;
  const label = `${repo}@${sha}`;
  const files = new Map<string, HubFile>();
  await callHub(label, async () => {
    for await (const entry of listFiles({ repo, revision: sha, hubUrl: settings.endpoint, accessToken: settings.token, fetch: apiFetch(label) })) {
      assertRepoPath(entry.path, label);
      if (entry.type === "file" && !entry.path.includes("/")) files.set(entry.path, hubFile(entry, label));
    }
  });
  return files;
}

function hubFile(entry: ListFileEntry, label: string): HubFile {
  const digest: FileDigest = entry.lfs === undefined ? { algorithm: "git-sha1", hex: entry.oid ?? "" } : { algorithm: "sha256", hex: entry.lfs.oid };
  const nBytes = entry.lfs?.size ?? entry.size;
  if (typeof digest.hex !== "string" || !DIGEST_HEX[digest.algorithm].test(digest.hex) || !Number.isSafeInteger(nBytes) || nBytes < 0) {
    throw new FormatError("HUB_LISTING_INVALID", `the Hub listed a file without a valid ${digest.algorithm} or size`, { file: `${label}/${entry.path}`, actual: { oid: digest.hex, size: nBytes } });
  }
  return { path: entry.path, nBytes, digest };
}

/**
 * The files lmpack reads, in the order it fetches them (small ones first, so a refusal comes
 * before gigabytes): config.json, side files, then the weights: the shards the index lists,
 * else model.safetensors, else every root *.safetensors. Pickle files are never chosen.
 */
export function selectFiles(files: ReadonlyMap<string, HubFile>, weightMap: Record<string, string> | undefined, label: string): HubFile[] {
  const small = ["config.json", ...SIDE_FILE_NAMES].filter((name) => files.has(name));
  let weights: string[];
  if (weightMap !== undefined) {
    weights = [...new Set(Object.values(weightMap))].sort();
    const missing = weights.find((name) => !files.has(name));
    if (missing !== undefined) throw new FormatError("INDEX_INVALID", "the index lists a shard the repo does not have", { file: `${label}/${INDEX_FILE}`, actual: missing });
  } else if (files.has(SINGLE_WEIGHTS_FILE)) {
    weights = [SINGLE_WEIGHTS_FILE];
  } else {
    weights = [...files.keys()].filter((name) => name.endsWith(".safetensors")).sort();
  }
  if (weights.length === 0) {
    throw new FormatError("LAYOUT_UNKNOWN", "no safetensors weights at the repo root (pickle .bin/.pth weights are not downloaded: they can run code)", { file: label });
  }
  return [...small, ...weights].map((name) => files.get(name)!);
}

/** Makes `snapshots/<sha>/<path>` present, downloading its blob only when the cache lacks it. */
async function ensureFile(context: HubContext, sha: string, file: HubFile, progress?: ProgressSink): Promise<string> {
  const { settings, repo, repoDir } = context;
  const label = `${repo}@${sha}/${file.path}`;
  const pointer = pointerPath(repoDir, sha, file.path, repo);
  if (await fileExists(pointer)) return pointer;
  const blob = blobPath(repoDir, file.digest.hex);
  if (!(await fileExists(blob))) {
    const url = `${settings.endpoint}/${repo}/resolve/${sha}/${file.path.split("/").map(encodeURIComponent).join("/")}`;
    progress?.start(file.nBytes);
    await downloadBlob({ url, label, blobPath: blob, digest: file.digest, nBytes: file.nBytes, token: settings.token, progress });
  }
  return linkBlob(repoDir, sha, file.path, file.digest.hex, label);
}

/** fetch for @huggingface/hub: the same typed errors as our own downloads. */
function apiFetch(label: string): typeof fetch {
  return (input, init) => hubFetch(typeof input === "string" ? input : input instanceof URL ? input.href : input.url, init ?? {}, label);
}

/** Runs an @huggingface/hub call; anything it throws that is not ours means a malformed answer. */
async function callHub<T>(label: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    if (error instanceof IoError || error instanceof FormatError) throw error;
    throw new IoError("NETWORK", `unexpected answer from the Hub: ${(error as Error).message}`, { file: label, cause: error });
  }
}

function set(value: string | undefined): string | undefined {
  return value === undefined || value === "" ? undefined : value;
}

function expandHome(path: string): string {
  return path === "~" || path.startsWith("~/") ? join(homedir(), path.slice(1)) : path;
}
