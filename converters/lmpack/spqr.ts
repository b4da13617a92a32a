import type { DType } from "../../formats/dtype.js";
import { FormatError, isLmpackError } from "../../formats/errors.js";
import { checkHfSpqrParams, hfSpqrShapes, packHfSpqr, unpackHfSpqr } from "../../formats/spqr/hf-layout.js";
import type { SpqrTensor } from "../../formats/spqr/types.js";
import type { PackedArray } from "../../formats/packed-array.js";
import type { BlobInfo } from "./reader.js";

/**
 * The spqr representation in the container (schemas/spqr.proto): the four HF-layout arrays as
 * blobs, unchanged: compact (4 bits per weight for the dense part) and what the kernels read.
 */
export interface SpqrHeader {
  outFeatures: number;
  inFeatures: number;
  outlierCount: number;
  sourceLayout: string;
}

interface SpqrMessage {
  bits?: number | null;
  beta1?: number | null;
  beta2?: number | null;
  outFeatures?: number | null;
  inFeatures?: number | null;
  outlierCount?: number | null;
  sourceLayout?: string | null;
}

const ROLES = ["dense_weights", "row_offsets", "col_vals", "in_perm"] as const;

export function validateSpqr(msg: SpqrMessage, shape: number[], blobs: BlobInfo[], file: string, tensor: string): { representation: "spqr"; dtype: DType; spqr: SpqrHeader } {
  const m = msg.outFeatures ?? 0;
  const n = msg.inFeatures ?? 0;
  const bad = (detail: string, expected?: unknown, actual?: unknown) => new FormatError("CONTAINER_HEADER_INVALID", detail, { file, tensor, expected, actual });
  if (shape.length !== 2 || shape[0] !== m || shape[1] !== n) throw bad("spqr out/in features must match the tensor shape", `[${m}, ${n}]`, `[${shape.join(", ")}]`);
  try {
    checkHfSpqrParams({ bits: msg.bits ?? 0, beta1: msg.beta1 ?? 0, beta2: msg.beta2 ?? 0 }, m, n, tensor);
  } catch (cause) {
    throw bad(`spqr parameters are not the 3-bit 16x16 layout${isLmpackError(cause) ? ` (${cause.detail})` : ""}`, "bits 3, beta1 16, beta2 16, sizes multiples of 16", `bits ${msg.bits}, beta1 ${msg.beta1}, beta2 ${msg.beta2}, ${m}x${n}`);
  }
  const byRole = new Map(blobs.map((b) => [b.role, b]));
  const extra = blobs.find((b) => !(ROLES as readonly string[]).includes(b.role));
  if (extra !== undefined) throw new FormatError("CONTAINER_BLOB_INVALID", `unexpected "${extra.role}" blob in a spqr tensor`, { file, tensor, byteOffset: extra.byteOffset });
  const sizes = hfSpqrShapes(m, n, 0, "csr");
  const expected: Record<(typeof ROLES)[number], { dtype: DType; length?: number }> = {
    dense_weights: { dtype: "U64", length: sizes.denseWeights },
    row_offsets: { dtype: "I32" },
    col_vals: { dtype: "I32" },
    in_perm: { dtype: "I32", length: sizes.inPerm },
  };
  for (const role of ROLES) {
    const blob = byRole.get(role);
    if (blob === undefined) throw new FormatError("CONTAINER_BLOB_INVALID", `spqr tensor lacks its "${role}" blob`, { file, tensor });
    const want = expected[role];
    if (blob.dtype !== want.dtype || blob.shape.length !== 1 || (want.length !== undefined && blob.shape[0] !== want.length)) {
      throw new FormatError("CONTAINER_BLOB_INVALID", `"${role}" blob has the wrong dtype or shape`, { file, tensor, byteOffset: blob.byteOffset, expected: `${want.dtype} [${want.length ?? "n"}]`, actual: `${blob.dtype} [${blob.shape.join(", ")}]` });
    }
  }
  return { representation: "spqr", dtype: "F16", spqr: { outFeatures: m, inFeatures: n, outlierCount: msg.outlierCount ?? 0, sourceLayout: msg.sourceLayout ?? "" } };
}

export interface EncodedSpqr {
  message: Required<SpqrMessage>;
  blobs: { role: string; dtype: DType; shape: number[]; bytes: Uint8Array }[];
}

export function encodeSpqr(t: SpqrTensor, sourceLayout: string, tensor: string): EncodedSpqr {
  const packed = packHfSpqr(t, tensor);
  const { bits, beta1, beta2 } = t.params;
  return {
    message: { bits, beta1, beta2, outFeatures: t.outFeatures, inFeatures: t.inFeatures, outlierCount: t.outliers.cols.length, sourceLayout },
    blobs: [
      { role: "dense_weights", dtype: "U64", shape: [packed.denseWeights.length / 8], bytes: packed.denseWeights },
      { role: "row_offsets", dtype: "I32", shape: [packed.rowOffsets.length / 4], bytes: packed.rowOffsets },
      { role: "col_vals", dtype: "I32", shape: [packed.colVals.length / 4], bytes: packed.colVals },
      { role: "in_perm", dtype: "I32", shape: [packed.inPerm.length / 4], bytes: packed.inPerm },
    ],
  };
}

/** Container blobs (checked by `validateSpqr`, bytes read) → the representation (validated again by the unpacker). */
export function decodeSpqr(h: SpqrHeader, blobs: Map<string, { info: BlobInfo; bytes: Uint8Array }>, file: string, tensor: string): SpqrTensor {
  const array = (role: string): PackedArray => {
    const b = blobs.get(role)!;
    return { name: `${tensor} (${role})`, dtype: b.info.dtype, shape: b.info.shape, bytes: b.bytes, file, byteOffset: b.info.byteOffset };
  };
  const t = unpackHfSpqr({ denseWeights: array("dense_weights"), rowOffsets: array("row_offsets"), colVals: array("col_vals"), inPerm: array("in_perm") }, h.outFeatures, h.inFeatures);
  if (t.outliers.cols.length !== h.outlierCount) throw new FormatError("CONTAINER_HEADER_INVALID", "spqr.outlier_count disagrees with the outliers stored", { file, tensor, expected: t.outliers.cols.length, actual: h.outlierCount });
  return t;
}

