import { createHmac, randomBytes } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { sha256Hex } from "./git-objects.js";
import { readBody, sendContent, sendError } from "./http.js";
import type { FakeFile, LoggedRequest, UploadInterruption, UploadRefusal } from "./types.js";

/**
 * The LFS object storage behind the fake Hub (S3 and the CDN in front of it on huggingface.co),
 * served on its own origin:
 *
 *   GET|HEAD /cdn/{sha256}                       LFS bytes (the resolve redirect's target)
 *   PUT  /upload/{owner}/{name}/{oid}[/part/{n}]  LFS bytes; sha256 checked
 *   POST /upload/{owner}/{name}/{oid}/complete    multipart completion
 *
 * Upload URLs are presigned as S3's are: the query carries X-Amz-Credential and an
 * X-Amz-Signature (an HMAC of the path under a per-server secret), checked on every request,
 * and no Authorization header is expected. The signatures handed out are kept in
 * `issuedSignatures`, so a test can look for them in whatever lmpack prints.
 */

const DROP_POLL_MS = 20;
const DROP_WAIT_MAX_MS = 5000;

export class LfsStorage {
  /** When set, LFS objects larger than this are uploaded in parts of this size. */
  multipartChunkBytes: number | undefined;
  readonly interruptions: UploadInterruption[] = [];
  /** When set, every upload PUT is answered 403 (after its body arrived), in this style. */
  refuseUploads: UploadRefusal | undefined;
  /** The access key id in every X-Amz-Credential handed out. */
  readonly accessKeyId = `AKIA${randomBytes(8).toString("hex").toUpperCase()}`;
  /** Every X-Amz-Signature value handed out in an upload URL. */
  readonly issuedSignatures = new Set<string>();
  private readonly signingKey = randomBytes(32);
  private readonly blobs = new Map<string, FakeFile>();
  /** LFS objects each repo holds (uploaded, or present in its commits). */
  private readonly repoObjects = new Map<string, Set<string>>();
  /** Objects each repo's latest LFS batch asked to be uploaded. */
  private readonly batchPending = new Map<string, Set<string>>();
  private readonly parts = new Map<string, Map<number, Uint8Array>>();

  /** `corrupt`: repo file paths served with one byte flipped (shared with the Hub's resolve). */
  constructor(private readonly corrupt: ReadonlySet<string>) {}

  blob(oid: string): FakeFile | undefined {
    return this.blobs.get(oid);
  }

  objectsOf(repoId: string): Set<string> {
    if (!this.repoObjects.has(repoId)) this.repoObjects.set(repoId, new Set());
    return this.repoObjects.get(repoId)!;
  }

  store(repoId: string, file: FakeFile): void {
    const oid = sha256Hex(file.content);
    this.blobs.set(oid, file);
    this.objectsOf(repoId).add(oid);
  }

  /** The LFS batch answer's objects: held ones get no `actions`; the rest presigned upload URLs (multipart above the chunk size). */
  batch(repoId: string, objects: { oid: string; size: number }[], origin: string): Record<string, unknown>[] {
    const held = this.objectsOf(repoId);
    this.batchPending.set(repoId, new Set(objects.filter((o) => !held.has(o.oid)).map((o) => o.oid)));
    const base = `${origin}/upload/${repoId}`;
    return objects.map(({ oid, size }) => {
      if (held.has(oid)) return { oid, size };
      const chunk = this.multipartChunkBytes;
      if (chunk === undefined || size <= chunk) return { oid, size, authenticated: true, actions: { upload: { href: this.presign(`${base}/${oid}`) } } };
      const header: Record<string, string> = { chunk_size: String(chunk) };
      for (let part = 1; part <= Math.ceil(size / chunk); part++) header[String(part)] = this.presign(`${base}/${oid}/part/${part}`);
      return { oid, size, authenticated: true, actions: { upload: { href: this.presign(`${base}/${oid}/complete`), header } } };
    });
  }

  handle(req: IncomingMessage, res: ServerResponse, log: LoggedRequest, url: URL, origin: string): void {
    const path = decodeURIComponent(url.pathname);
    if (path.startsWith("/upload/")) {
      void this.upload(req, res, log, url, origin).catch((error: unknown) => sendError(res, log, 500, undefined, String(error)));
      return;
    }
    const file = this.blobs.get(path.replace(/^\/cdn\//, ""));
    if (file === undefined || (req.method !== "GET" && req.method !== "HEAD")) return sendError(res, log, 404, undefined, "NoSuchKey");
    sendContent(req, res, log, file, { ETag: `"${sha256Hex(file.content).slice(0, 32)}"` }, this.corrupt.has(file.path));
  }

  private presign(href: string): string {
    const signature = this.signatureOf(new URL(href).pathname);
    this.issuedSignatures.add(signature);
    const credential = encodeURIComponent(`${this.accessKeyId}/20250101/us-east-1/s3/aws4_request`);
    return `${href}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=${credential}&X-Amz-Date=20250101T000000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=${signature}`;
  }

  private signatureOf(pathname: string): string {
    return createHmac("sha256", this.signingKey).update(pathname).digest("hex");
  }

  /** `/upload/{owner}/{name}/{oid}`, `…/{oid}/part/{n}` or `…/{oid}/complete`. */
  private async upload(req: IncomingMessage, res: ServerResponse, log: LoggedRequest, url: URL, origin: string): Promise<void> {
    const [owner, name, oid, kind, partText] = decodeURIComponent(url.pathname).split("/").slice(2);
    const repoId = `${owner}/${name}`;
    const part = kind === "part" ? Number(partText) : undefined;
    const interruption = req.method === "PUT" ? this.interruptions.find((i) => i.oid === oid && i.part === part && (i.times ?? 1) > 0) : undefined;
    const body = await readBody(req, log, interruption === undefined ? undefined : () => this.drop(repoId, oid!, interruption, req, log), interruption?.afterBytes);
    if (body === undefined) return;
    if (url.searchParams.get("X-Amz-Signature") !== this.signatureOf(url.pathname)) return sendS3Error(res, log, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.");
    if (req.method === "PUT" && this.refuseUploads === "s3-xml") return sendS3Error(res, log, "AccessDenied", "Request has expired");
    if (req.method === "PUT" && this.refuseUploads === "echo-json") return sendError(res, log, 403, undefined, `AccessDenied: request has expired: PUT ${origin}${req.url ?? ""}`);
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
    this.store(repoId, { path: oid!, content, lfs: true });
    log.status = 200;
    res.writeHead(200);
    res.end();
  }

  /** Waits until the batch's other objects are stored, then drops the connection mid-body. */
  private async drop(repoId: string, oid: string, interruption: UploadInterruption, req: IncomingMessage, log: LoggedRequest): Promise<void> {
    interruption.times = (interruption.times ?? 1) - 1;
    const others = () => [...(this.batchPending.get(repoId) ?? [])].filter((o) => o !== oid && !this.objectsOf(repoId).has(o));
    for (let waitedMs = 0; others().length > 0 && waitedMs < DROP_WAIT_MAX_MS; waitedMs += DROP_POLL_MS) await new Promise((resolve) => setTimeout(resolve, DROP_POLL_MS));
    log.dropped = true;
    req.socket.destroy();
  }
}

/** A 403 as S3 answers it: an XML Error document (the client keeps it out of the error message). */
function sendS3Error(res: ServerResponse, log: LoggedRequest, code: string, message: string): void {
  log.status = 403;
  res.writeHead(403, { "Content-Type": "application/xml" });
  res.end(`<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message><RequestId>${randomBytes(8).toString("hex").toUpperCase()}</RequestId></Error>`);
}
