import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { fileOid, modelInfoJson, sha256Hex, treeJson } from "./fake-hub/git-objects.js";
import { listen, logRequest, sendContent, sendError, sendJson } from "./fake-hub/http.js";
import { LfsStorage } from "./fake-hub/lfs-storage.js";
import type { CommitRecord, FakeFile, FakeRepo, LoggedRequest, UploadInterruption, UploadRefusal } from "./fake-hub/types.js";
import { handleWrite, type WritableHub } from "./fake-hub/write-api.js";

export { commitSha, gitBlobSha1, LFS_THRESHOLD_BYTES, sha256Hex } from "./fake-hub/git-objects.js";
export type { CommitRecord, FakeFile, FakeRepo, LoggedRequest, UploadInterruption, UploadRefusal } from "./fake-hub/types.js";

/**
 * A Hub-compatible HTTP server on 127.0.0.1 over in-memory repos, serving what lmpack and
 * @huggingface/hub call, with the headers huggingface.co sends. The read side is here:
 *
 *   GET  /api/models/{owner}/{name}/revision/{rev}     model info (modelInfo), incl. `sha`
 *   GET  /api/models/{owner}/{name}/tree/{rev}[/{dir}] listing (listFiles): oid, size, lfs
 *   GET|HEAD /{owner}/{name}/resolve/{rev}/{path}      regular files: 200 with ETag "<git sha1>";
 *                                                      LFS files: 302 to the CDN, X-Linked-Etag
 *                                                      "<sha256>", X-Linked-Size; both X-Repo-Commit
 *
 * Resolve and CDN answers honour `Range: bytes=N-[M]` (206, or 416 past the end). Errors carry
 * X-Error-Code as the Hub's do (RepoNotFound, RevisionNotFound, EntryNotFound); a repo with a
 * `token` answers 401 to requests without `Authorization: Bearer <token>`.
 *
 * The write side (createRepo, branch, preupload, LFS batch, commit) is fake-hub/write-api.ts;
 * LFS storage (CDN downloads, presigned uploads, multipart, dropped connections) is
 * fake-hub/lfs-storage.ts, on a second port named `localhost` (another host, as cdn-lfs.hf.co
 * and S3 are).
 */
export class FakeHub implements WritableHub {
  readonly requests: LoggedRequest[] = [];
  /** Repo file paths served with one byte flipped (a corrupted download). */
  readonly corrupt = new Set<string>();
  readonly repos = new Map<string, FakeRepo>();
  readonly commitLog: CommitRecord[] = [];
  readonly storage = new LfsStorage(this.corrupt);
  /** Bearer token the write endpoints require. */
  writeToken: string | undefined;
  /** A careless server: write refusals quote the Authorization header they got (for redaction tests). */
  echoAuthorization = false;

  private constructor(private readonly hub: Server, private readonly cdn: Server) {}

  static async start(repos: FakeRepo[]): Promise<FakeHub> {
    let self: FakeHub | undefined;
    const hub = createServer((req, res) => self!.handleHub(req, res));
    const cdn = createServer((req, res) => self!.handleCdn(req, res));
    self = new FakeHub(hub, cdn);
    for (const repo of repos) self.addRepo(repo);
    await Promise.all([listen(hub), listen(cdn)]);
    return self;
  }

  get endpoint(): string {
    return `http://127.0.0.1:${(this.hub.address() as AddressInfo).port}`;
  }

  /** Another host name as well as another port: clients treat it as off the Hub (Python compares host names). */
  get cdnOrigin(): string {
    return `http://localhost:${(this.cdn.address() as AddressInfo).port}`;
  }

  /** When set, LFS objects larger than this are uploaded in parts of this size. */
  get multipartChunkBytes(): number | undefined {
    return this.storage.multipartChunkBytes;
  }

  set multipartChunkBytes(value: number | undefined) {
    this.storage.multipartChunkBytes = value;
  }

  /** Uploads to drop mid-body, to test resumption. */
  get interruptions(): UploadInterruption[] {
    return this.storage.interruptions;
  }

  /** When set, the storage answers every upload PUT with 403 (UploadRefusal says how). */
  get refuseUploads(): UploadRefusal | undefined {
    return this.storage.refuseUploads;
  }

  set refuseUploads(value: UploadRefusal | undefined) {
    this.storage.refuseUploads = value;
  }

  addRepo(repo: FakeRepo): void {
    this.repos.set(repo.id, repo);
    for (const files of Object.values(repo.commits)) for (const file of files) if (file.lfs) this.storage.store(repo.id, file);
  }

  /** Requests that fetched file content (resolve/ and the CDN), GET only. */
  fileRequests(): LoggedRequest[] {
    return this.requests.filter((r) => r.method === "GET" && (r.server === "cdn" || r.path.includes("/resolve/")));
  }

  /** The files at the head of `branch` of `repo`. */
  headFiles(repo: string, branch = "main"): FakeFile[] {
    const r = this.repos.get(repo);
    const sha = r?.refs[branch];
    return sha === undefined ? [] : r!.commits[sha]!;
  }

  async close(): Promise<void> {
    for (const server of [this.hub, this.cdn]) {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  }

  private handleHub(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    const segments = url.pathname.split("/").slice(1).map(decodeURIComponent);
    const log = logRequest(this.requests, "hub", req, segments.join("/"));
    if (req.method === "POST") {
      void handleWrite(this, req, res, log, segments).catch((error: unknown) => sendError(res, log, 500, undefined, String(error)));
      return;
    }
    const api = segments[0] === "api" && segments[1] === "models";
    const [owner, name, action, rev, ...rest] = api ? segments.slice(2) : segments;
    const repo = this.repos.get(`${owner}/${name}`);
    if (repo === undefined) return sendError(res, log, 404, "RepoNotFound", "Repository not found");
    if (repo.token !== undefined && req.headers.authorization !== `Bearer ${repo.token}`) {
      return sendError(res, log, 401, undefined, "Invalid credentials in Authorization header");
    }
    const sha = rev === undefined ? undefined : (repo.refs[rev] ?? (repo.commits[rev] === undefined ? undefined : rev));
    if (sha === undefined) return sendError(res, log, 404, "RevisionNotFound", `Invalid rev id: ${rev}`);
    const files = repo.commits[sha]!;
    if (api && action === "revision" && req.method === "GET") return sendJson(res, log, modelInfoJson(repo, sha, files));
    if (api && action === "tree" && req.method === "GET") {
      const listing = treeJson(files, rest.join("/"), url.searchParams.get("recursive") === "true");
      return sendJson(res, log, [...listing, ...(repo.extraTreeEntries ?? [])]);
    }
    if (!api && action === "resolve" && (req.method === "GET" || req.method === "HEAD")) {
      const file = files.find((f) => f.path === rest.join("/"));
      if (file === undefined) return sendError(res, log, 404, "EntryNotFound", `${rest.join("/")} does not exist`);
      if (file.lfs) {
        const oid = sha256Hex(file.content);
        log.status = 302;
        res.writeHead(302, { Location: `${this.cdnOrigin}/cdn/${oid}`, "X-Repo-Commit": sha, "X-Linked-Etag": `"${oid}"`, "X-Linked-Size": String(file.content.length), ETag: `"${fileOid(file)}"` });
        return void res.end();
      }
      return sendContent(req, res, log, file, { "X-Repo-Commit": sha, ETag: `"${fileOid(file)}"` }, this.corrupt.has(file.path));
    }
    sendError(res, log, 404, undefined, "no such endpoint");
  }

  private handleCdn(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? "/", this.cdnOrigin);
    const log = logRequest(this.requests, "cdn", req, decodeURIComponent(url.pathname));
    this.storage.handle(req, res, log, url, this.cdnOrigin);
  }
}
