import type { DType } from "../../formats/dtype.js";
import { AtomicFile } from "../io/atomic.js";
import { createChecksummer, type ChecksumName } from "./checksum.js";
import { alignUp, encodePreamble, encodeTrailer, HEADER_SCHEMA_VERSION, PREAMBLE_BYTES } from "./layout.js";
import { checksumToProto, dtypeToProto, pb, type BlobMessage, type TensorMessage } from "./proto.js";

export interface BlobSpec {
  role: string;
  dtype: DType;
  shape: readonly number[];
}

export interface HeaderFields {
  producer: string;
  config?: ConstructorParameters<typeof pb.ModelConfig>[0];
  rawConfigJson?: string;
  metadata?: Record<string, string>;
}

/**
 * Writes a container in one streaming pass: blobs first (each 64-byte aligned, checksummed
 * as it streams), then the header, then the trailer. Nothing appears at `path` until
 * `finish()` has written the trailer.
 */
export class LmpackWriter {
  private position = PREAMBLE_BYTES;
  private readonly tensors: TensorMessage[] = [];
  private readonly sideFiles: { name: string; blob: BlobMessage }[] = [];

  private constructor(private readonly file: AtomicFile, private readonly checksum: ChecksumName) {}

  static async create(path: string, options: { checksum?: ChecksumName } = {}): Promise<LmpackWriter> {
    const file = await AtomicFile.create(path);
    try {
      await file.write(encodePreamble(), 0);
    } catch (error) {
      await file.abort();
      throw error;
    }
    return new LmpackWriter(file, options.checksum ?? "crc32");
  }

  get path(): string {
    return this.file.path;
  }

  /** Streams one blob from `chunks` and returns its header record. */
  async writeBlob(spec: BlobSpec, chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<BlobMessage> {
    const start = alignUp(this.position);
    if (start > this.position) await this.file.write(new Uint8Array(start - this.position), this.position);
    const sum = createChecksummer(this.checksum);
    let length = 0;
    for await (const chunk of chunks) {
      // Hash while the kernel copies the chunk into the page cache: on 2 cores this overlap
      // halves the cost of checksumming (bench/RESULTS.md). Neither step modifies the chunk.
      const written = this.file.write(chunk, start + length);
      try {
        sum.update(chunk);
      } finally {
        await written;
      }
      length += chunk.length;
    }
    this.position = start + length;
    return {
      role: spec.role,
      dtype: dtypeToProto(spec.dtype),
      shape: [...spec.shape],
      byteOffset: start,
      byteLength: length,
      checksumAlgorithm: checksumToProto(this.checksum),
      checksum: sum.digest(),
    };
  }

  addTensor(tensor: TensorMessage): void {
    this.tensors.push(tensor);
  }

  async addSideFile(name: string, bytes: Uint8Array): Promise<void> {
    const blob = await this.writeBlob({ role: "side-file", dtype: "U8", shape: [bytes.length] }, [bytes]);
    this.sideFiles.push({ name, blob });
  }

  async finish(fields: HeaderFields): Promise<void> {
    try {
      const header = pb.Header.encode({
        schemaVersion: HEADER_SCHEMA_VERSION,
        producer: fields.producer,
        config: fields.config ?? null,
        rawConfigJson: fields.rawConfigJson ?? "",
        sideFiles: this.sideFiles,
        tensors: this.tensors,
        metadata: fields.metadata ?? {},
      }).finish();
      const headerOffset = alignUp(this.position);
      if (headerOffset > this.position) await this.file.write(new Uint8Array(headerOffset - this.position), this.position);
      await this.file.write(header, headerOffset);
      await this.file.write(encodeTrailer(headerOffset, header), headerOffset + header.length);
    } catch (error) {
      await this.file.abort();
      throw error;
    }
    await this.file.commit();
  }

  async abort(): Promise<void> {
    await this.file.abort();
  }
}
