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
 *
 * The write side, what @huggingface/hub's createRepo, createBranch and commit send (each needs
 * `Authorization: Bearer <writeToken>`, except the storage PUTs, which like S3's presigned URLs
 * carry no token):
 *
 *   POST /api/repos/create                              409 when the repo exists; a new repo has
 *                                                      one commit on main holding .gitattributes
 *   POST /api/models/{owner}/{name}/branch/{branch}     a branch at main's head
 *   POST /api/models/{owner}/{name}/preupload/{rev}     uploadMode per file: lfs when .gitattributes
 *                                                      says so, at 10 MiB and over, or binary
 *   POST /{owner}/{name}.git/info/lfs/objects/batch     basic transfer; an object the repo already
 *                                                      has gets no `actions` (nothing to send);
 *                                                      multipart above `multipartChunkBytes`
 *   PUT  /upload/{owner}/{name}/{oid}[/part/{n}]        LFS bytes, on the CDN port; sha256 checked
 *   POST /upload/{owner}/{name}/{oid}/complete          multipart completion
 *   POST /api/models/{owner}/{name}/commit/{branch}     ndjson header, file (base64), lfsFile (must
 *                                                      be uploaded), deletedFile; 412 when
 *                                                      parentCommit is not the branch head
 *
 * `interruptUpload` drops the connection of one upload mid-body, to test resumption.
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
  /** Body bytes received (uploads). */
  receivedBytes: number;
  /** The server dropped the connection on purpose (interruptUpload). */
  dropped?: boolean;
}

/** Drops the connection of the next upload of `oid` (part `part` when multipart) after `afterBytes` of its body. */
export interface UploadInterruption {
  oid: string;
  part?: number;
  afterBytes: number;
  /**
   * How many uploads to drop (default 1). Before each drop the server waits (up to 5 s) until
   * every other object of the same LFS batch is stored, so a test knows which uploads finished.
   */
  times?: number;
}

/** Commit entries the server received, for tests (in order). */
export interface CommitRecord {
  repo: string;
  branch: string;
  summary: string;
  files: string[];
  lfsFiles: string[];
  deleted: string[];
}

/** At this size and over, preupload answers "lfs" (the Hub's limit for regular git files). */
export const LFS_THRESHOLD_BYTES = 10 * 1024 * 1024;
const GITATTRIBUTES = ["*.bin", "*.gguf", "*.h5", "*.lmpack", "*.model", "*.msgpack", "*.onnx", "*.onnx.data", "*.pt", "*.pth", "*.safetensors", "*.zip"]
  .map((pattern) => `${pattern} filter=lfs diff=lfs merge=lfs -text\n`)
  .join("");
const SAMPLE_BYTES = 512;

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
  readonly commitLog: CommitRecord[] = [];
  /** Bearer token the write endpoints require. */
  writeToken: string | undefined;
  /** When set, LFS objects larger than this are uploaded in parts of this size. */
  multipartChunkBytes: number | undefined;
  readonly interruptions: UploadInterruption[] = [];
  /** A careless server: write refusals quote the Authorization header they got (for redaction tests). */
  echoAuthorization = false;
  private readonly lfsBlobs = new Map<string, FakeFile>();
  /** LFS objects each repo holds (uploaded, or present in its commits). */
  private readonly repoObjects = new Map<string, Set<string>>();
  /** Objects each repo's latest LFS batch asked to be uploaded. */
  private readonly batchPending = new Map<string, Set<string>>();
  private readonly parts = new Map<string, Map<number, Uint8Array>>();
  private commitCounter = 0;

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
    for (const files of Object.values(repo.commits)) for (const file of files) if (file.lfs) this.storeObject(repo.id, file);
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
    const log = this.log("hub", req, segments.join("/"));
    if (req.method === "POST") {
      void this.handleWrite(req, res, log, segments).catch((error: unknown) => sendError(res, log, 500, undefined, String(error)));
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
      return this.sendContent(req, res, log, file, { "X-Repo-Commit": sha, ETag: `"${fileOid(file)}"` });
    }
    sendError(res, log, 404, undefined, "no such endpoint");
  }

  private async handleWrite(req: IncomingMessage, res: ServerResponse, log: LoggedRequest, segments: string[]): Promise<void> {
    // Without an interruption the body always arrives whole.
    const body = (await readBody(req, log))!;
    if (this.writeToken === undefined || req.headers.authorization !== `Bearer ${this.writeToken}`) {
      return sendError(res, log, 401, undefined, `Invalid username or password.${this.echoAuthorization ? ` You sent: ${req.headers.authorization}` : ""}`);
    }
    if (segments.join("/") === "api/repos/create") return this.createRepo(res, log, JSON.parse(body.toString("utf8")) as Record<string, unknown>);
    const lfsBatch = segments.length === 6 && segments[1]!.endsWith(".git") && segments.slice(2).join("/") === "info/lfs/objects/batch";
    const [owner, name, action, rev] = lfsBatch ? [segments[0], segments[1]!.slice(0, -4), "lfs-batch", undefined] : segments[0] === "api" && segments[1] === "models" ? [segments[2], segments[3], segments[4], segments.slice(5).join("/")] : [];
    const repo = this.repos.get(`${owner}/${name}`);
    if (repo === undefined) return sendError(res, log, 404, "RepoNotFound", "Repository not found");
    const json = () => JSON.parse(body.toString("utf8")) as Record<string, unknown>;
    if (action === "lfs-batch") return this.lfsBatch(res, log, repo, json());
    if (action === "branch" && rev !== undefined) {
      if (repo.refs[rev] !== undefined) return sendError(res, log, 409, undefined, `Reference already exists: ${rev}`);
      repo.refs[rev] = repo.refs["main"]!;
      return sendJson(res, log, {});
    }
    const head = rev === undefined ? undefined : repo.refs[rev];
    if (head === undefined) return sendError(res, log, 404, "RevisionNotFound", `Invalid rev id: ${rev}`);
    if (action === "preupload") return sendJson(res, log, this.preupload(repo.commits[head]!, json()));
    if (action === "commit") return this.commit(res, log, repo, rev!, body.toString("utf8"));
    sendError(res, log, 404, undefined, "no such endpoint");
  }

  private createRepo(res: ServerResponse, log: LoggedRequest, body: Record<string, unknown>): void {
    const id = `${String(body["organization"])}/${String(body["name"])}`;
    if (this.repos.has(id)) return sendError(res, log, 409, undefined, "You already created this model repo", { url: `${this.endpoint}/${id}` });
    const files: FakeFile[] = [{ path: ".gitattributes", content: new TextEncoder().encode(GITATTRIBUTES), lfs: false }];
    const sha = commitSha(files, `create ${id}`);
    this.addRepo({ id, refs: { main: sha }, commits: { [sha]: files }, ...(body["visibility"] === "private" ? { token: this.writeToken! } : {}) });
    sendJson(res, log, { url: `${this.endpoint}/${id}`, name: id, id });
  }

  private preupload(files: FakeFile[], body: Record<string, unknown>): Record<string, unknown> {
    const patterns = GITATTRIBUTES.split("\n").filter((l) => l !== "").map((l) => l.split(" ")[0]!.slice(1));
    const entries = (body["files"] as { path: string; size: number; sample: string }[]).map((f) => {
      const binary = Buffer.from(f.sample, "base64").subarray(0, SAMPLE_BYTES).includes(0);
      const lfs = f.size >= LFS_THRESHOLD_BYTES || binary || patterns.some((suffix) => f.path.endsWith(suffix));
      const existing = files.find((e) => e.path === f.path);
      return { path: f.path, uploadMode: lfs ? "lfs" : "regular", shouldIgnore: false, ...(existing === undefined ? {} : { oid: existing.lfs ? sha256Hex(existing.content) : fileOid(existing) }) };
    });
    return { files: entries };
  }

  private lfsBatch(res: ServerResponse, log: LoggedRequest, repo: FakeRepo, body: Record<string, unknown>): void {
    const held = this.objectsOf(repo.id);
    const objects = body["objects"] as { oid: string; size: number }[];
    this.batchPending.set(repo.id, new Set(objects.filter((o) => !held.has(o.oid)).map((o) => o.oid)));
    const base = `${this.cdnOrigin}/upload/${repo.id}`;
    const answer = objects.map(({ oid, size }) => {
      if (held.has(oid)) return { oid, size };
      const chunk = this.multipartChunkBytes;
      if (chunk === undefined || size <= chunk) return { oid, size, authenticated: true, actions: { upload: { href: `${base}/${oid}` } } };
      const header: Record<string, string> = { chunk_size: String(chunk) };
      for (let part = 1; part <= Math.ceil(size / chunk); part++) header[String(part)] = `${base}/${oid}/part/${part}`;
      return { oid, size, authenticated: true, actions: { upload: { href: `${base}/${oid}/complete`, header } } };
    });
    sendJson(res, log, { transfer: "basic", objects: answer, hash_algo: "sha256" }, "application/vnd.git-lfs+json");
  }

  private commit(res: ServerResponse, log: LoggedRequest, repo: FakeRepo, branch: string, body: string): void {
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
        const blob = this.lfsBlobs.get(String(value["oid"]));
        if (blob === undefined || !this.objectsOf(repo.id).has(String(value["oid"])) || blob.content.length !== value["size"]) {
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
    const sha = commitSha(committed, `commit ${++this.commitCounter}`);
    repo.commits[sha] = committed;
    repo.refs[branch] = sha;
    this.commitLog.push(record);
    sendJson(res, log, { success: true, commitOid: sha, commitUrl: `${this.endpoint}/${repo.id}/commit/${sha}`, hookOutput: "" });
  }

  private handleCdn(req: IncomingMessage, res: ServerResponse): void {
    const path = decodeURIComponent(new URL(req.url ?? "/", "http://127.0.0.1").pathname);
    const log = this.log("cdn", req, path);
    if (path.startsWith("/upload/")) {
      void this.handleUpload(req, res, log, path.split("/").slice(2)).catch((error: unknown) => sendError(res, log, 500, undefined, String(error)));
      return;
    }
    const file = this.lfsBlobs.get(path.replace(/^\/cdn\//, ""));
    if (file === undefined || (req.method !== "GET" && req.method !== "HEAD")) return sendError(res, log, 404, undefined, "NoSuchKey");
    this.sendContent(req, res, log, file, { ETag: `"${sha256Hex(file.content).slice(0, 32)}"` });
  }

  /** `[owner, name, oid]`, `[owner, name, oid, "part", n]` or `[owner, name, oid, "complete"]`. */
  private async handleUpload(req: IncomingMessage, res: ServerResponse, log: LoggedRequest, parts: string[]): Promise<void> {
    const [owner, name, oid, kind, partText] = parts;
    const repoId = `${owner}/${name}`;
    const part = kind === "part" ? Number(partText) : undefined;
    const interruption = req.method === "PUT" ? this.interruptions.find((i) => i.oid === oid && i.part === part && (i.times ?? 1) > 0) : undefined;
    const body = await readBody(req, log, interruption === undefined ? undefined : () => this.drop(repoId, oid!, interruption, req, log), interruption?.afterBytes);
    if (body === undefined) return;
    if (req.method === "PUT" && part !== undefined) {
      const key = `${repoId}/${oid}`;
      if (!this.parts.has(key)) this.parts.set(key, new Map());
      this.parts.get(key)!.set(part, body);
      log.status = 200;
      res.writeHead(200, { ETag: `"${sha256Hex(body).slice(0, 32)}"` });
      return void res.end();
    }
    let content: Uint8Array = body;
    if (req.method === "POST" && kind === "complete") {
      const stored = this.parts.get(`${repoId}/${oid}`) ?? new Map<number, Uint8Array>();
      const listed = (JSON.parse(body.toString("utf8")) as { parts: { partNumber: number; etag: string }[] }).parts;
      if (listed.some((p) => stored.get(p.partNumber) === undefined || `"${sha256Hex(stored.get(p.partNumber)!).slice(0, 32)}"` !== p.etag)) {
        return sendError(res, log, 400, undefined, "multipart completion lists a part that was not uploaded");
      }
      content = Buffer.concat(listed.map((p) => stored.get(p.partNumber)!));
    } else if (req.method !== "PUT" || kind !== undefined) return sendError(res, log, 404, undefined, "no such upload endpoint");
    if (sha256Hex(content) !== oid) return sendError(res, log, 400, undefined, "uploaded bytes do not match the object id");
    this.storeObject(repoId, { path: oid!, content, lfs: true });
    log.status = 200;
    res.writeHead(200);
    res.end();
  }

  /** Waits until the batch's other objects are stored, then drops the connection mid-body. */
  private async drop(repoId: string, oid: string, interruption: UploadInterruption, req: IncomingMessage, log: LoggedRequest): Promise<void> {
    interruption.times = (interruption.times ?? 1) - 1;
    const others = () => [...(this.batchPending.get(repoId) ?? [])].filter((o) => o !== oid && !this.objectsOf(repoId).has(o));
    for (let waitedMs = 0; others().length > 0 && waitedMs < 5000; waitedMs += 20) await new Promise((resolve) => setTimeout(resolve, 20));
    log.dropped = true;
    req.socket.destroy();
  }

  private objectsOf(repoId: string): Set<string> {
    if (!this.repoObjects.has(repoId)) this.repoObjects.set(repoId, new Set());
    return this.repoObjects.get(repoId)!;
  }

  private storeObject(repoId: string, file: FakeFile): void {
    const oid = sha256Hex(file.content);
    this.lfsBlobs.set(oid, file);
    this.objectsOf(repoId).add(oid);
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
    const entry: LoggedRequest = { server, method: req.method ?? "", path: "/" + path.replace(/^\//, ""), range: req.headers.range, authorization: req.headers.authorization, status: 0, nBytes: 0, receivedBytes: 0 };
    this.requests.push(entry);
    return entry;
  }
}

/**
 * The request body. With `interrupt`, once `afterBytes` have arrived the body is abandoned and
 * `interrupt` runs (it drops the connection); the result is then undefined.
 */
async function readBody(req: IncomingMessage, log: LoggedRequest, interrupt?: () => Promise<void>, afterBytes = 0): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  for await (const chunk of req as AsyncIterable<Buffer>) {
    chunks.push(chunk);
    log.receivedBytes += chunk.length;
    if (interrupt !== undefined && log.receivedBytes >= afterBytes) {
      await interrupt();
      return undefined;
    }
  }
  return Buffer.concat(chunks);
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

function sendJson(res: ServerResponse, log: LoggedRequest, value: unknown, contentType = "application/json; charset=utf-8"): void {
  const body = JSON.stringify(value);
  log.status = 200;
  log.nBytes = Buffer.byteLength(body);
  res.writeHead(200, { "Content-Type": contentType });
  res.end(body);
}

function sendError(res: ServerResponse, log: LoggedRequest, status: number, errorCode: string | undefined, message: string, extra: Record<string, unknown> = {}): void {
  log.status = status;
  if (res.headersSent) return void res.end();
  res.writeHead(status, { "Content-Type": "application/json; charset=utf-8", ...(errorCode === undefined ? {} : { "X-Error-Code": errorCode, "X-Error-Message": message }) });
  res.end(JSON.stringify({ error: message, ...extra }));
}

function listen(server: Server): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
}
