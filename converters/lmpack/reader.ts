import { crc32 } from "node:zlib";
import { DTYPES, elementCount, type DType } from "../../formats/dtype.js";
import { FormatError, VerificationError } from "../../formats/errors.js";
import { BufferRing } from "../io/buffer-ring.js";
import { FileSource, type RandomAccessSource } from "../io/random-access.js";
import { DEFAULT_CHUNK_BYTES, readRange } from "../io/read-range.js";
import { bytesEqual, CHECKSUM_BYTES, createChecksummer, toHex, type ChecksumName } from "./checksum.js";
import { BLOB_ALIGNMENT, checkPreamble, decodeTrailer, HEADER_SCHEMA_VERSION, PREAMBLE_BYTES, TRAILER_BYTES } from "./layout.js";
import { validateIntGroup, type IntGroupHeader } from "./int-group.js";
import { validateFpx, type FpxHeader } from "./fpx.js";
import { validateSpqr, type SpqrHeader } from "./spqr.js";
import { validateVptq, type VptqHeader } from "./vptq.js";
import { checksumFromProto, dtypeFromProto, pb, type BlobMessage, type HeaderMessage, type TensorMessage } from "./proto.js";

/** A blob after validation: plain numbers, known dtype and checksum algorithm. */
export interface BlobInfo {
  role: string;
  dtype: DType;
  shape: number[];
  byteOffset: number;
  byteLength: number;
  checksumAlgorithm: ChecksumName | "none";
  checksum: Uint8Array;
  /** Tensor (or side file) the blob belongs to, for messages. */
  owner: string;
}

export interface ContainerTensor {
  name: string;
  shape: number[];
  representation: "dense" | "int-group" | "fpx" | "spqr" | "vptq";
  /** Dense: the data's dtype. Packed: the dtype the weight dequantizes to (the scales'). */
  dtype: DType;
  /** int-group tensors: the representation's parameters (blobs checked against them). */
  intGroup?: IntGroupHeader;
  /** fpx tensors: format and shape (blobs checked against them). */
  fpx?: FpxHeader;
  /** spqr tensors: shape and outlier count (blobs checked against them). */
  spqr?: SpqrHeader;
  /** vptq tensors: parameters and shape (blobs checked against them). */
  vptq?: VptqHeader;
  blobs: BlobInfo[];
  notesMsgpack: Uint8Array | undefined;
}

/**
 * An open .lmpack container. Opening validates preamble, trailer, header checksum, the
 * protobuf header and every blob's bounds, alignment and size; blob checksums are verified
 * as blobs are read (or all at once by `verifyAll`).
 */
export class LmpackFile {
  private constructor(
    readonly source: RandomAccessSource,
    readonly header: HeaderMessage,
    readonly tensors: ContainerTensor[],
    readonly sideFiles: Map<string, BlobInfo>,
  ) {}

  static async open(path: string): Promise<LmpackFile> {
    const source = await FileSource.open(path);
    try {
      return await LmpackFile.fromSource(source);
    } catch (error) {
      await source.close();
      throw error;
    }
  }

  static async fromSource(source: RandomAccessSource): Promise<LmpackFile> {
    const file = source.name;
    if (source.byteLength < PREAMBLE_BYTES + TRAILER_BYTES) {
      const preamble = await source.read(0, Math.min(source.byteLength, 8));
      if (preamble.length === 8) checkPreamble(new Uint8Array([...preamble, 1, 0, 0, 0]), file);
      throw new FormatError("CONTAINER_TRUNCATED", "file too small for an lmpack container", { file, byteOffset: 0, expected: `>= ${PREAMBLE_BYTES + TRAILER_BYTES} bytes`, actual: source.byteLength });
    }
    checkPreamble(await source.read(0, PREAMBLE_BYTES), file);
    const trailer = decodeTrailer(await source.read(source.byteLength - TRAILER_BYTES, TRAILER_BYTES), source.byteLength, file);
    const headerBytes = await source.read(trailer.headerOffset, trailer.headerLength);
    const actualCrc = crc32(headerBytes);
    if (actualCrc !== trailer.headerCrc32) {
      throw new FormatError("CONTAINER_HEADER_INVALID", "header checksum mismatch (corrupted header)", { file, byteOffset: trailer.headerOffset, expected: trailer.headerCrc32, actual: actualCrc });
    }
    let header: HeaderMessage;
    try {
      header = pb.Header.decode(headerBytes);
    } catch (cause) {
      throw new FormatError("CONTAINER_HEADER_INVALID", `header does not decode: ${(cause as Error).message}`, { file, byteOffset: trailer.headerOffset, cause });
    }
    if (header.schemaVersion !== HEADER_SCHEMA_VERSION) {
      throw new FormatError("CONTAINER_BAD_VERSION", "unsupported header schema version", { file, byteOffset: trailer.headerOffset, expected: HEADER_SCHEMA_VERSION, actual: header.schemaVersion });
    }
    const validator = new BlobValidator(file, trailer.headerOffset);
    const tensors = header.tensors.map((t) => validateTensor(t, validator, file));
    const sideFiles = new Map<string, BlobInfo>();
    for (const side of header.sideFiles) {
      const name = side.name ?? "";
      if (side.blob == null || name === "" || sideFiles.has(name)) {
        throw new FormatError("CONTAINER_HEADER_INVALID", "side file without a blob, a name, or with a duplicate name", { file, tensor: name });
      }
      sideFiles.set(name, validator.check(side.blob, `side file ${name}`));
    }
    validator.checkNoOverlap();
    return new LmpackFile(source, header, tensors, sideFiles);
  }

  get path(): string {
    return this.source.name;
  }

  /** Streams a blob in chunks; with `verify`, throws CHECKSUM_MISMATCH after the last chunk if the bytes are corrupt. */
  async *readBlobChunks(blob: BlobInfo, options: { verify?: boolean; maxChunkBytes?: number; ring?: BufferRing } = {}): AsyncGenerator<Uint8Array> {
    const verify = (options.verify ?? true) && blob.checksumAlgorithm !== "none";
    const sum = verify ? createChecksummer(blob.checksumAlgorithm as ChecksumName) : undefined;
    let done = 0;
    for await (const chunk of readRange(this.source, blob.byteOffset, blob.byteLength, DTYPES[blob.dtype].bits / 8, options.maxChunkBytes ?? DEFAULT_CHUNK_BYTES, options.ring)) {
      sum?.update(chunk);
      done += chunk.length;
      // Checked before the last chunk is handed out, so corrupt data never completes a read.
      if (sum !== undefined && done === blob.byteLength) this.checkDigest(blob, sum.digest());
      yield chunk;
    }
    if (sum !== undefined && blob.byteLength === 0) this.checkDigest(blob, sum.digest());
  }

  /** The whole blob, read in one positional read and verified (memory: the blob). */
  async readBlob(blob: BlobInfo, options: { verify?: boolean } = {}): Promise<Uint8Array> {
    const out = await this.source.read(blob.byteOffset, blob.byteLength);
    if ((options.verify ?? true) && blob.checksumAlgorithm !== "none") {
      const sum = createChecksummer(blob.checksumAlgorithm);
      sum.update(out);
      this.checkDigest(blob, sum.digest());
    }
    return out;
  }

  /** Verifies every blob's checksum; returns the failures (empty when the file is intact). */
  async verifyAll(): Promise<VerificationError[]> {
    const failures: VerificationError[] = [];
    const blobs = [...this.tensors.flatMap((t) => t.blobs), ...this.sideFiles.values()];
    // Each chunk is only hashed, so one reused buffer serves every read (see io/buffer-ring.ts).
    const ring = new BufferRing(1);
    for (const blob of blobs) {
      try {
        for await (const _ of this.readBlobChunks(blob, { verify: true, ring }));
      } catch (error) {
        if (error instanceof VerificationError) failures.push(error);
        else throw error;
      }
    }
    return failures;
  }

  private checkDigest(blob: BlobInfo, actual: Uint8Array): void {
    if (!bytesEqual(actual, blob.checksum)) {
      throw new VerificationError("CHECKSUM_MISMATCH", `${blob.checksumAlgorithm} checksum mismatch in blob "${blob.role}" (the data is corrupted)`, {
        file: this.path,
        tensor: blob.owner,
        byteOffset: blob.byteOffset,
        expected: toHex(blob.checksum),
        actual: toHex(actual),
      });
    }
  }

  async close(): Promise<void> {
    await this.source.close();
  }
}

function validateTensor(t: TensorMessage, validator: BlobValidator, file: string): ContainerTensor {
  const name = t.name ?? "";
  if (name === "") throw new FormatError("CONTAINER_HEADER_INVALID", "tensor without a name", { file });
  if (!validator.claimName(name)) throw new FormatError("TENSOR_DUPLICATE", "tensor name appears twice", { file, tensor: name });
  if (t.intGroup != null || t.fpx != null || t.spqr != null || t.vptq != null) {
    const blobs = (t.blobs ?? []).map((b) => validator.check(b, name));
    const notesMsgpack = t.notesMsgpack != null && t.notesMsgpack.length > 0 ? t.notesMsgpack : undefined;
    const shape = (t.shape ?? []).map(Number);
    // The expansion cap first: it is the cheapest check, and it names the container's own limit.
    checkExpansion(shape, blobs, file, name);
    const representation = t.intGroup != null ? validateIntGroup(t.intGroup, shape, blobs, file, name) : t.fpx != null ? validateFpx(t.fpx, shape, blobs, file, name) : t.spqr != null ? validateSpqr(t.spqr, shape, blobs, file, name) : validateVptq(t.vptq!, shape, blobs, file, name);
    return { name, shape, ...representation, blobs, notesMsgpack };
  }
  if (t.dense == null) throw new FormatError("CONTAINER_HEADER_INVALID", "tensor has no representation this version of lmpack reads", { file, tensor: name, expected: "dense, int_group, fpx, spqr or vptq" });
  const dtype = dtypeFromProto(t.dense.dtype);
  if (dtype === undefined) throw new FormatError("UNKNOWN_DTYPE", "unknown dtype in dense tensor", { file, tensor: name, actual: t.dense.dtype });
  const shape = (t.shape ?? []).map(Number);
  const blobs = (t.blobs ?? []).map((b) => validator.check(b, name));
  const data = blobs[0];
  if (blobs.length !== 1 || data === undefined || data.role !== "data") {
    throw new FormatError("CONTAINER_BLOB_INVALID", "a dense tensor has exactly one blob, with role \"data\"", { file, tensor: name, expected: 1, actual: blobs.length });
  }
  if (data.dtype !== dtype || data.shape.join() !== shape.join()) {
    throw new FormatError("CONTAINER_BLOB_INVALID", "data blob dtype/shape differ from the tensor's", { file, tensor: name, expected: `${dtype} ${JSON.stringify(shape)}`, actual: `${data.dtype} ${JSON.stringify(data.shape)}` });
  }
  return { name, shape, representation: "dense", dtype, blobs, notesMsgpack: t.notesMsgpack != null && t.notesMsgpack.length > 0 ? t.notesMsgpack : undefined };
}

/**
 * Weights a packed tensor may declare per byte of its blobs: 0.125 bits per weight, 8× below the
 * leanest released layouts (VPTQ v16-k65536, 1 bit per weight). Reading a packed tensor as dense
 * data materialises every weight, so without this a 17 KB VPTQ tensor with one 1-bit index per
 * 4096-row vector makes a 32 MB weight (and 74 KB, 2 GB): the file must hold what it unpacks to.
 */
export const MAX_WEIGHTS_PER_BLOB_BYTE = 64;

function checkExpansion(shape: number[], blobs: BlobInfo[], file: string, tensor: string): void {
  const weights = elementCount(shape);
  const storedBytes = blobs.reduce((sum, b) => sum + b.byteLength, 0);
  if (weights > BigInt(storedBytes) * BigInt(MAX_WEIGHTS_PER_BLOB_BYTE)) {
    throw new FormatError("CONTAINER_BLOB_INVALID", `packed tensor declares more weights than its blobs can hold (over ${MAX_WEIGHTS_PER_BLOB_BYTE} per stored byte)`, { file, tensor, byteOffset: blobs[0]?.byteOffset, expected: `<= ${BigInt(storedBytes) * BigInt(MAX_WEIGHTS_PER_BLOB_BYTE)} weights`, actual: `${weights} weights in ${storedBytes} bytes` });
  }
}

/** Checks blobs one by one, then all together (no two blobs may share bytes). */
class BlobValidator {
  private readonly blobs: BlobInfo[] = [];
  private readonly names = new Set<string>();

  constructor(private readonly file: string, private readonly headerOffset: number) {}

  claimName(name: string): boolean {
    if (this.names.has(name)) return false;
    this.names.add(name);
    return true;
  }

  check(b: BlobMessage, owner: string): BlobInfo {
    const where = { file: this.file, tensor: owner };
    const dtype = dtypeFromProto(b.dtype);
    if (dtype === undefined) throw new FormatError("UNKNOWN_DTYPE", "unknown blob dtype", { ...where, actual: b.dtype });
    const byteOffset = Number(b.byteOffset ?? 0);
    const byteLength = Number(b.byteLength ?? 0);
    const shape = (b.shape ?? []).map(Number);
    if (!Number.isSafeInteger(byteOffset) || !Number.isSafeInteger(byteLength) || byteOffset < PREAMBLE_BYTES || byteOffset % BLOB_ALIGNMENT !== 0) {
      throw new FormatError("CONTAINER_BLOB_INVALID", `blob offset must be a multiple of ${BLOB_ALIGNMENT} after the preamble`, { ...where, byteOffset, actual: byteOffset });
    }
    if (byteOffset + byteLength > this.headerOffset) {
      throw new FormatError("CONTAINER_BLOB_INVALID", "blob extends past the blob area", { ...where, byteOffset, expected: `end <= ${this.headerOffset}`, actual: byteOffset + byteLength });
    }
    const expectedBytes = elementCount(shape) * BigInt(DTYPES[dtype].bits / 8);
    if (expectedBytes !== BigInt(byteLength)) {
      throw new FormatError("SHAPE_SIZE_MISMATCH", `blob shape ${JSON.stringify(shape)} × ${dtype} does not match its length`, { ...where, byteOffset, expected: `${expectedBytes} bytes`, actual: `${byteLength} bytes` });
    }
    const checksumAlgorithm = checksumFromProto(b.checksumAlgorithm);
    const checksum = b.checksum ?? new Uint8Array(0);
    if (checksumAlgorithm === undefined || (checksumAlgorithm !== "none" && checksum.length !== CHECKSUM_BYTES[checksumAlgorithm])) {
      throw new FormatError("CONTAINER_BLOB_INVALID", "unknown checksum algorithm or wrong checksum length", { ...where, byteOffset, actual: `${b.checksumAlgorithm}/${checksum.length} bytes` });
    }
    const info: BlobInfo = { role: b.role ?? "", dtype, shape, byteOffset, byteLength, checksumAlgorithm, checksum, owner };
    this.blobs.push(info);
    return info;
  }

  checkNoOverlap(): void {
    const sorted = [...this.blobs].sort((a, b) => a.byteOffset - b.byteOffset);
    for (let i = 1; i < sorted.length; i++) {
      const prev = sorted[i - 1]!;
      const cur = sorted[i]!;
      if (cur.byteOffset < prev.byteOffset + prev.byteLength) {
        throw new FormatError("OFFSETS_OVERLAP", `blob overlaps a blob of "${prev.owner}"`, { file: this.file, tensor: cur.owner, byteOffset: cur.byteOffset, expected: `start >= ${prev.byteOffset + prev.byteLength}`, actual: cur.byteOffset });
      }
    }
  }
}
