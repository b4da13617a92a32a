import type { DType } from "../../formats/dtype.js";
import { FormatError, isLmpackError } from "../../formats/errors.js";
import { fpxFormat, type FpxFormat } from "../../formats/fpx/format.js";
import { fitsTcLayout, tcPackedBytes } from "../../formats/fpx/tc-layout.js";
import { bytesOf, viewAs } from "../../formats/packed-array.js";
import type { CodesFrom, FpxTensor } from "../../formats/fpx/types.js";
import { lmpack } from "../../schemas/gen/container.js";
import type { BlobInfo } from "./reader.js";

/**
 * The fpx representation in the container (schemas/fpx.proto): blob "packed" (the tensor-core
 * layout bytes, kept as is: it is the form FP6-LLM kernels read) and blob "scales" (F16 [out]).
 */
export interface FpxHeader {
  format: FpxFormat;
  outFeatures: number;
  inFeatures: number;
  sourceLayout: string;
  codesFrom: CodesFrom | undefined;
}

const CodesFromProto = lmpack.fpx.CodesFrom;

interface FpxMessage {
  ebits?: number | null;
  mbits?: number | null;
  outFeatures?: number | null;
  inFeatures?: number | null;
  sourceLayout?: string | null;
  codesFrom?: number | null;
}

/** Checks the message against the tensor shape and its blobs (roles, dtypes, sizes). */
export function validateFpx(m: FpxMessage, shape: number[], blobs: BlobInfo[], file: string, tensor: string): { representation: "fpx"; dtype: DType; fpx: FpxHeader } {
  const bad = (detail: string, expected?: unknown, actual?: unknown) => new FormatError("CONTAINER_HEADER_INVALID", detail, { file, tensor, expected, actual });
  let format: FpxFormat;
  try {
    format = fpxFormat(m.ebits ?? 0, m.mbits ?? 0);
  } catch (cause) {
    throw bad(`fpx ebits/mbits are not a supported format${isLmpackError(cause) ? ` (${cause.detail})` : ""}`, "3 ≤ 1 + ebits + mbits ≤ 7", `e${m.ebits ?? 0}m${m.mbits ?? 0}`);
  }
  const M = m.outFeatures ?? 0;
  const N = m.inFeatures ?? 0;
  if (shape.length !== 2 || shape[0] !== M || shape[1] !== N) throw bad("fpx out/in features must match the tensor shape", `[${M}, ${N}]`, `[${shape.join(", ")}]`);
  if (!fitsTcLayout(M, N)) throw bad("fpx tensors must be multiples of 64x64 (the tensor-core layout)", "multiples of 64", `${M}x${N}`);
  const byRole = new Map(blobs.map((b) => [b.role, b]));
  const need = (role: string, dtype: DType, blobShape: number[]) => {
    const blob = byRole.get(role);
    if (blob === undefined) throw new FormatError("CONTAINER_BLOB_INVALID", `fpx tensor lacks its "${role}" blob`, { file, tensor });
    if (blob.dtype !== dtype || blob.shape.join() !== blobShape.join()) {
      throw new FormatError("CONTAINER_BLOB_INVALID", `"${role}" blob has the wrong dtype or shape`, { file, tensor, byteOffset: blob.byteOffset, expected: `${dtype} [${blobShape.join(", ")}]`, actual: `${blob.dtype} [${blob.shape.join(", ")}]` });
    }
  };
  need("packed", "U8", [tcPackedBytes(M, N, format.nbits)]);
  need("scales", "F16", [M]);
  const extra = blobs.find((b) => b.role !== "packed" && b.role !== "scales");
  if (extra !== undefined) throw new FormatError("CONTAINER_BLOB_INVALID", `unexpected "${extra.role}" blob in an fpx tensor`, { file, tensor, byteOffset: extra.byteOffset });
  const codesFrom = m.codesFrom === CodesFromProto.STORED_SCALE ? "stored-scale" : m.codesFrom === CodesFromProto.F32_SCALE ? "f32-scale" : undefined;
  return { representation: "fpx", dtype: "F32", fpx: { format, outFeatures: M, inFeatures: N, sourceLayout: m.sourceLayout ?? "", codesFrom } };
}

export interface EncodedFpx {
  message: Required<FpxMessage>;
  blobs: { role: string; dtype: DType; shape: number[]; bytes: Uint8Array }[];
}

export function encodeFpx(t: FpxTensor, sourceLayout: string, codesFrom: CodesFrom | undefined): EncodedFpx {
  const codesFromProto = codesFrom === "stored-scale" ? CodesFromProto.STORED_SCALE : codesFrom === "f32-scale" ? CodesFromProto.F32_SCALE : CodesFromProto.CODES_FROM_UNKNOWN;
  return {
    message: { ebits: t.format.ebits, mbits: t.format.mbits, outFeatures: t.outFeatures, inFeatures: t.inFeatures, sourceLayout, codesFrom: codesFromProto },
    blobs: [
      { role: "packed", dtype: "U8", shape: [t.packed.length], bytes: t.packed },
      { role: "scales", dtype: "F16", shape: [t.outFeatures], bytes: bytesOf(t.scales) },
    ],
  };
}

/** Container blobs (already checked by `validateFpx`, bytes read) → the representation. */
export function decodeFpx(h: FpxHeader, blobs: Map<string, { info: BlobInfo; bytes: Uint8Array }>): FpxTensor {
  return { format: h.format, outFeatures: h.outFeatures, inFeatures: h.inFeatures, packed: blobs.get("packed")!.bytes, scales: viewAs(blobs.get("scales")!.bytes, Uint16Array) };
}
