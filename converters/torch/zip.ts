import { crc32 } from "node:zlib";
import { FormatError, VerificationError } from "../../formats/errors.js";
import type { RandomAccessSource } from "../io/random-access.js";

/**
 * A strict reader for the ZIP archives `torch.save` writes (PKWARE APPNOTE 6.3.x, the subset
 * PyTorch's miniz writer emits): stored entries only, one disk, ZIP64 end records.
 *
 *   per entry   local header  PK\3\4 (30 bytes + name + extra; torch pads the extra with "FB" fields
 *                             so data starts 64-byte aligned), the raw bytes, and, with flag bit 3,
 *                             a data descriptor PK\7\8 (torch sets bit 3 and leaves the local
 *                             CRC and sizes 0: the central directory is the only source of them)
 *   central dir   PK\1\2 per entry (46 bytes + name + extra + comment)
 *   [ZIP64 end]   PK\6\6 record + PK\6\7 locator (torch always writes both)
 *   end record    PK\5\6 (22 bytes + comment), which must end the file
 *
 * What is refused, and why: compressed or encrypted entries (torch writes neither; inflating
 * would only add an attack surface), several disks, names that are absolute, contain "..",
 * backslashes or NUL (they are looked up, never written, but a name lmpack cannot print is a
 * name it should not trust), duplicate names, entries that overlap each other or the central
 * directory, and any size or offset outside the file. Every size is checked against the file
 * before anything is read.
 */

/** Entries per archive: a state dict has one storage per tensor; a million is far beyond any model. */
export const ZIP_MAX_ENTRIES = 1 << 20;
/** Central directory bytes: ~100 bytes per entry, so 64 MiB covers the entry cap with room to spare. */
export const ZIP_MAX_CENTRAL_DIRECTORY_BYTES = 64 * 1024 * 1024;
/** Name bytes: torch names are "<archive>/data/<key>", tens of bytes. */
export const ZIP_MAX_NAME_BYTES = 4096;

const EOCD_BYTES = 22;
const EOCD64_LOCATOR_BYTES = 20;
const EOCD64_MIN_BYTES = 56;
const CENTRAL_HEADER_BYTES = 46;
const LOCAL_HEADER_BYTES = 30;
/** The end record's comment is at most 65,535 bytes, so the record starts within this many bytes of the end. */
const EOCD_SEARCH_BYTES = EOCD_BYTES + 0xffff;

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_EOCD64 = 0x06064b50;
const SIG_EOCD64_LOCATOR = 0x07064b50;
const ZIP64_EXTRA_ID = 0x0001;

const FLAG_ENCRYPTED = 0x0001;
const FLAG_STRONG_ENCRYPTION = 0x0040;
const FLAG_UTF8 = 0x0800;
const FLAG_MASKED_DIRECTORY = 0x2000;
const METHOD_STORED = 0;

export interface ZipEntry {
  name: string;
  /** Bytes of the entry (stored: compressed and uncompressed sizes are equal). */
  size: number;
  crc32: number;
  localHeaderOffset: number;
  /** Absolute offset of the entry's first data byte. */
  dataOffset: number;
}

export class ZipArchive {
  private constructor(readonly source: RandomAccessSource, readonly entries: ReadonlyMap<string, ZipEntry>) {}

  /** Reads and checks the end records, the central directory and every local header. */
  static async open(source: RandomAccessSource): Promise<ZipArchive> {
    const file = source.name;
    const end = await readEndRecords(source);
    const directory = await source.read(end.directoryOffset, end.directoryBytes);
    const entries = new Map<string, ZipEntry>();
    let at = 0;
    for (let i = 0; i < end.entryCount; i++) {
      const entry = parseCentralHeader(directory, at, end.directoryOffset, file);
      if (entries.has(entry.name)) throw new FormatError("DUPLICATE_KEY", "two ZIP entries have the same name", { file, tensor: entry.name, byteOffset: end.directoryOffset + at });
      entries.set(entry.name, entry.entry);
      at = entry.next;
    }
    if (at !== directory.length) {
      throw new FormatError("CONTAINER_HEADER_INVALID", "ZIP central directory size does not match its entries", { file, byteOffset: end.directoryOffset, expected: at, actual: directory.length });
    }
    for (const entry of entries.values()) await checkLocalHeader(source, entry, end.directoryOffset);
    checkNoOverlap([...entries.values()], file);
    return new ZipArchive(source, entries);
  }

  entry(name: string): ZipEntry | undefined {
    return this.entries.get(name);
  }

  /**
   * The entry's bytes, CRC-checked. A stored CRC of 0 is taken as "not computed": torch ≥ 2.6 writes
   * 0 under `torch.serialization.set_crc32_options(False)`, and a real CRC-32 is 0 once in 2³² files.
   */
  async read(entry: ZipEntry): Promise<Uint8Array> {
    const bytes = await this.source.read(entry.dataOffset, entry.size);
    if (entry.crc32 !== 0) {
      const actual = crc32(bytes) >>> 0;
      if (actual !== entry.crc32) {
        throw new VerificationError("CHECKSUM_MISMATCH", "ZIP entry CRC-32 does not match its data", { file: this.source.name, tensor: entry.name, byteOffset: entry.dataOffset, expected: hex(entry.crc32), actual: hex(actual) });
      }
    }
    return bytes;
  }

  close(): Promise<void> {
    return this.source.close();
  }
}

interface EndRecords {
  entryCount: number;
  directoryOffset: number;
  directoryBytes: number;
}

async function readEndRecords(source: RandomAccessSource): Promise<EndRecords> {
  const file = source.name;
  const size = source.byteLength;
  if (size < EOCD_BYTES) throw new FormatError("FILE_TOO_SMALL", "too small for a ZIP end-of-central-directory record", { file, expected: `>= ${EOCD_BYTES} bytes`, actual: size });
  const tailStart = Math.max(0, size - EOCD_SEARCH_BYTES);
  const tail = await source.read(tailStart, size - tailStart);
  const view = new DataView(tail.buffer, tail.byteOffset, tail.byteLength);
  let eocd = -1;
  for (let p = tail.length - EOCD_BYTES; p >= 0; p--) {
    // The comment length must reach exactly to the end of the file, so a stray signature inside a comment does not match.
    if (view.getUint32(p, true) === SIG_EOCD && p + EOCD_BYTES + view.getUint16(p + 20, true) === tail.length) {
      eocd = p;
      break;
    }
  }
  if (eocd < 0) throw new FormatError("DATA_TRUNCATED", "no ZIP end-of-central-directory record: the file is truncated or not a ZIP archive", { file, byteOffset: size });
  const eocdOffset = tailStart + eocd;
  const disk = view.getUint16(eocd + 4, true);
  const directoryDisk = view.getUint16(eocd + 6, true);
  let onDisk: number | bigint = view.getUint16(eocd + 8, true);
  let entryCount: number | bigint = view.getUint16(eocd + 10, true);
  let directoryBytes: number | bigint = view.getUint32(eocd + 12, true);
  let directoryOffset: number | bigint = view.getUint32(eocd + 16, true);
  let recordsStart = eocdOffset;

  if (eocd >= EOCD64_LOCATOR_BYTES && view.getUint32(eocd - EOCD64_LOCATOR_BYTES, true) === SIG_EOCD64_LOCATOR) {
    const loc = eocd - EOCD64_LOCATOR_BYTES;
    const record = view.getBigUint64(loc + 8, true);
    if (view.getUint32(loc + 4, true) !== 0 || view.getUint32(loc + 16, true) !== 1) throw multiDisk(file, eocdOffset - EOCD64_LOCATOR_BYTES);
    const locatorOffset = eocdOffset - EOCD64_LOCATOR_BYTES;
    if (record + BigInt(EOCD64_MIN_BYTES) > BigInt(locatorOffset)) {
      throw new FormatError("OFFSET_PAST_EOF", "ZIP64 end record does not fit before its locator", { file, byteOffset: locatorOffset, expected: `<= ${locatorOffset - EOCD64_MIN_BYTES}`, actual: record });
    }
    const r = Number(record);
    const bytes = await source.read(r, locatorOffset - r);
    const v64 = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (v64.getUint32(0, true) !== SIG_EOCD64) throw new FormatError("CONTAINER_HEADER_INVALID", "ZIP64 end record signature missing", { file, byteOffset: r });
    if (v64.getBigUint64(4, true) !== BigInt(bytes.length - 12)) {
      throw new FormatError("CONTAINER_HEADER_INVALID", "ZIP64 end record size does not reach its locator", { file, byteOffset: r, expected: bytes.length - 12, actual: v64.getBigUint64(4, true) });
    }
    if (v64.getUint32(16, true) !== 0 || v64.getUint32(20, true) !== 0) throw multiDisk(file, r);
    // Where the 32-bit record is not saturated, both records must agree.
    onDisk = agree(onDisk, 0xffff, v64.getBigUint64(24, true), "entries on disk", file, r);
    entryCount = agree(entryCount, 0xffff, v64.getBigUint64(32, true), "entry count", file, r);
    directoryBytes = agree(directoryBytes, 0xffffffff, v64.getBigUint64(40, true), "central directory size", file, r);
    directoryOffset = agree(directoryOffset, 0xffffffff, v64.getBigUint64(48, true), "central directory offset", file, r);
    recordsStart = r;
  } else if (disk !== 0 || directoryDisk !== 0) {
    throw multiDisk(file, eocdOffset);
  }
  if (BigInt(onDisk) !== BigInt(entryCount)) throw multiDisk(file, eocdOffset);
  if (BigInt(entryCount) > BigInt(ZIP_MAX_ENTRIES)) {
    throw new FormatError("HEADER_TOO_LARGE", "too many ZIP entries", { file, byteOffset: eocdOffset, expected: `<= ${ZIP_MAX_ENTRIES}`, actual: entryCount });
  }
  if (BigInt(directoryBytes) > BigInt(ZIP_MAX_CENTRAL_DIRECTORY_BYTES)) {
    throw new FormatError("HEADER_TOO_LARGE", "ZIP central directory over the cap", { file, byteOffset: eocdOffset, expected: `<= ${ZIP_MAX_CENTRAL_DIRECTORY_BYTES} bytes`, actual: directoryBytes });
  }
  // The directory must end exactly where the end records begin: nothing hides between them.
  if (BigInt(directoryOffset) + BigInt(directoryBytes) !== BigInt(recordsStart)) {
    const code = BigInt(directoryOffset) + BigInt(directoryBytes) > BigInt(recordsStart) ? "OFFSET_PAST_EOF" : "CONTAINER_HEADER_INVALID";
    throw new FormatError(code, "ZIP central directory does not end where the end records begin", { file, byteOffset: eocdOffset, expected: `offset + size = ${recordsStart}`, actual: `${directoryOffset} + ${directoryBytes}` });
  }
  const count = Number(entryCount);
  if (Number(directoryBytes) < count * CENTRAL_HEADER_BYTES) {
    throw new FormatError("CONTAINER_HEADER_INVALID", "ZIP central directory too small for its entry count", { file, byteOffset: eocdOffset, expected: `>= ${count * CENTRAL_HEADER_BYTES} bytes`, actual: directoryBytes });
  }
  return { entryCount: count, directoryOffset: Number(directoryOffset), directoryBytes: Number(directoryBytes) };
}

function parseCentralHeader(dir: Uint8Array, at: number, base: number, file: string): { name: string; entry: ZipEntry; next: number } {
  const byteOffset = base + at;
  if (at + CENTRAL_HEADER_BYTES > dir.length) throw new FormatError("DATA_TRUNCATED", "ZIP central directory ends inside an entry header", { file, byteOffset });
  const v = new DataView(dir.buffer, dir.byteOffset + at, dir.length - at);
  if (v.getUint32(0, true) !== SIG_CENTRAL) throw new FormatError("CONTAINER_HEADER_INVALID", "ZIP central directory entry signature missing", { file, byteOffset });
  const flags = v.getUint16(8, true);
  const method = v.getUint16(10, true);
  const nameBytes = v.getUint16(28, true);
  const extraBytes = v.getUint16(30, true);
  const commentBytes = v.getUint16(32, true);
  const next = at + CENTRAL_HEADER_BYTES + nameBytes + extraBytes + commentBytes;
  if (next > dir.length) throw new FormatError("DATA_TRUNCATED", "ZIP central directory ends inside an entry's name or extra fields", { file, byteOffset });
  const name = entryName(dir.subarray(at + CENTRAL_HEADER_BYTES, at + CENTRAL_HEADER_BYTES + nameBytes), (flags & FLAG_UTF8) !== 0, file, byteOffset);
  const where = { file, tensor: name, byteOffset };
  if ((flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION | FLAG_MASKED_DIRECTORY)) !== 0) throw new FormatError("LAYOUT_UNKNOWN", "encrypted ZIP entries are not read", { ...where, actual: `flags 0x${flags.toString(16)}` });
  if (method !== METHOD_STORED) {
    throw new FormatError("LAYOUT_UNKNOWN", "compressed ZIP entry: torch.save writes stored (uncompressed) entries only, and lmpack does not inflate", { ...where, expected: "method 0 (stored)", actual: `method ${method}` });
  }
  let compressed: number | bigint = v.getUint32(20, true);
  let size: number | bigint = v.getUint32(24, true);
  let local: number | bigint = v.getUint32(42, true);
  let disk: number | bigint = v.getUint16(34, true);
  const zip64 = findExtra(dir.subarray(at + CENTRAL_HEADER_BYTES + nameBytes, at + CENTRAL_HEADER_BYTES + nameBytes + extraBytes), ZIP64_EXTRA_ID, where);
  if (zip64 !== undefined) {
    // APPNOTE 4.5.3: only the saturated fields are present, in this order.
    const z = new DataView(zip64.buffer, zip64.byteOffset, zip64.byteLength);
    let p = 0;
    const take = (bytes: 8 | 4): bigint => {
      if (p + bytes > z.byteLength) throw new FormatError("CONTAINER_HEADER_INVALID", "ZIP64 extra field shorter than the saturated fields it must hold", where);
      const value = bytes === 8 ? z.getBigUint64(p, true) : BigInt(z.getUint32(p, true));
      p += bytes;
      return value;
    };
    if (size === 0xffffffff) size = take(8);
    if (compressed === 0xffffffff) compressed = take(8);
    if (local === 0xffffffff) local = take(8);
    if (disk === 0xffff) disk = take(4);
  }
  if (BigInt(disk) !== 0n) throw multiDisk(file, byteOffset);
  if (BigInt(compressed) !== BigInt(size)) throw new FormatError("CONTAINER_HEADER_INVALID", "stored ZIP entry with different compressed and uncompressed sizes", { ...where, expected: size, actual: compressed });
  if (BigInt(local) + BigInt(size) > BigInt(base)) {
    throw new FormatError("OFFSET_PAST_EOF", "ZIP entry does not fit before the central directory", { ...where, expected: `end <= ${base}`, actual: `${local} + ${size}` });
  }
  return { name, entry: { name, size: Number(size), crc32: v.getUint32(16, true), localHeaderOffset: Number(local), dataOffset: -1 }, next };
}

async function checkLocalHeader(source: RandomAccessSource, entry: ZipEntry, directoryOffset: number): Promise<void> {
  const where = { file: source.name, tensor: entry.name, byteOffset: entry.localHeaderOffset };
  const nameBytes = new TextEncoder().encode(entry.name);
  if (entry.localHeaderOffset + LOCAL_HEADER_BYTES + nameBytes.length > directoryOffset) throw new FormatError("OFFSET_PAST_EOF", "ZIP local header does not fit before the central directory", where);
  const head = await source.read(entry.localHeaderOffset, LOCAL_HEADER_BYTES + nameBytes.length);
  const v = new DataView(head.buffer, head.byteOffset, head.byteLength);
  if (v.getUint32(0, true) !== SIG_LOCAL) throw new FormatError("CONTAINER_HEADER_INVALID", "ZIP local header signature missing", where);
  if (v.getUint16(8, true) !== METHOD_STORED) throw new FormatError("LAYOUT_UNKNOWN", "compressed ZIP entry (local header)", { ...where, expected: "method 0 (stored)", actual: `method ${v.getUint16(8, true)}` });
  if (v.getUint16(26, true) !== nameBytes.length || !head.subarray(LOCAL_HEADER_BYTES).every((b, i) => b === nameBytes[i])) {
    throw new FormatError("CONTAINER_HEADER_INVALID", "ZIP local header name differs from the central directory's", where);
  }
  entry.dataOffset = entry.localHeaderOffset + LOCAL_HEADER_BYTES + nameBytes.length + v.getUint16(28, true);
  if (entry.dataOffset + entry.size > directoryOffset) {
    throw new FormatError("OFFSET_PAST_EOF", "ZIP entry data runs into the central directory", { ...where, expected: `end <= ${directoryOffset}`, actual: entry.dataOffset + entry.size });
  }
}

function checkNoOverlap(entries: ZipEntry[], file: string): void {
  const sorted = [...entries].sort((a, b) => a.localHeaderOffset - b.localHeaderOffset);
  for (let i = 1; i < sorted.length; i++) {
    const before = sorted[i - 1]!;
    const entry = sorted[i]!;
    if (entry.localHeaderOffset < before.dataOffset + before.size) {
      throw new FormatError("OFFSETS_OVERLAP", `ZIP entry overlaps "${before.name}"`, { file, tensor: entry.name, byteOffset: entry.localHeaderOffset, expected: `>= ${before.dataOffset + before.size}`, actual: entry.localHeaderOffset });
    }
  }
}

function entryName(bytes: Uint8Array, utf8: boolean, file: string, byteOffset: number): string {
  const bad = (what: string, actual?: string) => new FormatError("CONTAINER_HEADER_INVALID", `ZIP entry name ${what}`, { file, byteOffset, actual });
  if (bytes.length === 0 || bytes.length > ZIP_MAX_NAME_BYTES) throw bad(`must be 1..${ZIP_MAX_NAME_BYTES} bytes`, `${bytes.length} bytes`);
  // Without the UTF-8 flag a name is CP437; torch writes ASCII, so anything else is refused rather than guessed at.
  if (!utf8 && bytes.some((b) => b >= 0x80)) throw bad("is not ASCII and lacks the UTF-8 flag");
  let name: string;
  try {
    name = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw bad("is not valid UTF-8");
  }
  const parts = name.split("/");
  if (/[\u0000-\u001f\\]/.test(name) || parts.some((p) => p === "" || p === "." || p === "..")) throw bad("is not a plain relative path", JSON.stringify(name));
  return name;
}

function findExtra(extra: Uint8Array, id: number, where: { file: string; tensor: string; byteOffset: number }): Uint8Array | undefined {
  const v = new DataView(extra.buffer, extra.byteOffset, extra.byteLength);
  let found: Uint8Array | undefined;
  for (let p = 0; p < extra.length; ) {
    if (p + 4 > extra.length) throw new FormatError("CONTAINER_HEADER_INVALID", "ZIP extra field header cut short", where);
    const size = v.getUint16(p + 2, true);
    if (p + 4 + size > extra.length) throw new FormatError("CONTAINER_HEADER_INVALID", "ZIP extra field runs past its entry", where);
    if (v.getUint16(p, true) === id) found = extra.subarray(p + 4, p + 4 + size);
    p += 4 + size;
  }
  return found;
}

function agree(short: number | bigint, saturated: number, long: bigint, what: string, file: string, byteOffset: number): bigint {
  if (short !== saturated && BigInt(short) !== long) throw new FormatError("CONTAINER_HEADER_INVALID", `ZIP and ZIP64 end records disagree on the ${what}`, { file, byteOffset, expected: short, actual: long });
  if (long > BigInt(Number.MAX_SAFE_INTEGER)) throw new FormatError("SHAPE_OVERFLOW", `ZIP64 ${what} beyond 2^53`, { file, byteOffset, actual: long });
  return long;
}

function multiDisk(file: string, byteOffset: number): FormatError {
  return new FormatError("LAYOUT_UNKNOWN", "multi-disk (split) ZIP archives are not read", { file, byteOffset });
}

function hex(n: number): string {
  return `0x${n.toString(16).padStart(8, "0")}`;
}
