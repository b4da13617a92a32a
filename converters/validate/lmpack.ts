import { crc32 } from "node:zlib";
import { normaliseConfig, parseConfigJson } from "../hf/config.js";
import type { TensorEntry } from "../checkpoint.js";
import { FileSource, type RandomAccessSource } from "../io/random-access.js";
import { decodeIntGroup, validateIntGroup } from "../lmpack/int-group.js";
import { decodeFpx, validateFpx } from "../lmpack/fpx.js";
import { openLmpackCheckpoint } from "../lmpack/import.js";
import { checkPreamble, decodeTrailer, HEADER_SCHEMA_VERSION, PREAMBLE_BYTES, TRAILER_BYTES } from "../lmpack/layout.js";
import { decodeNotes } from "../lmpack/notes.js";
import { dtypeFromProto, pb, type HeaderMessage, type TensorMessage } from "../lmpack/proto.js";
import type { BlobInfo } from "../lmpack/reader.js";
import { decodeSpqr, validateSpqr } from "../lmpack/spqr.js";
import { decodeVptq, validateVptq } from "../lmpack/vptq.js";
import { checkConfigTensors } from "./config-tensors.js";
import type { Findings } from "./findings.js";
import { checkStatistics } from "./hf-spqr.js";
import { BlobChecker } from "./lmpack-blobs.js";
import type { ArrayRole, ScanArray, Validated } from "./types.js";

/**
 * An lmpack container: preamble, trailer, header CRC and protobuf, then every tensor and side
 * file on its own (blobs, the representation's roles/dtypes/shapes, notes), blob overlaps, every
 * blob checksum, then each packed tensor decoded (which validates its values: permutations,
 * CSR offsets, index ranges) and config ↔ tensors. Only a broken trailer or an undecodable
 * header stops the file: nothing after them can be located.
 */
export async function validateLmpack(path: string, findings: Findings): Promise<Validated> {
  const empty: Validated = { layout: "lmpack", entries: [], arrays: [], declared: { method: "lmpack" }, close: async () => undefined };
  const source = await findings.guard({ file: path }, () => FileSource.open(path));
  if (source === undefined) return empty;
  const done = { ...empty, close: () => source.close() };
  if (source.byteLength < PREAMBLE_BYTES + TRAILER_BYTES) {
    findings.add("CONTAINER_TRUNCATED", "file too small for an lmpack container", { file: path, byteOffset: 0, expected: `>= ${PREAMBLE_BYTES + TRAILER_BYTES} bytes`, actual: source.byteLength });
    return done;
  }
  // A bad magic or version at the front does not stop the check: the trailer locates the rest.
  await findings.guard({ file: path, byteOffset: 0 }, async () => checkPreamble(await source.read(0, PREAMBLE_BYTES), path));
  const trailer = await findings.guard({ file: path }, async () => decodeTrailer(await source.read(source.byteLength - TRAILER_BYTES, TRAILER_BYTES), source.byteLength, path));
  if (trailer === undefined) return done;
  const headerBytes = await source.read(trailer.headerOffset, trailer.headerLength);
  const actualCrc = crc32(headerBytes);
  if (actualCrc !== trailer.headerCrc32) findings.add("CONTAINER_HEADER_INVALID", "header checksum mismatch (corrupted header)", { file: path, byteOffset: trailer.headerOffset, expected: trailer.headerCrc32, actual: actualCrc });
  let header: HeaderMessage;
  try {
    header = pb.Header.decode(headerBytes);
  } catch (cause) {
    findings.add("CONTAINER_HEADER_INVALID", `header does not decode: ${(cause as Error).message}`, { file: path, byteOffset: trailer.headerOffset });
    return done;
  }
  if (header.schemaVersion !== HEADER_SCHEMA_VERSION) findings.add("CONTAINER_BAD_VERSION", "unsupported header schema version", { file: path, byteOffset: trailer.headerOffset, expected: HEADER_SCHEMA_VERSION, actual: header.schemaVersion });
  const blobs = new BlobChecker(path, trailer.headerOffset, findings);
  const names = new Set<string>();
  const checked: CheckedTensor[] = [];
  for (const t of header.tensors) {
    const tensor = await checkTensor(t, blobs, names, path, findings);
    if (tensor !== undefined) checked.push(tensor);
  }
  const sideNames = new Set<string>();
  for (const side of header.sideFiles) {
    const name = side.name ?? "";
    if (side.blob == null || name === "" || sideNames.has(name)) findings.add("CONTAINER_HEADER_INVALID", "side file without a blob, a name, or with a duplicate name", { file: path, tensor: name });
    else blobs.check(side.blob, `side file ${name}`);
    sideNames.add(name);
  }
  blobs.checkOverlaps();
  const corrupt = await blobs.checkChecksums(source);
  const arrays: ScanArray[] = [];
  for (const t of checked) {
    if (corrupt.has(t.name)) continue;
    arrays.push(...scanArraysOf(t, path, source));
    const before = findings.list.length;
    await findings.guard({ file: path, tensor: t.name }, () => decodeTensor(t, source, path, findings));
    // The decoders name a blob as "<tensor> (<role>)": findings name the tensor, the blob goes in the message.
    for (const f of findings.list.slice(before)) {
      const blob = f.tensor === undefined ? null : / \((.+)\)$/.exec(f.tensor);
      if (blob === null || blob === undefined) continue;
      f.tensor = f.tensor!.slice(0, blob.index);
      f.message = `blob "${blob[1]}": ${f.message}`;
    }
  }
  const config = await checkContainerConfig(header, path, checked, findings);
  const entries = findings.errorCount === 0 ? await entriesOf(path, findings) : undefined;
  return { layout: "lmpack", entries: entries?.tensors ?? [], arrays, config, declared: { method: "lmpack" }, close: async () => { await entries?.close(); await source.close(); } };
}

type Representation = ReturnType<typeof validateIntGroup> | ReturnType<typeof validateFpx> | ReturnType<typeof validateSpqr> | ReturnType<typeof validateVptq> | { representation: "dense" };

interface CheckedTensor {
  name: string;
  shape: number[];
  blobs: BlobInfo[];
  rep: Representation;
}

async function checkTensor(t: TensorMessage, blobs: BlobChecker, names: Set<string>, file: string, findings: Findings): Promise<CheckedTensor | undefined> {
  const name = t.name ?? "";
  if (name === "") return void findings.add("CONTAINER_HEADER_INVALID", "tensor without a name", { file });
  if (names.has(name)) return void findings.add("TENSOR_DUPLICATE", "tensor name appears twice", { file, tensor: name });
  names.add(name);
  const messages = t.blobs ?? [];
  const valid = messages.map((b) => blobs.check(b, name)).filter((b): b is BlobInfo => b !== undefined);
  const shape = (t.shape ?? []).map(Number);
  await findings.guard({ file, tensor: name }, () => decodeNotes(t.notesMsgpack != null && t.notesMsgpack.length > 0 ? t.notesMsgpack : undefined, file, name));
  if (valid.length !== messages.length) return undefined;
  const where = { file, tensor: name };
  const rep = await findings.guard<Representation>(where, () => {
    if (t.intGroup != null) return validateIntGroup(t.intGroup, shape, valid, file, name);
    if (t.fpx != null) return validateFpx(t.fpx, shape, valid, file, name);
    if (t.spqr != null) return validateSpqr(t.spqr, shape, valid, file, name);
    if (t.vptq != null) return validateVptq(t.vptq, shape, valid, file, name);
    return { representation: "dense" as const };
  });
  if (rep === undefined) return undefined;
  if (rep.representation === "dense") {
    const dtype = dtypeFromProto(t.dense?.dtype);
    const data = valid[0];
    if (t.dense == null) return void findings.add("CONTAINER_HEADER_INVALID", "tensor has no representation this version of lmpack reads", { file, tensor: name, expected: "dense, int_group, fpx, spqr or vptq" });
    if (dtype === undefined) return void findings.add("UNKNOWN_DTYPE", "unknown dtype in dense tensor", { file, tensor: name, actual: t.dense.dtype });
    if (valid.length !== 1 || data === undefined || data.role !== "data") return void findings.add("CONTAINER_BLOB_INVALID", 'a dense tensor has exactly one blob, with role "data"', { ...where, byteOffset: data?.byteOffset, expected: 1, actual: valid.length });
    if (data.dtype !== dtype || data.shape.join() !== shape.join()) return void findings.add("CONTAINER_BLOB_INVALID", "data blob dtype/shape differ from the tensor's", { ...where, byteOffset: data.byteOffset, expected: `${dtype} ${JSON.stringify(shape)}`, actual: `${data.dtype} ${JSON.stringify(data.shape)}` });
  }
  return { name, shape, blobs: valid, rep };
}

const ROLES: Record<string, Partial<Record<string, ArrayRole>>> = {
  dense: { data: "weight" },
  "int-group": { scales: "scale" },
  fpx: { scales: "positive-scale" },
  spqr: { col_vals: "outlier-colvals" },
  vptq: { "centroids.weight": "codebook", "res_centroids.weight": "codebook", "outlier_centroids.weight": "codebook", weight_scale: "norm", weight_bias: "norm" },
};

function scanArraysOf(t: CheckedTensor, file: string, source: RandomAccessSource): ScanArray[] {
  return t.blobs.flatMap((b) => {
    const role = ROLES[t.rep.representation]?.[b.role];
    return role === undefined ? [] : [{ name: t.name, file, dtype: b.dtype, byteOffset: b.byteOffset, byteLength: b.byteLength, role, source }];
  });
}

/** Decodes a packed tensor: the decoders validate every value an index or offset is taken from. */
async function decodeTensor(t: CheckedTensor, source: RandomAccessSource, file: string, findings: Findings): Promise<void> {
  if (t.rep.representation === "dense") return;
  const blobs = new Map<string, { info: BlobInfo; bytes: Uint8Array }>();
  for (const info of t.blobs) blobs.set(info.role, { info, bytes: await source.read(info.byteOffset, info.byteLength) });
  if ("intGroup" in t.rep) decodeIntGroup(t.rep.intGroup, blobs, file, t.name);
  else if ("fpx" in t.rep) decodeFpx(t.rep.fpx, blobs);
  else if ("vptq" in t.rep) decodeVptq(t.rep.vptq, blobs, file, t.name);
  else if ("spqr" in t.rep) {
    const decoded = decodeSpqr(t.rep.spqr, blobs, file, t.name);
    const dense = blobs.get("dense_weights")!.info;
    checkStatistics(decoded, { file, name: t.name, byteOffset: dense.byteOffset }, findings);
  }
}

async function checkContainerConfig(header: HeaderMessage, path: string, tensors: CheckedTensor[], findings: Findings): Promise<Validated["config"]> {
  if (header.rawConfigJson === "") return undefined;
  const where = { file: `${path} (config.json)` };
  const config = await findings.guard(where, () => normaliseConfig(parseConfigJson(header.rawConfigJson, where.file), where.file));
  if (config === undefined) return undefined;
  const entries = tensors.map((t) => ({ name: t.name, shape: t.shape, file: path, byteOffset: t.blobs[0]?.byteOffset }) as TensorEntry);
  checkConfigTensors(config, entries, findings, { configFile: where.file, excused: (name) => findings.names(name) });
  return config;
}

/** The container as a checkpoint, for the dequantizing checks (only once the structure is clean). */
async function entriesOf(path: string, findings: Findings): Promise<{ tensors: TensorEntry[]; close(): Promise<void> } | undefined> {
  const checkpoint = await findings.guard({ file: path }, () => openLmpackCheckpoint(path));
  return checkpoint === undefined ? undefined : { tensors: [...checkpoint.tensors], close: () => checkpoint.close() };
}
