import { Packr } from "msgpackr";
import { FormatError } from "../../formats/errors.js";

/**
 * Per-tensor notes: free-form structured values (provenance now; quantizer statistics as
 * packed formats land), stored msgpack-encoded in `Tensor.notes_msgpack`. msgpack rather than
 * protobuf because the keys vary by producer and are not worth freezing in a schema; rather
 * than JSON because it keeps typed arrays and numbers compact and exact.
 */
export type TensorNotes = Record<string, unknown>;

/** Notes are small by nature; a bigger blob is a hostile or broken file. */
export const MAX_NOTES_BYTES = 1024 * 1024;

// Plain maps in, plain objects out; no record extension (its shared structures would make
// each tensor's bytes depend on the tensors written before it).
const packr = new Packr({ useRecords: false, mapsAsObjects: true });

export function encodeNotes(notes: TensorNotes | undefined): Uint8Array {
  if (notes === undefined || Object.keys(notes).length === 0) return new Uint8Array(0);
  return packr.pack(notes);
}

export function decodeNotes(bytes: Uint8Array | undefined, file: string, tensor: string): TensorNotes | undefined {
  if (bytes === undefined || bytes.length === 0) return undefined;
  if (bytes.length > MAX_NOTES_BYTES) {
    throw new FormatError("CONTAINER_HEADER_INVALID", "tensor notes larger than the cap", { file, tensor, expected: `<= ${MAX_NOTES_BYTES} bytes`, actual: bytes.length });
  }
  let value: unknown;
  try {
    value = packr.unpack(bytes);
  } catch (cause) {
    throw new FormatError("CONTAINER_HEADER_INVALID", `tensor notes are not valid msgpack: ${(cause as Error).message}`, { file, tensor, cause });
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new FormatError("CONTAINER_HEADER_INVALID", "tensor notes must be a msgpack map", { file, tensor });
  }
  return value as TensorNotes;
}
