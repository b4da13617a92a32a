import { crc32 } from "node:zlib";
import { BufferSource } from "../../../converters/io/random-access.js";
import { lmpackCheckpoint } from "../../../converters/lmpack/import.js";
import { TRAILER_BYTES } from "../../../converters/lmpack/layout.js";
import { LmpackFile } from "../../../converters/lmpack/reader.js";
import { consumeCheckpoint, typedErrorsOnly } from "../harness.js";

/**
 * The .lmpack container: preamble, trailer, the protobuf header, every blob's bounds and checksum
 * (verifyAll), then the container as a checkpoint (config JSON, msgpack notes, the int-group /
 * fpx / spqr / vptq representations loaded and every tensor streamed).
 *
 * The trailer's header CRC-32 is recomputed before opening whenever the trailer points at a header:
 * otherwise nearly every mutation of the header would stop at the checksum and the protobuf decoder
 * and validators behind it would never be reached. The checksum comparison itself is covered by
 * test/converters/container.test.ts; blob checksums are left as the input has them.
 */
export async function fuzz(data: Buffer): Promise<void> {
  await typedErrorsOnly(data, async () => {
    const file = await LmpackFile.fromSource(new BufferSource(withHeaderChecksum(data), "fuzz.lmpack"));
    await file.verifyAll();
    await consumeCheckpoint(await lmpackCheckpoint(file));
  });
}

function withHeaderChecksum(data: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(data);
  if (bytes.length < TRAILER_BYTES) return bytes;
  const trailerOffset = bytes.length - TRAILER_BYTES;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerOffset = view.getBigUint64(trailerOffset, true);
  const headerLength = view.getBigUint64(trailerOffset + 8, true);
  if (headerOffset + headerLength === BigInt(trailerOffset)) {
    view.setUint32(trailerOffset + 16, crc32(bytes.subarray(Number(headerOffset), trailerOffset)), true);
  }
  return bytes;
}
