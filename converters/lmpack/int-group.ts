import type { DType } from "../../formats/dtype.js";
import { FormatError } from "../../formats/errors.js";
import { readField, streamWords, writeField } from "../../formats/int-group/bitstream.js";
import { bytesOf, viewAs } from "../../formats/packed-array.js";
import { decodeScales, encodeScales } from "../../formats/int-group/scales.js";
import { groupCount, INT_BITS, isTrivialGIdx, symmetricZero, type IntBits, type IntGroupTensor, type ScaleDType } from "../../formats/int-group/types.js";
import { decodeGIdx } from "../../formats/int-group/gptq-layout.js";
import type { BlobInfo } from "./reader.js";

/**
 * The int-group representation in the container (schemas/int-group.proto): blobs "codes"
 * (one LE bit stream over the row-major codes), "scales", "zeros" (absent when sym), "g_idx"
 * (absent when trivial). The container stores what the representation is, not a runtime's
 * layout, so any layout can be written from it exactly.
 */
export interface IntGroupHeader {
  bits: IntBits;
  groupSize: number;
  sym: boolean;
  outFeatures: number;
  inFeatures: number;
  sourceLayout: string;
  scaleDtype: ScaleDType;
}

interface IntGroupMessage {
  bits?: number | null;
  groupSize?: number | null;
  sym?: boolean | null;
  outFeatures?: number | null;
  inFeatures?: number | null;
  sourceLayout?: string | null;
}

/** Checks the message against the tensor shape and its blobs (roles, dtypes, shapes). */
export function validateIntGroup(m: IntGroupMessage, shape: number[], blobs: BlobInfo[], file: string, tensor: string): { representation: "int-group"; dtype: DType; intGroup: IntGroupHeader } {
  const bad = (detail: string, expected?: unknown, actual?: unknown) => new FormatError("CONTAINER_HEADER_INVALID", detail, { file, tensor, expected, actual });
  const bits = m.bits ?? 0;
  if (!INT_BITS.includes(bits as IntBits)) throw bad("int_group.bits must be 2, 3, 4 or 8", INT_BITS.join(" | "), bits);
  const N = m.outFeatures ?? 0;
  const K = m.inFeatures ?? 0;
  const groupSize = m.groupSize ?? 0;
  if (shape.length !== 2 || shape[0] !== N || shape[1] !== K || N === 0 || K === 0) throw bad("int_group out/in features must match the tensor shape", `[${N}, ${K}]`, `[${shape.join(", ")}]`);
  if (groupSize < 1 || groupSize > K) throw bad("int_group.group_size must be in 1 … in_features", `1 … ${K}`, groupSize);
  const byRole = new Map(blobs.map((b) => [b.role, b]));
  const need = (role: string, dtypes: DType[], blobShape: number[]) => {
    const blob = byRole.get(role);
    if (blob === undefined) throw new FormatError("CONTAINER_BLOB_INVALID", `int-group tensor lacks its "${role}" blob`, { file, tensor });
    if (!dtypes.includes(blob.dtype) || blob.shape.join() !== blobShape.join()) {
      throw new FormatError("CONTAINER_BLOB_INVALID", `"${role}" blob has the wrong dtype or shape`, { file, tensor, byteOffset: blob.byteOffset, expected: `${dtypes.join("|")} [${blobShape.join(", ")}]`, actual: `${blob.dtype} [${blob.shape.join(", ")}]` });
    }
    return blob;
  };
  const G = groupCount(K, groupSize);
  need("codes", ["U8"], [streamWords(N * K, bits) * 4]);
  const scales = need("scales", ["F16", "BF16", "F32"], [G, N]);
  const sym = m.sym ?? false;
  if (!sym) need("zeros", ["U8", "U16"], [G, N]);
  if (byRole.has("g_idx")) need("g_idx", ["I32"], [K]);
  const allowed = new Set(["codes", "scales", "zeros", "g_idx"]);
  const extra = blobs.find((b) => !allowed.has(b.role) || (sym && b.role === "zeros"));
  if (extra !== undefined) throw new FormatError("CONTAINER_BLOB_INVALID", `unexpected "${extra.role}" blob in an int-group tensor`, { file, tensor, byteOffset: extra.byteOffset });
  const scaleDtype = scales.dtype as ScaleDType;
  return { representation: "int-group", dtype: scaleDtype, intGroup: { bits: bits as IntBits, groupSize, sym, outFeatures: N, inFeatures: K, sourceLayout: m.sourceLayout ?? "", scaleDtype } };
}

export interface EncodedIntGroup {
  message: Required<IntGroupMessage>;
  blobs: { role: string; dtype: DType; shape: number[]; bytes: Uint8Array }[];
}

/** The representation as container blobs. */
export function encodeIntGroup(t: IntGroupTensor, sourceLayout: string, tensor: string): EncodedIntGroup {
  const { bits, groupSize, sym, scaleDtype } = t.params;
  const N = t.outFeatures;
  const K = t.inFeatures;
  const words = new Int32Array(streamWords(N * K, bits));
  for (let i = 0; i < t.codes.length; i++) writeField(words, 0, 1, i, bits, t.codes[i]!);
  const G = groupCount(K, groupSize);
  const blobs: EncodedIntGroup["blobs"] = [
    { role: "codes", dtype: "U8", shape: [words.length * 4], bytes: bytesOf(words) },
    { role: "scales", dtype: scaleDtype, shape: [G, N], bytes: encodeScales(t.scales, scaleDtype, tensor) },
  ];
  if (!sym) {
    const wide = t.zeros.some((z) => z > 255);
    blobs.push({ role: "zeros", dtype: wide ? "U16" : "U8", shape: [G, N], bytes: wide ? bytesOf(t.zeros) : Uint8Array.from(t.zeros) });
  }
  if (!isTrivialGIdx(t.gIdx, groupSize)) blobs.push({ role: "g_idx", dtype: "I32", shape: [K], bytes: bytesOf(t.gIdx!) });
  return { message: { bits, groupSize, sym, outFeatures: N, inFeatures: K, sourceLayout }, blobs };
}

/** Container blobs (already checked by `validateIntGroup`, bytes read) → the representation. */
export function decodeIntGroup(h: IntGroupHeader, blobs: Map<string, { info: BlobInfo; bytes: Uint8Array }>, file: string, tensor: string): IntGroupTensor {
  const N = h.outFeatures;
  const K = h.inFeatures;
  const G = groupCount(K, h.groupSize);
  const words = viewAs(blobs.get("codes")!.bytes, Int32Array);
  const codes = new Uint8Array(N * K);
  for (let i = 0; i < codes.length; i++) codes[i] = readField(words, 0, 1, i, h.bits);
  const array = (role: string) => {
    const b = blobs.get(role)!;
    return { name: `${tensor} (${role})`, dtype: b.info.dtype, shape: b.info.shape, bytes: b.bytes, file, byteOffset: b.info.byteOffset };
  };
  const scales = decodeScales(array("scales"), [G, N]).values;
  let zeros: Uint16Array;
  if (h.sym) zeros = new Uint16Array(G * N).fill(symmetricZero(h.bits));
  else {
    const z = blobs.get("zeros")!;
    zeros = z.info.dtype === "U16" ? viewAs(z.bytes, Uint16Array).slice() : Uint16Array.from(z.bytes);
    const limit = 1 << h.bits;
    const bad = zeros.findIndex((v) => v > limit);
    if (bad >= 0) throw new FormatError("PACKED_VALUE_INVALID", "zero point above 2^bits", { file, tensor, byteOffset: z.info.byteOffset + bad * (z.info.dtype === "U16" ? 2 : 1), expected: `<= ${limit}`, actual: zeros[bad] });
  }
  const gIdx = blobs.has("g_idx") ? decodeGIdx(array("g_idx"), K, G) : undefined;
  return { params: { bits: h.bits, groupSize: h.groupSize, sym: h.sym, scaleDtype: h.scaleDtype }, outFeatures: N, inFeatures: K, codes, scales, zeros, gIdx };
}
