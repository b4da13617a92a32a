import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { FakeFile, LoggedRequest } from "./types.js";

/** HTTP plumbing shared by the fake Hub's servers: bodies, JSON and error answers, ranged content. */

/**
 * The request body. With `interrupt`, once `afterBytes` have arrived the body is abandoned and
 * `interrupt` runs (it drops the connection); the result is then undefined.
 */
export async function readBody(req: IncomingMessage, log: LoggedRequest, interrupt?: () => Promise<void>, afterBytes = 0): Promise<Buffer | undefined> {
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

export function sendJson(res: ServerResponse, log: LoggedRequest, value: unknown, contentType = "application/json; charset=utf-8"): void {
  const body = JSON.stringify(value);
  log.status = 200;
  log.nBytes = Buffer.byteLength(body);
  res.writeHead(200, { "Content-Type": contentType });
  res.end(body);
}

export function sendError(res: ServerResponse, log: LoggedRequest, status: number, errorCode: string | undefined, message: string, extra: Record<string, unknown> = {}): void {
  log.status = status;
  if (res.headersSent) return void res.end();
  res.writeHead(status, { "Content-Type": "application/json; charset=utf-8", ...(errorCode === undefined ? {} : { "X-Error-Code": errorCode, "X-Error-Message": message }) });
  res.end(JSON.stringify({ error: message, ...extra }));
}

/** `file`'s bytes (one flipped when `corrupt`), honouring `Range: bytes=N-[M]` (206, or 416 past the end). */
export function sendContent(req: IncomingMessage, res: ServerResponse, log: LoggedRequest, file: FakeFile, headers: Record<string, string>, corrupt: boolean): void {
  let content = file.content;
  if (corrupt) {
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

export function logRequest(requests: LoggedRequest[], server: "hub" | "cdn", req: IncomingMessage, path: string): LoggedRequest {
  const entry: LoggedRequest = { server, method: req.method ?? "", path: "/" + path.replace(/^\//, ""), range: req.headers.range, authorization: req.headers.authorization, status: 0, nBytes: 0, receivedBytes: 0 };
  requests.push(entry);
  return entry;
}

export function listen(server: Server): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
}
