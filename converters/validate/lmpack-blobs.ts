import { DTYPES, elementCount } from "../../formats/dtype.js";
import { BufferRing } from "../io/buffer-ring.js";
import type { RandomAccessSource } from "../io/random-access.js";
import { DEFAULT_CHUNK_BYTES, readRange } from "../io/read-range.js";
import { bytesEqual, CHECKSUM_BYTES, createChecksummer, toHex } from "../lmpack/checksum.js";
import { BLOB_ALIGNMENT, PREAMBLE_BYTES } from "../lmpack/layout.js";
import { checksumFromProto, dtypeFromProto, type BlobMessage } from "../lmpack/proto.js";
import type { BlobInfo } from "../lmpack/reader.js";
import type { Findings } from "./findings.js";

/**
 * The blobs of an lmpack container, every one checked (converters/lmpack/reader.ts checks the
 * same rules and stops at the first): a known dtype, an offset that is a multiple of 64 after
 * the preamble, inside the blob area, a length equal to shape × dtype, a known checksum of the
 * right length; then no two blobs sharing bytes, and every checksum against the bytes.
 */
export class BlobChecker {
  readonly valid: BlobInfo[] = [];

  constructor(private readonly file: string, private readonly headerOffset: number, private readonly findings: Findings) {}

  /** The blob, or undefined (with a finding) when it cannot be trusted. */
  check(b: BlobMessage, owner: string): BlobInfo | undefined {
    const where = { file: this.file, tensor: owner };
    const dtype = dtypeFromProto(b.dtype);
    const byteOffset = Number(b.byteOffset ?? 0);
    const byteLength = Number(b.byteLength ?? 0);
    const role = b.role ?? "";
    if (dtype === undefined) return void this.findings.add("UNKNOWN_DTYPE", `unknown dtype in blob "${role}"`, { ...where, byteOffset, actual: b.dtype });
    if (!Number.isSafeInteger(byteOffset) || !Number.isSafeInteger(byteLength) || byteOffset < PREAMBLE_BYTES || byteOffset % BLOB_ALIGNMENT !== 0) {
      return void this.findings.add("CONTAINER_BLOB_INVALID", `blob "${role}" offset must be a multiple of ${BLOB_ALIGNMENT} after the preamble`, { ...where, byteOffset, expected: `a multiple of ${BLOB_ALIGNMENT}, >= ${PREAMBLE_BYTES}`, actual: byteOffset });
    }
    if (byteOffset + byteLength > this.headerOffset) {
      return void this.findings.add("CONTAINER_BLOB_INVALID", `blob "${role}" extends past the blob area`, { ...where, byteOffset, expected: `end <= ${this.headerOffset}`, actual: byteOffset + byteLength });
    }
    const shape = (b.shape ?? []).map(Number);
    const expectedBytes = elementCount(shape) * BigInt(DTYPES[dtype].bits / 8);
    if (expectedBytes !== BigInt(byteLength)) {
      return void this.findings.add("SHAPE_SIZE_MISMATCH", `blob "${role}" shape ${JSON.stringify(shape)} × ${dtype} does not match its length`, { ...where, byteOffset, expected: `${expectedBytes} bytes`, actual: `${byteLength} bytes` });
    }
    const checksumAlgorithm = checksumFromProto(b.checksumAlgorithm);
    const checksum = b.checksum ?? new Uint8Array(0);
    if (checksumAlgorithm === undefined || (checksumAlgorithm !== "none" && checksum.length !== CHECKSUM_BYTES[checksumAlgorithm])) {
      return void this.findings.add("CONTAINER_BLOB_INVALID", `blob "${role}": unknown checksum algorithm or wrong checksum length`, { ...where, byteOffset, actual: `${b.checksumAlgorithm}/${checksum.length} bytes` });
    }
    const info: BlobInfo = { role, dtype, shape, byteOffset, byteLength, checksumAlgorithm, checksum, owner };
    this.valid.push(info);
    return info;
  }

  /** Blobs sharing bytes: each overlap once, naming the later blob. */
  checkOverlaps(): void {
    const sorted = [...this.valid].sort((a, b) => a.byteOffset - b.byteOffset);
    let end = 0;
    let endOwner = "";
    for (const blob of sorted) {
      if (blob.byteOffset < end) this.findings.add("OFFSETS_OVERLAP", `blob "${blob.role}" overlaps a blob of "${endOwner}"`, { file: this.file, tensor: blob.owner, byteOffset: blob.byteOffset, expected: `start >= ${end}`, actual: blob.byteOffset });
      if (blob.byteOffset + blob.byteLength > end) {
        end = blob.byteOffset + blob.byteLength;
        endOwner = blob.owner;
      }
    }
  }

  /** Hashes every valid blob (one reused buffer); returns the owners whose data is corrupt. */
  async checkChecksums(source: RandomAccessSource): Promise<Set<string>> {
    const corrupt = new Set<string>();
    const ring = new BufferRing(1);
    for (const blob of this.valid) {
      if (blob.checksumAlgorithm === "none") continue;
      const sum = createChecksummer(blob.checksumAlgorithm);
      for await (const chunk of readRange(source, blob.byteOffset, blob.byteLength, 1, DEFAULT_CHUNK_BYTES, ring)) sum.update(chunk);
      const actual = sum.digest();
      if (!bytesEqual(actual, blob.checksum)) {
        corrupt.add(blob.owner);
        this.findings.add("CHECKSUM_MISMATCH", `${blob.checksumAlgorithm} checksum mismatch in blob "${blob.role}" (the data is corrupted)`, { file: this.file, tensor: blob.owner, byteOffset: blob.byteOffset, expected: toHex(blob.checksum), actual: toHex(actual) });
      }
    }
    return corrupt;
  }
}
