import { crc32 } from "node:zlib";
import { FormatError } from "../../formats/errors.js";

/**
 * lmpack container byte layout (version 1), little-endian throughout. See schemas/README.md.
 *
 *   [0, 64)            preamble: MAGIC (8) | layout version u32 | flags u32 | 48 zero bytes
 *   [64, H)            blobs, each starting on a 64-byte boundary (zero padding between)
 *   [H, H+L)           header: protobuf `lmpack.container.Header` (schemas/container.proto)
 *   [EOF-32, EOF)      trailer: H u64 | L u64 | CRC-32 of header u32 | layout version u32 | END_MAGIC (8)
 *
 * The header comes last so the file is written in one streaming pass (blob offsets and
 * checksums are known only after the blobs are written); readers find it from the fixed-size
 * trailer. Both ends carry a magic, so a truncated file is caught before anything is parsed.
 */
export const MAGIC = new Uint8Array([0x89, 0x4c, 0x4d, 0x50, 0x41, 0x43, 0x4b, 0x0a]); // "\x89LMPACK\n"
export const END_MAGIC = new Uint8Array([0x4c, 0x4d, 0x50, 0x4b, 0x45, 0x4e, 0x44, 0x0a]); // "LMPKEND\n"
export const LAYOUT_VERSION = 1;
export const HEADER_SCHEMA_VERSION = 1;
/** Blob alignment: a cache line, and a multiple of every dtype and SIMD width, so blobs can be viewed in place. */
export const BLOB_ALIGNMENT = 64;
export const PREAMBLE_BYTES = 64;
export const TRAILER_BYTES = 8 + 8 + 4 + 4 + 8;
/** Header cap: side files are blobs, so the header holds only names and numbers (~100 bytes a tensor). */
export const MAX_HEADER_BYTES = 256 * 1024 * 1024;

export interface Trailer {
  headerOffset: number;
  headerLength: number;
  headerCrc32: number;
  version: number;
}

export function encodePreamble(): Uint8Array {
  const out = new Uint8Array(PREAMBLE_BYTES);
  out.set(MAGIC, 0);
  new DataView(out.buffer).setUint32(8, LAYOUT_VERSION, true);
  return out;
}

export function encodeTrailer(headerOffset: number, header: Uint8Array): Uint8Array {
  const out = new Uint8Array(TRAILER_BYTES);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(headerOffset), true);
  view.setBigUint64(8, BigInt(header.length), true);
  view.setUint32(16, crc32(header), true);
  view.setUint32(20, LAYOUT_VERSION, true);
  out.set(END_MAGIC, 24);
  return out;
}

export function checkPreamble(preamble: Uint8Array, file: string): void {
  if (!startsWith(preamble, MAGIC, 0)) {
    throw new FormatError("CONTAINER_BAD_MAGIC", "not an lmpack container (bad magic)", { file, byteOffset: 0, expected: hex(MAGIC), actual: hex(preamble.subarray(0, 8)) });
  }
  const version = new DataView(preamble.buffer, preamble.byteOffset, preamble.length).getUint32(8, true);
  if (version !== LAYOUT_VERSION) {
    throw new FormatError("CONTAINER_BAD_VERSION", "unsupported container layout version", { file, byteOffset: 8, expected: LAYOUT_VERSION, actual: version });
  }
}

export function decodeTrailer(bytes: Uint8Array, fileByteLength: number, file: string): Trailer {
  const trailerOffset = fileByteLength - TRAILER_BYTES;
  if (!startsWith(bytes, END_MAGIC, 24)) {
    throw new FormatError("CONTAINER_TRUNCATED", "trailer magic missing: the file was cut short or is not a finished container", { file, byteOffset: trailerOffset + 24, expected: hex(END_MAGIC), actual: hex(bytes.subarray(24, 32)) });
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const headerOffset = view.getBigUint64(0, true);
  const headerLength = view.getBigUint64(8, true);
  const version = view.getUint32(20, true);
  if (version !== LAYOUT_VERSION) {
    throw new FormatError("CONTAINER_BAD_VERSION", "unsupported container layout version in trailer", { file, byteOffset: trailerOffset + 20, expected: LAYOUT_VERSION, actual: version });
  }
  if (headerLength > BigInt(MAX_HEADER_BYTES)) {
    throw new FormatError("CONTAINER_HEADER_INVALID", "header length over the cap", { file, byteOffset: trailerOffset + 8, expected: `<= ${MAX_HEADER_BYTES}`, actual: headerLength });
  }
  if (headerOffset < BigInt(PREAMBLE_BYTES) || headerOffset + headerLength !== BigInt(trailerOffset)) {
    throw new FormatError("CONTAINER_HEADER_INVALID", "header must end where the trailer begins", { file, byteOffset: trailerOffset, expected: `offset + length = ${trailerOffset}`, actual: `${headerOffset} + ${headerLength}` });
  }
  return { headerOffset: Number(headerOffset), headerLength: Number(headerLength), headerCrc32: view.getUint32(16, true), version };
}

export function alignUp(value: number, alignment = BLOB_ALIGNMENT): number {
  return Math.ceil(value / alignment) * alignment;
}

function startsWith(bytes: Uint8Array, magic: Uint8Array, at: number): boolean {
  return magic.every((b, i) => bytes[at + i] === b);
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
