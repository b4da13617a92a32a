/**
 * Typed access to the generated protobuf code for schemas/container.proto, and the mapping
 * between lmpack's dtype names and the schema's enum (which uses the same spelling).
 */
import { lmpack } from "../../schemas/gen/container.js";
import type { DType } from "../../formats/dtype.js";
import type { ChecksumName } from "./checksum.js";

export const pb = lmpack.container;
export type HeaderMessage = lmpack.container.Header;
export type TensorMessage = lmpack.container.ITensor;
export type BlobMessage = lmpack.container.IBlob;

export function dtypeToProto(dtype: DType): number {
  return pb.DType[dtype];
}

/** Proto enum value → dtype name, or undefined for values this version does not know. */
export function dtypeFromProto(value: number | null | undefined): DType | undefined {
  const name = (pb.DType as unknown as Record<number, string>)[value ?? 0];
  return name === undefined || name === "DTYPE_UNSPECIFIED" ? undefined : (name as DType);
}

export function checksumToProto(name: ChecksumName): number {
  return name === "sha256" ? pb.ChecksumAlgorithm.SHA256 : pb.ChecksumAlgorithm.CRC32;
}

export function checksumFromProto(value: number | null | undefined): ChecksumName | "none" | undefined {
  switch (value ?? 0) {
    case pb.ChecksumAlgorithm.CHECKSUM_NONE: return "none";
    case pb.ChecksumAlgorithm.CRC32: return "crc32";
    case pb.ChecksumAlgorithm.SHA256: return "sha256";
    default: return undefined;
  }
}
