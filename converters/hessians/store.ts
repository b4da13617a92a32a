import { stat } from "node:fs/promises";
import { join } from "node:path";
import { FormatError } from "../../formats/errors.js";
import { viewAs } from "../../formats/packed-array.js";
import type { Hessian, HessianSource } from "../../formats/second-order/hessian.js";
import { ioErrorFor } from "../io/random-access.js";
import { SafetensorsFile } from "../safetensors/reader.js";
import { SafetensorsWriter } from "../safetensors/writer.js";

/**
 * The Hessian store every quantizer's `--hessians` reads: one safetensors file
 * (`hessians.safetensors`, or a directory holding it) with one F32 or F64 [K, K] tensor per
 * distinct layer input, named after the first linear that reads it. Linears that share an input
 * (q/k/v, gate/up) point at it through the `aliases` metadata (JSON: linear → stored name);
 * `samples` (JSON: stored name → calibration tokens) and `source` say where H came from.
 * The calibration issue's `lmpack calibrate` writes the same format.
 */
export const HESSIAN_FILE = "hessians.safetensors";
export const HESSIAN_FORMAT = "lmpack-hessians/1";

export interface HessianEntry {
  /** Stored name: the first linear that reads this input (e.g. "model.layers.0.self_attn.q_proj"). */
  name: string;
  /** Other linears with the same input. */
  aliases: string[];
  hessian: Hessian;
}

export async function writeHessianStore(path: string, entries: HessianEntry[], source: string): Promise<void> {
  const aliases: Record<string, string> = {};
  const samples: Record<string, number> = {};
  for (const e of entries) {
    for (const a of e.aliases) aliases[a] = e.name;
    if (e.hessian.nSamples !== undefined) samples[e.name] = e.hessian.nSamples;
  }
  const plans = entries.map((e) => ({ name: e.name, dtype: "F64" as const, shape: [e.hessian.size, e.hessian.size] }));
  const metadata = { format: HESSIAN_FORMAT, source, aliases: JSON.stringify(aliases), samples: JSON.stringify(samples) };
  const writer = await SafetensorsWriter.create(path, plans, metadata);
  try {
    for (const e of entries) await writer.write(e.name, new Uint8Array(e.hessian.data.buffer, e.hessian.data.byteOffset, e.hessian.data.byteLength));
  } catch (error) {
    await writer.abort();
    throw error;
  }
  await writer.finish();
}

/** Opens a store; `get` reads one Hessian at a time (each is K² · 8 bytes). */
export async function openHessianStore(path: string): Promise<HessianSource & { close(): Promise<void> }> {
  let isDirectory: boolean;
  try {
    isDirectory = (await stat(path)).isDirectory();
  } catch (cause) {
    throw ioErrorFor(cause, path, "Hessian store");
  }
  const file = isDirectory ? join(path, HESSIAN_FILE) : path;
  return hessianStore(await SafetensorsFile.open(file));
}

/** A store over an open safetensors file (from a path or, in fuzz targets, a buffer); closes it on failure. */
export async function hessianStore(store: SafetensorsFile): Promise<HessianSource & { close(): Promise<void> }> {
  try {
    return storeOver(store);
  } catch (error) {
    await store.close();
    throw error;
  }
}

function storeOver(store: SafetensorsFile): HessianSource & { close(): Promise<void> } {
  const file = store.path;
  const metadata = store.metadata ?? {};
  const parse = (key: string): Record<string, unknown> => {
    try {
      const value = JSON.parse(metadata[key] ?? "{}") as unknown;
      if (typeof value === "object" && value !== null && !Array.isArray(value)) return value as Record<string, unknown>;
    } catch {
      // fall through to the error below
    }
    throw new FormatError("METADATA_INVALID", `Hessian store metadata "${key}" must be a JSON object`, { file });
  };
  const aliases = parse("aliases");
  const samples = parse("samples");
  return {
    async get(linearName: string, inFeatures: number): Promise<Hessian | undefined> {
      const alias = aliases[linearName];
      const name = typeof alias === "string" ? alias : linearName;
      if (!store.has(name)) return undefined;
      const info = store.tensor(name);
      if (info.shape.length !== 2 || info.shape[0] !== inFeatures || info.shape[1] !== inFeatures || (info.dtype !== "F32" && info.dtype !== "F64")) {
        throw new FormatError("SHAPE_INVALID", `Hessian for "${linearName}" must be F32/F64 [${inFeatures}, ${inFeatures}]`, { file, tensor: name, byteOffset: info.byteOffset, expected: `[${inFeatures}, ${inFeatures}]`, actual: `${info.dtype} [${info.shape.join(", ")}]` });
      }
      const bytes = await store.read(name);
      const data = info.dtype === "F64" ? viewAs(bytes, Float64Array) : Float64Array.from(viewAs(bytes, Float32Array));
      const n = samples[name];
      return { size: inFeatures, data, ...(typeof n === "number" ? { nSamples: n } : {}) };
    },
    close: () => store.close(),
  };
}
