import type { Checkpoint, TensorEntry } from "../checkpoint.js";
import type { BufferRing } from "../io/buffer-ring.js";
import { normaliseConfig, parseConfigJson } from "../hf/config.js";
import { decodeNotes } from "./notes.js";
import { LmpackFile, type ContainerTensor } from "./reader.js";
import { decodeIntGroup } from "./int-group.js";
import { intGroupEntry } from "../int-group/entry.js";
import { decodeFpx } from "./fpx.js";
import { fpxEntry } from "../fpx/entry.js";
import { fpxStoredBytes } from "../../formats/fpx/types.js";
import type { PackedFpx, PackedSpqr, PackedVptq } from "../checkpoint.js";
import { decodeVptq } from "./vptq.js";
import { vptqEntry } from "../vptq/entry.js";
import { decodeSpqr } from "./spqr.js";
import { spqrEntry } from "../spqr/entry.js";
import { SPQR_DEFAULTS } from "../../formats/spqr/types.js";

/** Opens a .lmpack container as a checkpoint; blob checksums are verified as data is read. */
export async function openLmpackCheckpoint(path: string): Promise<Checkpoint> {
  return lmpackCheckpoint(await LmpackFile.open(path));
}

/** An open container (from a file or, in tests and fuzz targets, a buffer) as a checkpoint; closes it on failure. */
export async function lmpackCheckpoint(file: LmpackFile): Promise<Checkpoint> {
  const path = file.path;
  try {
    const rawConfigText = file.header.rawConfigJson === "" ? undefined : file.header.rawConfigJson;
    const rawConfig = rawConfigText === undefined ? undefined : parseConfigJson(rawConfigText, `${path} (config.json)`);
    const sideFiles = new Map<string, Uint8Array>();
    for (const [name, blob] of file.sideFiles) sideFiles.set(name, await file.readBlob(blob));
    const tensors: TensorEntry[] = file.tensors.map((t) => {
      if (t.intGroup !== undefined) return intGroupContainerEntry(file, t, path);
      if (t.fpx !== undefined) return fpxContainerEntry(file, t, path);
      if (t.spqr !== undefined) return spqrContainerEntry(file, t, path);
      if (t.vptq !== undefined) return vptqContainerEntry(file, t, path);
      const blob = t.blobs[0]!;
      return {
        name: t.name,
        representation: t.representation,
        dtype: t.dtype,
        shape: t.shape,
        nElements: t.shape.reduce((a, b) => a * b, 1),
        byteLength: blob.byteLength,
        file: path,
        notes: decodeNotes(t.notesMsgpack, path, t.name),
        read: () => file.readBlob(blob),
        readChunks: (maxChunkBytes?: number, ring?: BufferRing) => file.readBlobChunks(blob, { ...(maxChunkBytes === undefined ? {} : { maxChunkBytes }), ...(ring === undefined ? {} : { ring }) }),
      };
    });
    return {
      layout: "lmpack",
      location: path,
      files: [path],
      config: rawConfig === undefined ? undefined : normaliseConfig(rawConfig, `${path} (config.json)`),
      rawConfig,
      rawConfigText,
      sideFiles,
      metadata: { ...file.header.metadata },
      tensors,
      close: () => file.close(),
    };
  } catch (error) {
    await file.close();
    throw error;
  }
}

async function readBlobs(file: LmpackFile, t: ContainerTensor): Promise<Map<string, { info: ContainerTensor["blobs"][number]; bytes: Uint8Array }>> {
  const blobs = new Map<string, { info: ContainerTensor["blobs"][number]; bytes: Uint8Array }>();
  for (const info of t.blobs) blobs.set(info.role, { info, bytes: await file.readBlob(info) });
  return blobs;
}

function fpxContainerEntry(file: LmpackFile, t: ContainerTensor, path: string): TensorEntry {
  const h = t.fpx!;
  const packed: PackedFpx = {
    representation: "fpx",
    format: h.format,
    outFeatures: h.outFeatures,
    inFeatures: h.inFeatures,
    storedBytes: fpxStoredBytes(h.format, h.outFeatures, h.inFeatures),
    sourceLayout: h.sourceLayout === "" ? "lmpack" : h.sourceLayout,
    ...(h.codesFrom === undefined ? {} : { codesFrom: h.codesFrom }),
    load: async () => decodeFpx(h, await readBlobs(file, t)),
  };
  return fpxEntry(t.name, path, packed, decodeNotes(t.notesMsgpack, path, t.name));
}

function spqrContainerEntry(file: LmpackFile, t: ContainerTensor, path: string): TensorEntry {
  const h = t.spqr!;
  const packed: PackedSpqr = {
    representation: "spqr",
    params: SPQR_DEFAULTS,
    outFeatures: h.outFeatures,
    inFeatures: h.inFeatures,
    outlierCount: h.outlierCount,
    storedBytes: t.blobs.reduce((sum, b) => sum + b.byteLength, 0),
    sourceLayout: h.sourceLayout === "" ? "lmpack" : h.sourceLayout,
    load: async () => decodeSpqr(h, await readBlobs(file, t), path, t.name),
  };
  return spqrEntry(t.name, path, packed, decodeNotes(t.notesMsgpack, path, t.name));
}

function vptqContainerEntry(file: LmpackFile, t: ContainerTensor, path: string): TensorEntry {
  const h = t.vptq!;
  const packed: PackedVptq = {
    representation: "vptq",
    params: h.params,
    outFeatures: h.outFeatures,
    inFeatures: h.inFeatures,
    dtype: h.dtype,
    storedBytes: t.blobs.reduce((sum, b) => sum + b.byteLength, 0),
    sourceLayout: h.sourceLayout === "" ? "lmpack" : h.sourceLayout,
    load: async () => decodeVptq(h, await readBlobs(file, t), path, t.name),
  };
  return vptqEntry(t.name, path, packed, decodeNotes(t.notesMsgpack, path, t.name));
}

function intGroupContainerEntry(file: LmpackFile, t: ContainerTensor, path: string): TensorEntry {
  const h = t.intGroup!;
  const load = async () => decodeIntGroup(h, await readBlobs(file, t), path, t.name);
  const storedBytes = t.blobs.reduce((sum, b) => sum + b.byteLength, 0);
  const packed = {
    representation: "int-group" as const,
    params: { bits: h.bits, groupSize: h.groupSize, sym: h.sym, scaleDtype: h.scaleDtype },
    outFeatures: h.outFeatures,
    inFeatures: h.inFeatures,
    actOrder: t.blobs.some((b) => b.role === "g_idx"),
    storedBytes,
    sourceLayout: h.sourceLayout === "" ? "lmpack" : h.sourceLayout,
    load,
  };
  return intGroupEntry(t.name, path, packed, decodeNotes(t.notesMsgpack, path, t.name));
}
