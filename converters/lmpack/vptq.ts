import type { DType } from "../../formats/dtype.js";
import { FormatError, isLmpackError } from "../../formats/errors.js";
import { checkVptqParams, packVptq, unpackVptq, VPTQ_SUFFIXES, vptqArraySpecs, type VptqSuffix } from "../../formats/vptq/hf-layout.js";
import type { VptqFloat, VptqParams, VptqTensor } from "../../formats/vptq/types.js";
import type { PackedArray } from "../../formats/packed-array.js";
import type { BlobInfo } from "./reader.js";

/** The vptq representation in the container (schemas/vptq.proto): the layout's arrays as blobs. */
export interface VptqHeader {
  params: VptqParams;
  outFeatures: number;
  inFeatures: number;
  dtype: VptqFloat;
  sourceLayout: string;
}

interface VptqMessage {
  outFeatures?: number | null;
  inFeatures?: number | null;
  vectorLen?: number | null;
  numCentroids?: number | null;
  numResCentroids?: number | null;
  groupNum?: number | null;
  groupSize?: number | null;
  outlierSize?: number | null;
  outlierVectorLen?: number | null;
  outlierNumCentroids?: number | null;
  enableNorm?: boolean | null;
  enablePerm?: boolean | null;
  sourceLayout?: string | null;
}

export function validateVptq(m: VptqMessage, shape: number[], blobs: BlobInfo[], file: string, tensor: string): { representation: "vptq"; dtype: DType; vptq: VptqHeader } {
  const out = m.outFeatures ?? 0;
  const inFeatures = m.inFeatures ?? 0;
  const params: VptqParams = {
    vectorLen: m.vectorLen ?? 0,
    numCentroids: m.numCentroids ?? 0,
    numResCentroids: m.numResCentroids ?? 0,
    groupNum: m.groupNum ?? 0,
    groupSize: m.groupSize ?? 0,
    outlierSize: m.outlierSize ?? 0,
    outlierVectorLen: m.outlierVectorLen ?? 0,
    outlierNumCentroids: m.outlierNumCentroids ?? 0,
    enableNorm: m.enableNorm ?? false,
    enablePerm: m.enablePerm ?? false,
  };
  const bad = (detail: string, expected?: unknown, actual?: unknown) => new FormatError("CONTAINER_HEADER_INVALID", detail, { file, tensor, expected, actual });
  if (shape.length !== 2 || shape[0] !== out || shape[1] !== inFeatures) throw bad("vptq out/in features must match the tensor shape", `[${out}, ${inFeatures}]`, `[${shape.join(", ")}]`);
  try {
    checkVptqParams(params, out, inFeatures, tensor);
  } catch (cause) {
    throw bad(`vptq parameters are inconsistent${isLmpackError(cause) ? ` (${cause.detail})` : ""}`);
  }
  const centroids = blobs.find((b) => b.role === "centroids.weight");
  const dtype: VptqFloat = centroids?.dtype === "BF16" ? "BF16" : "F16";
  const specs = vptqArraySpecs(params, out, inFeatures, dtype);
  for (const blob of blobs) {
    const spec = specs.get(blob.role as VptqSuffix);
    if (spec === undefined) throw new FormatError("CONTAINER_BLOB_INVALID", `unexpected "${blob.role}" blob in a vptq tensor`, { file, tensor, byteOffset: blob.byteOffset });
    if (blob.dtype !== spec.dtype || blob.shape.join() !== spec.shape.join()) {
      throw new FormatError("CONTAINER_BLOB_INVALID", `"${blob.role}" blob has the wrong dtype or shape`, { file, tensor, byteOffset: blob.byteOffset, expected: `${spec.dtype} [${spec.shape.join(", ")}]`, actual: `${blob.dtype} [${blob.shape.join(", ")}]` });
    }
  }
  const missing = [...specs.keys()].find((role) => !blobs.some((b) => b.role === role));
  if (missing !== undefined) throw new FormatError("CONTAINER_BLOB_INVALID", `vptq tensor lacks its "${missing}" blob`, { file, tensor });
  return { representation: "vptq", dtype, vptq: { params, outFeatures: out, inFeatures, dtype, sourceLayout: m.sourceLayout ?? "" } };
}

export interface EncodedVptq {
  message: Required<VptqMessage>;
  blobs: { role: string; dtype: DType; shape: number[]; bytes: Uint8Array }[];
}

export function encodeVptq(t: VptqTensor, sourceLayout: string): EncodedVptq {
  const p = t.params;
  const specs = vptqArraySpecs(p, t.outFeatures, t.inFeatures, t.dtype);
  const packed = packVptq(t);
  return {
    message: { outFeatures: t.outFeatures, inFeatures: t.inFeatures, vectorLen: p.vectorLen, numCentroids: p.numCentroids, numResCentroids: p.numResCentroids, groupNum: p.groupNum, groupSize: p.groupSize, outlierSize: p.outlierSize, outlierVectorLen: p.outlierVectorLen, outlierNumCentroids: p.outlierNumCentroids, enableNorm: p.enableNorm, enablePerm: p.enablePerm, sourceLayout },
    blobs: VPTQ_SUFFIXES.filter((s) => packed.has(s)).map((s) => ({ role: s, dtype: specs.get(s)!.dtype, shape: specs.get(s)!.shape, bytes: packed.get(s)! })),
  };
}

export function decodeVptq(h: VptqHeader, blobs: Map<string, { info: BlobInfo; bytes: Uint8Array }>, file: string, tensor: string): VptqTensor {
  const arrays = new Map<VptqSuffix, PackedArray>();
  for (const [role, b] of blobs) arrays.set(role as VptqSuffix, { name: `${tensor} (${role})`, dtype: b.info.dtype, shape: b.info.shape, bytes: b.bytes, file, byteOffset: b.info.byteOffset });
  return unpackVptq(arrays, h.params, h.outFeatures, h.inFeatures, tensor);
}
