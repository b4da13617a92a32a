import { createHash } from "node:crypto";
import { mkdir, open, readdir, readFile, rm, stat, type FileHandle } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { crc32 } from "node:zlib";
import { Packr } from "msgpackr";
import { IoError } from "../../formats/errors.js";
import { PRODUCER } from "../producer.js";
import { writeFileAtomic } from "./atomic.js";

/**
 * A resume journal for long per-layer jobs (`lmpack quantize`): every finished layer is appended
 * to `.<out>.lmpack-journal/layers.log` beside the destination, so a run that is killed
 * can be rerun and load those layers instead of recomputing them. Layers are stored exactly as
 * produced, so a resumed run writes the same bytes as an uninterrupted one.
 *
 *   header.msgpack   { format, producer, command, fingerprint }   written atomically
 *   layers.log       records, each self-delimiting:
 *                    magic "LMJ1" | nameBytes u32 LE | payloadBytes u64 LE | crc32(name ‖ payload) u32 LE | name (UTF-8) | payload (msgpack)
 *
 * A run that is killed mid-append leaves a torn last record; a scan stops at the first record
 * that is short or fails its checksum, and the log is truncated there (records after a damaged
 * one cannot be trusted to start where the damaged one claims to end).
 */

export const JOURNAL_FORMAT = "lmpack-journal/1";
const RECORD_MAGIC = 0x314a4d4c; // "LMJ1" read as a little-endian u32
const RECORD_HEADER_BYTES = 20;
/** Layer names are module paths; a longer one means the length field is damage, not a name. */
const MAX_NAME_BYTES = 4096;
/** Bytes of each source file hashed for its identity: covers a safetensors header of a few thousand tensors. */
const IDENTITY_HEAD_BYTES = 1 << 20;
/**
 * Bytes at the end of each source file hashed too: a file rewritten in place (same size, mtime
 * put back by a copy tool or a coarse-clock file system) most often differs in its last tensors,
 * which the head never sees. Hashing whole multi-GB shards would cost more than resuming saves.
 */
const IDENTITY_TAIL_BYTES = 1 << 20;
const SCAN_CHUNK_BYTES = 16 << 20;
/**
 * Records reach the page cache at once, which is all a killed process needs; fsync guards against
 * power loss only, where losing the last second of records costs their recomputation and a torn
 * one is caught by its checksum. Syncing every record cost ~70 ms each on a busy disk, which would
 * dominate a model of small layers, hence at most one sync per interval (and one at close).
 */
const SYNC_INTERVAL_MS = 1000;

// Typed arrays come back as the same typed arrays (moreTypes); no record structures, so each
// record decodes alone.
const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: true });

/** What decides whether an earlier run's layers are valid for this one. */
export interface JournalIdentity {
  /** "quantize" */
  command: string;
  /** Every option that can change a layer's values (flat; key order does not matter). */
  options: Record<string, unknown>;
  /** Files or directories whose contents the layers depend on (weights, Hessian stores). */
  sources: readonly string[];
}

export interface JournalOpenOptions {
  /** false: discard any journal found (--no-resume). */
  resume: boolean;
  /** Where discards and dropped records are reported (stderr in the CLI). */
  log?: (line: string) => void;
}

/** Where a record's payload lies in layers.log. */
export interface RecordLocation {
  payloadOffset: number;
  payloadBytes: number;
  crc: number;
  nameBytes: Uint8Array;
}

/** `.<name>.lmpack-journal` beside `destination`. */
export function journalPath(destination: string): string {
  const absolute = resolve(destination);
  return join(dirname(absolute), `.${basename(absolute)}.lmpack-journal`);
}

/** sha256 over the identity: options (sorted, non-finite numbers spelled out), sources' sizes, mtimes, first and last MiB, lmpack's version. */
export async function journalFingerprint(identity: JournalIdentity): Promise<string> {
  const options = Object.fromEntries(Object.entries(identity.options).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  const sources = [];
  for (const source of identity.sources) sources.push(await pathIdentity(source));
  const text = JSON.stringify({ format: JOURNAL_FORMAT, producer: PRODUCER, command: identity.command, options, sources }, (_k, v) => (typeof v === "number" && !Number.isFinite(v) ? String(v) : v));
  return createHash("sha256").update(text).digest("hex");
}

async function pathIdentity(path: string): Promise<unknown> {
  const absolute = resolve(path);
  const info = await stat(absolute).catch((cause: unknown) => {
    throw new IoError("READ_FAILED", `cannot read a source for the resume journal: ${(cause as Error).message}`, { file: absolute, cause });
  });
  if (info.isDirectory()) {
    const names = (await readdir(absolute)).sort();
    const files = [];
    for (const name of names) if ((await stat(join(absolute, name))).isFile()) files.push(await pathIdentity(join(absolute, name)));
    return { path: absolute, files };
  }
  const handle = await open(absolute, "r");
  try {
    const head = await sha256Of(handle, absolute, 0, Math.min(IDENTITY_HEAD_BYTES, info.size));
    // The whole file when it is smaller than the tail.
    const tailBytes = Math.min(IDENTITY_TAIL_BYTES, info.size);
    const tail = await sha256Of(handle, absolute, info.size - tailBytes, tailBytes);
    return { path: absolute, size: info.size, mtimeMs: info.mtimeMs, head, tail };
  } finally {
    await handle.close();
  }
}

/** sha256 of `length` bytes of `file` at `position`; a file that shrank meanwhile is a read error, not a short hash. */
async function sha256Of(handle: FileHandle, file: string, position: number, length: number): Promise<string> {
  const bytes = new Uint8Array(length);
  for (let done = 0; done < length; ) {
    const { bytesRead } = await handle.read(bytes, done, length - done, position + done);
    if (bytesRead === 0) throw new IoError("READ_FAILED", "a source file of the resume journal shrank while it was read", { file, byteOffset: position + done });
    done += bytesRead;
  }
  return createHash("sha256").update(bytes).digest("hex");
}

/** The records of `log` up to the first torn or damaged one, and where the valid part ends. */
export async function scanJournalLog(handle: FileHandle): Promise<{ records: Map<string, RecordLocation>; validBytes: number; fileBytes: number }> {
  const fileBytes = (await handle.stat()).size;
  const records = new Map<string, RecordLocation>();
  const header = new Uint8Array(RECORD_HEADER_BYTES);
  const view = new DataView(header.buffer);
  let offset = 0;
  while (offset + RECORD_HEADER_BYTES <= fileBytes) {
    await readExactly(handle, header, offset);
    const nameBytes = view.getUint32(4, true);
    const payloadBytes = Number(view.getBigUint64(8, true));
    const end = offset + RECORD_HEADER_BYTES + nameBytes + payloadBytes;
    if (view.getUint32(0, true) !== RECORD_MAGIC || nameBytes > MAX_NAME_BYTES || end > fileBytes) break;
    const name = new Uint8Array(nameBytes);
    await readExactly(handle, name, offset + RECORD_HEADER_BYTES);
    const payloadOffset = offset + RECORD_HEADER_BYTES + nameBytes;
    const crc = view.getUint32(16, true);
    if ((await crcOf(handle, crc32(name), payloadOffset, payloadBytes)) !== crc) break;
    records.set(new TextDecoder().decode(name), { payloadOffset, payloadBytes, crc, nameBytes: name });
    offset = end;
  }
  return { records, validBytes: offset, fileBytes };
}

async function crcOf(handle: FileHandle, seed: number, offset: number, length: number): Promise<number> {
  let value = seed;
  const chunk = new Uint8Array(Math.min(SCAN_CHUNK_BYTES, length));
  for (let done = 0; done < length; ) {
    const part = chunk.subarray(0, Math.min(chunk.length, length - done));
    await readExactly(handle, part, offset + done);
    value = crc32(part, value);
    done += part.length;
  }
  return value;
}

async function readExactly(handle: FileHandle, into: Uint8Array, position: number): Promise<void> {
  for (let done = 0; done < into.length; ) {
    const { bytesRead } = await handle.read(into, done, into.length - done, position + done);
    if (bytesRead === 0) throw new IoError("READ_FAILED", "journal ended early", { byteOffset: position + done });
    done += bytesRead;
  }
}

/** An open journal: `recall` finished layers, `record` new ones, `finish` once the output is in place. */
export class LayerJournal {
  private appendChain: Promise<void> = Promise.resolve();
  private closed = false;
  private lastSyncMs = performance.now();

  private constructor(
    readonly directory: string,
    private readonly handle: FileHandle,
    private readonly records: Map<string, RecordLocation>,
    private endOffset: number,
    /** Layers on record when the journal was opened (what this run resumes). */
    readonly resumedLayers: number,
  ) {}

  static async open(destination: string, identity: JournalIdentity, options: JournalOpenOptions): Promise<LayerJournal> {
    const directory = journalPath(destination);
    const log = options.log ?? (() => undefined);
    const fingerprint = await journalFingerprint(identity);
    if (!options.resume) await rm(directory, { recursive: true, force: true });
    else if ((await headerFingerprint(directory)) !== fingerprint) {
      if (await exists(directory)) log(`lmpack: discarding the journal ${directory}: it was made by another lmpack version, other options or other source files`);
      await rm(directory, { recursive: true, force: true });
    }
    try {
      await mkdir(directory, { recursive: true });
      if (!(await exists(join(directory, "header.msgpack")))) {
        await writeFileAtomic(join(directory, "header.msgpack"), packr.pack({ format: JOURNAL_FORMAT, producer: PRODUCER, command: identity.command, fingerprint }));
      }
      const handle = await open(join(directory, "layers.log"), (await exists(join(directory, "layers.log"))) ? "r+" : "w+");
      const { records, validBytes, fileBytes } = await scanJournalLog(handle);
      if (validBytes < fileBytes) {
        log(`lmpack: journal ${directory}: dropped a torn or damaged record at byte ${validBytes} (${fileBytes - validBytes} bytes)`);
        await handle.truncate(validBytes);
      }
      return new LayerJournal(directory, handle, records, validBytes, records.size);
    } catch (cause) {
      if (cause instanceof IoError) throw cause;
      throw new IoError("WRITE_FAILED", `cannot open the resume journal: ${(cause as Error).message}`, { file: directory, cause });
    }
  }

  /** Names of the layers on record. */
  get layers(): string[] {
    return [...this.records.keys()];
  }

  /** The value recorded for `name`, or undefined. */
  async recall(name: string): Promise<unknown> {
    const at = this.records.get(name);
    if (at === undefined) return undefined;
    const payload = new Uint8Array(at.payloadBytes);
    await readExactly(this.handle, payload, at.payloadOffset);
    // Scanned once already; checked again because the file may have changed since (another run).
    if (crc32(payload, crc32(at.nameBytes)) !== at.crc) throw new IoError("READ_FAILED", "journal record changed since it was scanned", { file: this.directory, tensor: name, byteOffset: at.payloadOffset });
    try {
      return packr.unpack(payload);
    } catch (cause) {
      throw new IoError("READ_FAILED", `journal record is not valid msgpack: ${(cause as Error).message}`, { file: this.directory, tensor: name, byteOffset: at.payloadOffset, cause });
    }
  }

  /** Appends `value` for `name`; once resolved, a killed process's rerun can recall it. */
  record(name: string, value: unknown): Promise<void> {
    // pack() returns a view of Packr's reused buffer: copy before the next pack can overwrite it.
    const packed = packr.pack(value);
    const payload = new Uint8Array(packed.length);
    payload.set(packed);
    const appended = this.appendChain.then(() => this.append(name, payload));
    this.appendChain = appended.catch(() => undefined);
    return appended;
  }

  private async append(name: string, payload: Uint8Array): Promise<void> {
    const nameBytes = new TextEncoder().encode(name);
    const header = new Uint8Array(RECORD_HEADER_BYTES);
    const view = new DataView(header.buffer);
    view.setUint32(0, RECORD_MAGIC, true);
    view.setUint32(4, nameBytes.length, true);
    view.setBigUint64(8, BigInt(payload.length), true);
    const crc = crc32(payload, crc32(nameBytes));
    view.setUint32(16, crc, true);
    const start = this.endOffset;
    try {
      let position = start;
      for (const part of [header, nameBytes, payload]) {
        for (let done = 0; done < part.length; ) done += (await this.handle.write(part, done, part.length - done, position + done)).bytesWritten;
        position += part.length;
      }
      if (performance.now() - this.lastSyncMs >= SYNC_INTERVAL_MS) {
        await this.handle.datasync();
        this.lastSyncMs = performance.now();
      }
    } catch (cause) {
      throw new IoError("WRITE_FAILED", `cannot append to the resume journal: ${(cause as Error).message}`, { file: this.directory, tensor: name, byteOffset: start, cause });
    }
    this.endOffset = start + RECORD_HEADER_BYTES + nameBytes.length + payload.length;
    this.records.set(name, { payloadOffset: start + RECORD_HEADER_BYTES + nameBytes.length, payloadBytes: payload.length, crc, nameBytes });
  }

  /** Closes the journal and keeps it for a later run, unless nothing is on record. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.appendChain;
    await this.handle.datasync().catch(() => undefined);
    await this.handle.close().catch(() => undefined);
    if (this.records.size === 0) await rm(this.directory, { recursive: true, force: true });
  }

  /** The output is in place: the journal has served its purpose. */
  async finish(): Promise<void> {
    this.closed = true;
    await this.appendChain;
    await this.handle.close().catch(() => undefined);
    await rm(this.directory, { recursive: true, force: true });
  }
}

/**
 * The layer `name` as an earlier run recorded it, else `compute()`'s value, recorded before it
 * is handed on: a layer an exporter has seen is always one a rerun after a kill can recall.
 */
export async function journaled<T>(journal: LayerJournal | undefined, name: string, compute: () => Promise<T>): Promise<{ value: T; resumed: boolean }> {
  const recalled = await journal?.recall(name);
  if (recalled !== undefined) return { value: recalled as T, resumed: true };
  const value = await compute();
  await journal?.record(name, value);
  return { value, resumed: false };
}

async function headerFingerprint(directory: string): Promise<string | undefined> {
  try {
    const header = packr.unpack(await readFile(join(directory, "header.msgpack"))) as { format?: unknown; fingerprint?: unknown };
    return header.format === JOURNAL_FORMAT && typeof header.fingerprint === "string" ? header.fingerprint : undefined;
  } catch {
    return undefined;
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
