import type { IncomingMessage, ServerResponse } from "node:http";
import { commitSha, fileOid, GITATTRIBUTES, LFS_THRESHOLD_BYTES, sha256Hex } from "./git-objects.js";
import { readBody, sendError, sendJson } from "./http.js";
import type { LfsStorage } from "./lfs-storage.js";
import type { CommitRecord, FakeFile, FakeRepo, LoggedRequest } from "./types.js";

/**
 * The fake Hub's write side, what @huggingface/hub's createRepo, createBranch and commit send
 * (each needs `Authorization: Bearer <writeToken>`):
 *
 *   POST /api/repos/create                              409 when the repo exists; a new repo has
 *                                                      one commit on main holding .gitattributes
 *   POST /api/models/{owner}/{name}/branch/{branch}     a branch at main's head
 *   POST /api/models/{owner}/{name}/preupload/{rev}     uploadMode per file: lfs when .gitattributes
 *                                                      says so, at 10 MiB and over, or binary
 *   POST /{owner}/{name}.git/info/lfs/objects/batch     basic transfer (lfs-storage.ts)
 *   POST /api/models/{owner}/{name}/commit/{branch}     ndjson header, file (base64), lfsFile (must
 *                                                      be uploaded), deletedFile; 412 when
 *                                                      parentCommit is not the branch head
 */

/** What the write side reads and changes of the fake Hub. */
export interface WritableHub {
  readonly repos: Map<string, FakeRepo>;
  readonly commitLog: CommitRecord[];
  readonly storage: LfsStorage;
  readonly endpoint: string;
  readonly cdnOrigin: string;
  writeToken: string | undefined;
  /** A careless server: write refusals quote the Authorization header they got. */
  echoAuthorization: boolean;
  addRepo(repo: FakeRepo): void;
}

const SAMPLE_BYTES = 512;

export async function handleWrite(hub: WritableHub, req: IncomingMessage, res: ServerResponse, log: LoggedRequest, segments: string[]): Promise<void> {
  // Without an interruption the body always arrives whole.
  const body = (await readBody(req, log))!;
  if (hub.writeToken === undefined || req.headers.authorization !== `Bearer ${hub.writeToken}`) {
    return sendError(res, log, 401, undefined, `Invalid username or password.${hub.echoAuthorization ? ` You sent: ${req.headers.authorization}` : ""}`);
  }
  if (segments.join("/") === "api/repos/create") return createRepo(hub, res, log, JSON.parse(body.toString("utf8")) as Record<string, unknown>);
  const lfsBatch = segments.length === 6 && segments[1]!.endsWith(".git") && segments.slice(2).join("/") === "info/lfs/objects/batch";
  const [owner, name, action, rev] = lfsBatch ? [segments[0], segments[1]!.slice(0, -4), "lfs-batch", undefined] : segments[0] === "api" && segments[1] === "models" ? [segments[2], segments[3], segments[4], segments.slice(5).join("/")] : [];
  const repo = hub.repos.get(`${owner}/${name}`);
  if (repo === undefined) return sendError(res, log, 404, "RepoNotFound", "Repository not found");
  const json = () => JSON.parse(body.toString("utf8")) as Record<string, unknown>;
  if (action === "lfs-batch") {
    const objects = hub.storage.batch(repo.id, json()["objects"] as { oid: string; size: number }[], hub.cdnOrigin);
    return sendJson(res, log, { transfer: "basic", objects, hash_algo: "sha256" }, "application/vnd.git-lfs+json");
  }
  if (action === "branch" && rev !== undefined) {
    if (repo.refs[rev] !== undefined) return sendError(res, log, 409, undefined, `Reference already exists: ${rev}`);
    repo.refs[rev] = repo.refs["main"]!;
    return sendJson(res, log, {});
  }
  const head = rev === undefined ? undefined : repo.refs[rev];
  if (head === undefined) return sendError(res, log, 404, "RevisionNotFound", `Invalid rev id: ${rev}`);
  if (action === "preupload") return sendJson(res, log, preupload(repo.commits[head]!, json()));
  if (action === "commit") return commit(hub, res, log, repo, rev!, body.toString("utf8"));
  sendError(res, log, 404, undefined, "no such endpoint");
}

function createRepo(hub: WritableHub, res: ServerResponse, log: LoggedRequest, body: Record<string, unknown>): void {
  const id = `${String(body["organization"])}/${String(body["name"])}`;
  if (hub.repos.has(id)) return sendError(res, log, 409, undefined, "You already created this model repo", { url: `${hub.endpoint}/${id}` });
  const files: FakeFile[] = [{ path: ".gitattributes", content: new TextEncoder().encode(GITATTRIBUTES), lfs: false }];
  const sha = commitSha(files, `create ${id}`);
  hub.addRepo({ id, refs: { main: sha }, commits: { [sha]: files }, ...(body["visibility"] === "private" ? { token: hub.writeToken! } : {}) });
  sendJson(res, log, { url: `${hub.endpoint}/${id}`, name: id, id });
}

function preupload(files: FakeFile[], body: Record<string, unknown>): Record<string, unknown> {
  const patterns = GITATTRIBUTES.split("\n").filter((l) => l !== "").map((l) => l.split(" ")[0]!.slice(1));
  const entries = (body["files"] as { path: string; size: number; sample: string }[]).map((f) => {
    const binary = Buffer.from(f.sample, "base64").subarray(0, SAMPLE_BYTES).includes(0);
    const lfs = f.size >= LFS_THRESHOLD_BYTES || binary || patterns.some((suffix) => f.path.endsWith(suffix));
    const existing = files.find((e) => e.path === f.path);
    return { path: f.path, uploadMode: lfs ? "lfs" : "regular", shouldIgnore: false, ...(existing === undefined ? {} : { oid: existing.lfs ? sha256Hex(existing.content) : fileOid(existing) }) };
  });
  return { files: entries };
}

function commit(hub: WritableHub, res: ServerResponse, log: LoggedRequest, repo: FakeRepo, branch: string, body: string): void {
  const lines = body.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as { key: string; value: Record<string, unknown> });
  const header = lines[0]?.key === "header" ? lines[0].value : {};
  const head = repo.refs[branch]!;
  if (typeof header["parentCommit"] === "string" && header["parentCommit"] !== head) {
    return sendError(res, log, 412, undefined, `parentCommit ${String(header["parentCommit"])} is not the head of ${branch}`);
  }
  const files = new Map(repo.commits[head]!.map((f) => [f.path, f]));
  const record: CommitRecord = { repo: repo.id, branch, summary: String(header["summary"] ?? ""), files: [], lfsFiles: [], deleted: [] };
  for (const { key, value } of lines.slice(1)) {
    const path = String(value["path"]);
    if (key === "file") {
      files.set(path, { path, content: new Uint8Array(Buffer.from(String(value["content"]), "base64")), lfs: false });
      record.files.push(path);
    } else if (key === "lfsFile") {
      const oid = String(value["oid"]);
      const blob = hub.storage.blob(oid);
      if (blob === undefined || !hub.storage.objectsOf(repo.id).has(oid) || blob.content.length !== value["size"]) {
        return sendError(res, log, 422, undefined, `LFS object of ${path} was not uploaded`);
      }
      files.set(path, { path, content: blob.content, lfs: true });
      record.lfsFiles.push(path);
    } else if (key === "deletedFile") {
      files.delete(path);
      record.deleted.push(path);
    } else return sendError(res, log, 400, undefined, `unknown commit entry ${key}`);
  }
  const committed = [...files.values()].sort((a, b) => (a.path < b.path ? -1 : 1));
  // Commit ids differ per commit, also for identical trees: each commit made so far salts the next.
  const sha = commitSha(committed, `commit ${hub.commitLog.length + 1}`);
  repo.commits[sha] = committed;
  repo.refs[branch] = sha;
  hub.commitLog.push(record);
  sendJson(res, log, { success: true, commitOid: sha, commitUrl: `${hub.endpoint}/${repo.id}/commit/${sha}`, hookOutput: "" });
}
