import { elementCount, type TargetFloatDType } from "../../formats/dtype.js";
import { UsageError } from "../../formats/errors.js";
import type { Checkpoint, TensorEntry } from "../checkpoint.js";
import { INDEX_FILE, SINGLE_WEIGHTS_FILE } from "../hf/import-local.js";
import { AtomicDirectory, refuseExisting, writeFileAtomic } from "../io/atomic.js";
import { ChunkStream, denseConfigText, outputDtype, totalSourceBytes, type ProgressSink } from "../tensor-stream.js";
import { planByteLength, SafetensorsWriter, type TensorPlan } from "./writer.js";

export interface SafetensorsExportOptions {
  dtype?: TargetFloatDType;
  /** Shard size cap in bytes (directory output only). Default: transformers' 5 GB. */
  maxShardBytes?: number;
  overwrite?: boolean;
  progress?: ProgressSink;
  /** Streaming chunk size (default 16 MB); tests use tiny ones to exercise chunk boundaries. */
  chunkBytes?: number;
}

/** transformers' `save_pretrained` default `max_shard_size`. */
export const DEFAULT_MAX_SHARD_BYTES = 5e9;

/**
 * Writes a checkpoint as safetensors: to `out` itself when it ends in `.safetensors` (one
 * file, weights only), otherwise as a Hugging Face directory (config.json, side files,
 * `model.safetensors` or shards plus `model.safetensors.index.json`). Streams chunk by chunk.
 */
export async function exportSafetensors(checkpoint: Checkpoint, out: string, options: SafetensorsExportOptions = {}): Promise<void> {
  const plans = checkpoint.tensors.map((t) => ({ name: t.name, dtype: outputDtype(t, options.dtype), shape: t.shape }));
  const metadata = { format: "pt", ...checkpoint.metadata };
  options.progress?.start(totalSourceBytes(checkpoint.tensors));
  try {
    if (out.endsWith(".safetensors")) {
      if (options.maxShardBytes !== undefined) throw new UsageError("BAD_ARGUMENT", "--max-shard-size needs a directory output, not a .safetensors file", { file: out });
      await refuseExisting(out, options.overwrite ?? false);
      await writeShard(out, checkpoint.tensors, plans, metadata, new ChunkStream(options.progress, options.chunkBytes));
      return;
    }
    const dir = await AtomicDirectory.create(out, { overwrite: options.overwrite ?? false });
    try {
      await writeDirectory(dir, checkpoint, plans, metadata, options);
    } catch (error) {
      await dir.abort();
      throw error;
    }
    await dir.commit();
  } finally {
    options.progress?.finish();
  }
}

async function writeDirectory(dir: AtomicDirectory, checkpoint: Checkpoint, plans: TensorPlan[], metadata: Record<string, string>, options: SafetensorsExportOptions): Promise<void> {
  const shards = planShards(plans, options.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES);
  const byName = new Map(checkpoint.tensors.map((t) => [t.name, t]));
  const stream = new ChunkStream(options.progress, options.chunkBytes);
  const weightMap: Record<string, string> = {};
  for (const [i, shard] of shards.entries()) {
    const fileName = shards.length === 1 ? SINGLE_WEIGHTS_FILE : shardFileName(i, shards.length);
    await writeShard(dir.file(fileName), shard.map((p) => byName.get(p.name)!), shard, metadata, stream);
    for (const p of shard) weightMap[p.name] = fileName;
  }
  if (shards.length > 1) {
    const totalSize = plans.reduce((sum, p) => sum + planByteLength(p), 0);
    const totalParameters = plans.reduce((sum, p) => sum + Number(elementCount(p.shape)), 0);
    const sorted = Object.fromEntries(Object.entries(weightMap).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    await writeFileAtomic(dir.file(INDEX_FILE), JSON.stringify({ metadata: { total_size: totalSize, total_parameters: totalParameters }, weight_map: sorted }, null, 2) + "\n");
  }
  const packed = checkpoint.tensors.find((t) => t.packed !== undefined);
  const configText = denseConfigText(checkpoint.rawConfigText, packed !== undefined, options.dtype, packed?.dtype as TargetFloatDType | undefined);
  if (configText !== undefined) await writeFileAtomic(dir.file("config.json"), configText);
  for (const [name, bytes] of checkpoint.sideFiles) await writeFileAtomic(dir.file(name), bytes);
}

async function writeShard(path: string, entries: readonly TensorEntry[], plans: TensorPlan[], metadata: Record<string, string>, stream: ChunkStream): Promise<void> {
  const writer = await SafetensorsWriter.create(path, plans, metadata);
  try {
    for (const [i, entry] of entries.entries()) {
      for await (const chunk of stream.chunks(entry, plans[i]!.dtype)) await writer.write(entry.name, chunk);
    }
  } catch (error) {
    await writer.abort();
    throw error;
  }
  await writer.finish();
}

/**
 * Splits tensors, in order, into shards of at most `maxShardBytes` (a tensor larger than the
 * cap gets a shard of its own), as transformers' `shard_checkpoint` does.
 */
export function planShards(plans: readonly TensorPlan[], maxShardBytes: number): TensorPlan[][] {
  const shards: TensorPlan[][] = [];
  let current: TensorPlan[] = [];
  let currentBytes = 0;
  for (const plan of plans) {
    const bytes = planByteLength(plan);
    if (current.length > 0 && currentBytes + bytes > maxShardBytes) {
      shards.push(current);
      current = [];
      currentBytes = 0;
    }
    current.push(plan);
    currentBytes += bytes;
  }
  if (current.length > 0 || shards.length === 0) shards.push(current);
  return shards;
}

export function shardFileName(index: number, count: number): string {
  const pad = (n: number) => String(n).padStart(5, "0");
  return `model-${pad(index + 1)}-of-${pad(count)}.safetensors`;
}
