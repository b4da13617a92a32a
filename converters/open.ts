import { open, stat } from "node:fs/promises";
import { FormatError, IoError } from "../formats/errors.js";
import type { Checkpoint } from "./checkpoint.js";
import { GGUF_MAGIC } from "./gguf/layout.js";
import { openHfDirectory } from "./hf/import-local.js";
import { MAGIC } from "./lmpack/layout.js";
import { openLmpackCheckpoint } from "./lmpack/import.js";
import { openSafetensorsCheckpoint } from "./safetensors/import.js";

export interface OpenOptions {
  /** Hub options (cache dir, token, offline, endpoint); defaults come from HF_* variables. */
  hub?: import("./hf/hub.js").HubOptions;
}

/** `owner/name` or `owner/name@revision`, as the Hub spells repo ids. */
export const HUB_ID = /^[A-Za-z0-9][A-Za-z0-9._-]*\/[A-Za-z0-9][A-Za-z0-9._-]*(@[A-Za-z0-9._/-]+)?$/;

/**
 * Opens any source lmpack reads: an HF directory, a .safetensors, .gguf or .lmpack file (detected by
 * content, not name), or a Hub id that is not an existing path.
 */
export async function openCheckpoint(source: string, options: OpenOptions = {}): Promise<Checkpoint> {
  let kind: "dir" | "file" | undefined;
  try {
    const stats = await stat(source);
    kind = stats.isDirectory() ? "dir" : "file";
  } catch {
    kind = undefined;
  }
  if (kind === "dir") return openHfDirectory(source);
  if (kind === "file") {
    const head = await readHead(source);
    if (MAGIC.every((b, i) => head[i] === b)) return openLmpackCheckpoint(source);
    if (GGUF_MAGIC.every((b, i) => head[i] === b)) {
      // Loaded lazily: the GGUF path pulls in every ggml codec and its lookup tables.
      const { openGgufCheckpoint } = await import("./gguf/import.js");
      return openGgufCheckpoint(source);
    }
    if (source.endsWith(".safetensors") || looksLikeSafetensors(head)) return openSafetensorsCheckpoint(source);
    throw new FormatError("LAYOUT_UNKNOWN", "not a safetensors file, a GGUF file, an lmpack container or a model directory", { file: source });
  }
  if (HUB_ID.test(source) && !source.startsWith(".")) {
    const { openHubCheckpoint } = await import("./hf/hub.js");
    return openHubCheckpoint(source, options.hub);
  }
  throw new IoError("NOT_FOUND", "no such file or directory, and not a Hub id (owner/name[@revision])", { file: source });
}

/** The first 9 bytes of `path` (fewer for a shorter file): enough to tell every layout's magic. */
export async function readHead(path: string): Promise<Uint8Array> {
  const handle = await open(path, "r");
  try {
    const head = new Uint8Array(9);
    const { bytesRead } = await handle.read(head, 0, 9, 0);
    return head.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

/** An 8-byte length followed by '{' is how every safetensors file starts. */
function looksLikeSafetensors(head: Uint8Array): boolean {
  return head.length === 9 && head[8] === 0x7b;
}
