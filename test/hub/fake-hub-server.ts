import { createHash } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/**
 * A Hub-compatible HTTP server on 127.0.0.1 over in-memory repos, serving what lmpack and
 * @huggingface/hub call, with the headers huggingface.co sends:
 *
 *   GET  /api/models/{owner}/{name}/revision/{rev}     model info (modelInfo), incl. `sha`
 *   GET  /api/models/{owner}/{name}/tree/{rev}[/{dir}] listing (listFiles): oid, size, lfs
 *   GET|HEAD /{owner}/{name}/resolve/{rev}/{path}      regular files: 200 with ETag "<git sha1>";
 *                                                      LFS files: 302 to the CDN, X-Linked-Etag
 *                                                      "<sha256>", X-Linked-Size; both X-Repo-Commit
 *   GET|HEAD /cdn/{sha256}                             LFS bytes, on a second port named `localhost`
 *                                                      (another host, as cdn-lfs.hf.co is)
 *
 * Resolve and CDN answers honour `Range: bytes=N-[M]` (206, or 416 past the end). Errors carry
 * X-Error-Code as the Hub's do (RepoNotFound, RevisionNotFound, EntryNotFound); a repo with a
 * `token` answers 401 to requests without `Authorization: Bearer <token>`.
 */

export interface FakeFile {
  path: string;
  content: Uint8Array;
  /** Stored with LFS: listed with `lfs.oid` = sha256, downloaded through the CDN redirect. */
  lfs: boolean;
}

export interface FakeRepo {
  id: string;
  /** Branch and tag names → commit sha. */
  refs: Record<string, string>;
  /** Commit sha → the files of that commit. */
  commits: Record<string, FakeFile[]>;
  /** A private repo: every API and resolve request must carry this bearer token. */
  token?: string;
  /** Raw entries appended to every tree listing, for hostile-listing tests. */
  extraTreeEntries?: unknown[];
}

export interface LoggedRequest {
  server: "hub" | "cdn";
  method: string;
  /** Decoded path, without the query. */
  path: string;
  range: string | undefined;
  authorization: string | undefined;
  status: number;
  /** Body bytes sent. */
  nBytes: number;
}

export function sha256Hex(content: Uint8Array | string): string {
  return createHash("sha256").update(content).digest("hex");
}

/** git's blob id: sha1 of "blob <length>\0" followed by the content. */
export function gitBlobSha1(content: Uint8Array | string): string {
  const bytes = typeof content === "string" ? new TextEncoder().encode(content) : content;
  return createHash("sha1").update(`blob ${bytes.length}\0`).update(bytes).digest("hex");
}

/** A stand-in commit id: sha1 over the files' paths and ids (and a salt to tell commits apart). */
export function commitSha(files: FakeFile[], salt = ""): string {
  const hash = createHash("sha1").update(salt);
  for (const file of files) hash.update(`${file.path}\0${fileOid(file)}\0`);
  return hash.digest("hex");
}

/** The git-lfs pointer file committed in place of an LFS file's content. */
function lfsPointer(file: FakeFile): string {
  return `version https://git-lfs.github.com/spec/v1\noid sha256:${sha256Hex(file.content)}\nsize ${file.content.length}\n`;
}

function fileOid(file: FakeFile): string {
  return gitBlobSha1(file.lfs ? lfsPointer(file) : file.content);
}

export class FakeHub {
  readonly requests: LoggedRequest[] = [];
  /** Repo file paths served with one byte flipped (a corrupted download). */
  readonly corrupt = new Set<string>();
  readonly repos = new Map<string, FakeRepo>();
  private readonly lfsBlobs = new Map<string, FakeFile>();

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

  addRepo(repo: FakeRepo): void {
    this.repos.set(repo.id, repo);
    for (const files of Object.values(repo.commits)) for (const file of files) if (file.lfs) this.lfsBlobs.set(sha256Hex(file.content), file);
  }

  /** Requests that fetched file content (resolve/ and the CDN), GET only. */
  fileRequests(): LoggedRequest[] {
    return this.requests.filter((r) => r.method === "GET" && (r.server === "cdn" || r.path.includes("/resolve/")));
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
    const log = this.log("hub", req, segments.join("/"));
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
      return this.sendContent(req, res, log, file, { "X-Repo-Commit": sha, ETag: `"${fileOid(file)}"` });
    }
    sendError(res, log, 404, undefined, "no such endpoint");
  }

  private handleCdn(req: IncomingMessage, res: ServerResponse): void {
    const path = decodeURIComponent(new URL(req.url ?? "/", "http://127.0.0.1").pathname);
    const log = this.log("cdn", req, path);
    const file = this.lfsBlobs.get(path.replace(/^\/cdn\//, ""));
    if (file === undefined || (req.method !== "GET" && req.method !== "HEAD")) return sendError(res, log, 404, undefined, "NoSuchKey");
    this.sendContent(req, res, log, file, { ETag: `"${sha256Hex(file.content).slice(0, 32)}"` });
  }

  private sendContent(req: IncomingMessage, res: ServerResponse, log: LoggedRequest, file: FakeFile, headers: Record<string, string>): void {
    let content = file.content;
    if (this.corrupt.has(file.path)) {
      content = content.slice();
      content[content.length >> 1]! ^= 0xff;
    }
    const total = content.length;
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? "");
    let body = content;
    let status = 200;
    const out: Record<string, string> = { ...headers, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream" };
    if (range !== null) {
      const start = Number(range[1]);
      const end = range[2] === "" ? total - 1 : Math.min(Number(range[2]), total - 1);
      if (start >= total) {
        log.status = 416;
        res.writeHead(416, { ...out, "Content-Range": `bytes */${total}` });
        return void res.end();
      }
      body = content.subarray(start, end + 1);
      status = 206;
      out["Content-Range"] = `bytes ${start}-${end}/${total}`;
    }
    out["Content-Length"] = String(body.length);
    log.status = status;
    res.writeHead(status, out);
    if (req.method === "HEAD") return void res.end();
    log.nBytes = body.length;
    res.end(body);
  }

  private log(server: "hub" | "cdn", req: IncomingMessage, path: string): LoggedRequest {
    const entry: LoggedRequest = { server, method: req.method ?? "", path: "/" + path.replace(/^\//, ""), range: req.headers.range, authorization: req.headers.authorization, status: 0, nBytes: 0 };
    this.requests.push(entry);
    return entry;
  }
}

function modelInfoJson(repo: FakeRepo, sha: string, files: FakeFile[]): Record<string, unknown> {
  return {
    _id: sha.slice(0, 24),
    id: repo.id,
    private: repo.token !== undefined,
    pipeline_tag: "text-generation",
    gated: false,
    downloads: 0,
    likes: 0,
    lastModified: "2025-01-01T00:00:00.000Z",
    sha,
    siblings: files.map((f) => ({ rfilename: f.path })),
  };
}

/** Entries directly under `dir` (or all below it when recursive), as /api/.../tree lists them. */
function treeJson(files: FakeFile[], dir: string, recursive: boolean): Record<string, unknown>[] {
  const prefix = dir === "" ? "" : `${dir}/`;
  const entries: Record<string, unknown>[] = [];
  const folders = new Set<string>();
  for (const file of files) {
    if (!file.path.startsWith(prefix)) continue;
    const parts = file.path.slice(prefix.length).split("/");
    for (let depth = 1; depth < parts.length && (recursive || depth === 1); depth++) folders.add(prefix + parts.slice(0, depth).join("/"));
    if (parts.length > 1 && !recursive) continue;
    const entry: Record<string, unknown> = { type: "file", oid: fileOid(file), size: file.content.length, path: file.path };
    if (file.lfs) entry["lfs"] = { oid: sha256Hex(file.content), size: file.content.length, pointerSize: lfsPointer(file).length };
    entries.push(entry);
  }
  for (const folder of [...folders].sort()) entries.push({ type: "directory", oid: gitBlobSha1(folder), size: 0, path: folder });
  return entries;
}

function sendJson(res: ServerResponse, log: LoggedRequest, value: unknown): void {
  const body = JSON.stringify(value);
  log.status = 200;
  log.nBytes = Buffer.byteLength(body);
  res.writeHead(200, { "Content-Type": "application/json; charset=utf-8" });
  res.end(body);
}

function sendError(res: ServerResponse, log: LoggedRequest, status: number, errorCode: string | undefined, message: string): void {
  log.status = status;
  res.writeHead(status, { "Content-Type": "application/json; charset=utf-8", ...(errorCode === undefined ? {} : { "X-Error-Code": errorCode, "X-Error-Message": message }) });
  res.end(JSON.stringify({ error: message }));
}

function listen(server: Server): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
}
