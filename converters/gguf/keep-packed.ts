import type { DType } from "../../formats/dtype.js";
import { FormatError } from "../../formats/errors.js";
import type { PackedTensor, TensorEntry } from "../checkpoint.js";
import { encodeFpx, decodeFpx, validateFpx } from "../lmpack/fpx.js";
import { encodeIntGroup, decodeIntGroup, validateIntGroup } from "../lmpack/int-group.js";
import type { BlobInfo } from "../lmpack/reader.js";
import { encodeSpqr, decodeSpqr, validateSpqr } from "../lmpack/spqr.js";
import { encodeVptq, decodeVptq, validateVptq } from "../lmpack/vptq.js";
import { fpxEntry } from "../fpx/entry.js";
import { intGroupEntry } from "../int-group/entry.js";
import { spqrEntry } from "../spqr/entry.js";
import { vptqEntry } from "../vptq/entry.js";
import { fpxStoredBytes } from "../../formats/fpx/types.js";
import { SPQR_DEFAULTS } from "../../formats/spqr/types.js";
import type { GgufTensorInfo } from "./layout.js";
import type { GgufFile } from "./reader.js";

/**
 * `convert --to gguf --keep-packed`: a packed tensor lmpack cannot express in a ggml type
 * (VPTQ, SpQR, FP6, integer groups without an exact ggml image) is stored as its lmpack
 * container arrays, each a raw GGUF tensor `<gguf name>.lmpack.<array>` (F16/BF16/F32, or
 * I8/I16/I32/I64 for the integer arrays: unsigned ones travel in the signed type of their width,
 * byte for byte), plus one STRING key `lmpack.packed.<gguf name>` holding JSON: the
 * representation, its container header fields and each array's true dtype and shape. Any GGUF
 * parser reads such a file; lmpack re-imports it losslessly (same validation as the container);
 * llama.cpp cannot run it (it has no kernels for these formats), which the CLI says.
 */

export const PACKED_KEY_PREFIX = "lmpack.packed.";
const PART = ".lmpack.";

interface PackedDescription {
  representation: PackedTensor["representation"];
  name: string;
  shape: number[];
  message: Record<string, unknown>;
  arrays: { role: string; dtype: DType; shape: number[] }[];
}

/** Storage ggml type of each array dtype (ggml.h ids). */
const STORAGE: Partial<Record<DType, number>> = { F32: 0, F16: 1, BF16: 30, I8: 24, U8: 24, I16: 25, U16: 25, I32: 26, U32: 26, I64: 27, U64: 27, F64: 28 };

export interface KeptTensor {
  key: string;
  json: string;
  parts: { name: string; type: number; shape: number[]; bytes: Uint8Array }[];
}

/** The GGUF tensors and key that hold `entry`'s packed form. */
export async function keepPacked(entry: TensorEntry, ggufName: string): Promise<KeptTensor> {
  const p = entry.packed!;
  const encoded = p.representation === "vptq" ? encodeVptq(await p.load(), p.sourceLayout)
    : p.representation === "spqr" ? encodeSpqr(await p.load(), p.sourceLayout, entry.name)
    : p.representation === "fpx" ? encodeFpx(await p.load(), p.sourceLayout, p.codesFrom)
    : encodeIntGroup(await p.load(), p.sourceLayout, entry.name);
  const description: PackedDescription = {
    representation: p.representation,
    name: entry.name,
    shape: [...entry.shape],
    message: encoded.message as Record<string, unknown>,
    arrays: encoded.blobs.map((b) => ({ role: b.role, dtype: b.dtype, shape: b.shape })),
  };
  const parts = encoded.blobs.map((b) => {
    const type = STORAGE[b.dtype];
    if (type === undefined) throw new FormatError("DTYPE_UNSUPPORTED", `a ${b.dtype} array has no GGUF storage type`, { tensor: entry.name });
    return { name: `${ggufName}${PART}${b.role}`, type, shape: b.shape.length === 0 ? [1] : b.shape, bytes: b.bytes };
  });
  return { key: `${PACKED_KEY_PREFIX}${ggufName}`, json: JSON.stringify(description), parts };
}

/** Whether a GGUF tensor name is one array of a kept packed tensor. */
export function isKeptPart(name: string): boolean {
  return name.includes(PART);
}

/** The packed entries of a GGUF file written with --keep-packed (none for other files). */
export function keptEntries(file: GgufFile): TensorEntry[] {
  const entries: TensorEntry[] = [];
  for (const [key, value] of file.metadata.values) {
    if (!key.startsWith(PACKED_KEY_PREFIX)) continue;
    const ggufName = key.slice(PACKED_KEY_PREFIX.length);
    if (value.type !== 8) throw new FormatError("METADATA_INVALID", "a kept packed tensor's description must be a STRING", { file: file.path, tensor: key });
    entries.push(keptEntry(file, ggufName, parseDescription(value.value, file.path, key)));
  }
  return entries;
}

function parseDescription(json: string, path: string, key: string): PackedDescription {
  const bad = (detail: string): FormatError => new FormatError("METADATA_INVALID", `${key}: ${detail}`, { file: path, tensor: key });
  let d: unknown;
  try {
    d = JSON.parse(json);
  } catch {
    throw bad("not valid JSON");
  }
  const o = d as Partial<PackedDescription>;
  const isShape = (s: unknown): s is number[] => Array.isArray(s) && s.every((x) => Number.isSafeInteger(x) && x >= 0);
  if (typeof o !== "object" || o === null || !["vptq", "spqr", "fpx", "int-group"].includes(o.representation as string) || typeof o.name !== "string" || !isShape(o.shape) || typeof o.message !== "object" || o.message === null || !Array.isArray(o.arrays)) throw bad("not a packed-tensor description");
  for (const a of o.arrays) if (typeof a?.role !== "string" || !(a.dtype in STORAGE) || !isShape(a.shape)) throw bad("an array entry is malformed");
  return o as PackedDescription;
}

function keptEntry(file: GgufFile, ggufName: string, d: PackedDescription): TensorEntry {
  const parts = new Map<string, GgufTensorInfo>();
  const blobs: BlobInfo[] = d.arrays.map((a) => {
    const name = `${ggufName}${PART}${a.role}`;
    if (!file.has(name)) throw new FormatError("TENSOR_MISSING", "a kept packed tensor lacks one of its arrays", { file: file.path, tensor: name });
    const info = file.tensor(name);
    const elements = a.shape.reduce((x, y) => x * y, 1);
    if (info.type !== STORAGE[a.dtype] || info.nElements !== elements) {
      throw new FormatError("SHAPE_SIZE_MISMATCH", `array "${a.role}" does not match its description`, { file: file.path, tensor: name, byteOffset: info.byteOffset, expected: `${a.dtype} [${a.shape.join(", ")}]`, actual: `${info.codec.name} [${info.shape.join(", ")}]` });
    }
    parts.set(a.role, info);
    return { role: a.role, dtype: a.dtype, shape: a.shape, byteOffset: info.byteOffset, byteLength: info.byteLength, checksumAlgorithm: "none", checksum: new Uint8Array(0), owner: d.name };
  });
  const read = async () => {
    const out = new Map<string, { info: BlobInfo; bytes: Uint8Array }>();
    for (const b of blobs) out.set(b.role, { info: b, bytes: await file.read(parts.get(b.role)!.name) });
    return out;
  };
  const storedBytes = blobs.reduce((s, b) => s + b.byteLength, 0);
  const path = file.path;
  const m = d.message as never;
  if (d.representation === "vptq") {
    const h = validateVptq(m, d.shape, blobs, path, d.name).vptq;
    return vptqEntry(d.name, path, { representation: "vptq", params: h.params, outFeatures: h.outFeatures, inFeatures: h.inFeatures, dtype: h.dtype, storedBytes, sourceLayout: h.sourceLayout || "gguf", load: async () => decodeVptq(h, await read(), path, d.name) });
  }
  if (d.representation === "spqr") {
    const h = validateSpqr(m, d.shape, blobs, path, d.name).spqr;
    return spqrEntry(d.name, path, { representation: "spqr", params: SPQR_DEFAULTS, outFeatures: h.outFeatures, inFeatures: h.inFeatures, outlierCount: h.outlierCount, storedBytes, sourceLayout: h.sourceLayout || "gguf", load: async () => decodeSpqr(h, await read(), path, d.name) });
  }
  if (d.representation === "fpx") {
    const h = validateFpx(m, d.shape, blobs, path, d.name).fpx;
    return fpxEntry(d.name, path, { representation: "fpx", format: h.format, outFeatures: h.outFeatures, inFeatures: h.inFeatures, storedBytes: fpxStoredBytes(h.format, h.outFeatures, h.inFeatures), sourceLayout: h.sourceLayout || "gguf", ...(h.codesFrom === undefined ? {} : { codesFrom: h.codesFrom }), load: async () => decodeFpx(h, await read()) });
  }
  const h = validateIntGroup(m, d.shape, blobs, path, d.name).intGroup;
  return intGroupEntry(d.name, path, { representation: "int-group", params: { bits: h.bits, groupSize: h.groupSize, sym: h.sym, scaleDtype: h.scaleDtype }, outFeatures: h.outFeatures, inFeatures: h.inFeatures, actOrder: blobs.some((b) => b.role === "g_idx"), storedBytes, sourceLayout: h.sourceLayout || "gguf", load: async () => decodeIntGroup(h, await read(), path, d.name) });
}
