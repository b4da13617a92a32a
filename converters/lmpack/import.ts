import { FormatError } from "../../formats/errors.js";
import type { Checkpoint, TensorEntry } from "../checkpoint.js";
import type { BufferRing } from "../io/buffer-ring.js";
import { normaliseConfig } from "../hf/config.js";
import { decodeNotes } from "./notes.js";
import { LmpackFile } from "./reader.js";

/** Opens a .lmpack container as a checkpoint; blob checksums are verified as data is read. */
export async function openLmpackCheckpoint(path: string): Promise<Checkpoint> {
  const file = await LmpackFile.open(path);
  try {
    const rawConfig = parseRawConfig(file.header.rawConfigJson, path);
    const sideFiles = new Map<string, Uint8Array>();
    for (const [name, blob] of file.sideFiles) sideFiles.set(name, await file.readBlob(blob));
    const tensors: TensorEntry[] = file.tensors.map((t) => {
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
      rawConfigText: rawConfig === undefined ? undefined : file.header.rawConfigJson,
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

function parseRawConfig(json: string, path: string): Record<string, unknown> | undefined {
  if (json === "") return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch (cause) {
    throw new FormatError("CONFIG_INVALID", "embedded config.json is not valid JSON", { file: path, cause });
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new FormatError("CONFIG_INVALID", "embedded config.json is not an object", { file: path });
  return parsed as Record<string, unknown>;
}
