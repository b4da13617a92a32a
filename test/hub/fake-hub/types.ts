/** The data the fake Hub serves and records (see ../fake-hub-server.ts for the endpoints). */

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

/**
 * How the storage refuses every upload with 403, when asked to:
 * - "s3-xml": as S3 does for an expired presigned URL (an XML AccessDenied body);
 * - "echo-json": as a careless gateway might, a JSON error quoting the whole signed URL.
 */
export type UploadRefusal = "s3-xml" | "echo-json";

/** Commit entries the server received, for tests (in order). */
export interface CommitRecord {
  repo: string;
  branch: string;
  summary: string;
  files: string[];
  lfsFiles: string[];
  deleted: string[];
}
