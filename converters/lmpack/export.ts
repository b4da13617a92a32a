import type { DType, TargetFloatDType } from "../../formats/dtype.js";
import type { Checkpoint, TensorEntry } from "../checkpoint.js";
import { encodeIntGroup } from "./int-group.js";
import { encodeFpx } from "./fpx.js";
import { encodeSpqr } from "./spqr.js";
import { encodeVptq } from "./vptq.js";
import type { ModelConfig } from "../hf/config.js";
import { refuseExisting } from "../io/atomic.js";
import { ChunkStream, configTextWithDtype, outputDtype, totalSourceBytes, type ProgressSink } from "../tensor-stream.js";
import type { ChecksumName } from "./checksum.js";
import { encodeNotes } from "./notes.js";
import { dtypeToProto } from "./proto.js";
import { LmpackWriter } from "./writer.js";
import { PRODUCER } from "../producer.js";

export interface LmpackExportOptions {
  dtype?: TargetFloatDType;
  checksum?: ChecksumName;
  overwrite?: boolean;
  progress?: ProgressSink;
  /** Streaming chunk size (default 16 MB); tests use tiny ones to exercise chunk boundaries. */
  chunkBytes?: number;
}

/** Writes a checkpoint into one .lmpack file, streaming tensor by tensor, chunk by chunk. */
export async function exportLmpack(checkpoint: Checkpoint, outPath: string, options: LmpackExportOptions = {}): Promise<void> {
  await refuseExisting(outPath, options.overwrite ?? false);
  const writer = await LmpackWriter.create(outPath, options.checksum === undefined ? {} : { checksum: options.checksum });
  options.progress?.start(totalSourceBytes(checkpoint.tensors));
  const stream = new ChunkStream(options.progress, options.chunkBytes);
  try {
    for (const entry of checkpoint.tensors) {
      if (entry.packed !== undefined) {
        await writePacked(writer, entry, options.progress);
        continue;
      }
      const dtype = outputDtype(entry, options.dtype);
      const blob = await writer.writeBlob({ role: "data", dtype, shape: entry.shape }, stream.chunks(entry, dtype));
      // Record a dtype change: an f32 tensor that came from bf16 is known to be exactly bf16-representable.
      const notes = dtype === entry.dtype ? entry.notes : { ...entry.notes, sourceDtype: entry.notes?.["sourceDtype"] ?? entry.dtype };
      writer.addTensor({ name: entry.name, shape: entry.shape, blobs: [blob], dense: { dtype: dtypeToProto(dtype) }, notesMsgpack: encodeNotes(notes) });
    }
    for (const [name, bytes] of checkpoint.sideFiles) await writer.addSideFile(name, bytes);
    const config = checkpoint.config;
    await writer.finish({
      producer: PRODUCER,
      // A dtype conversion changes only config.json's dtype value, which the proto config does not carry.
      ...(config === undefined ? {} : { config: configToProto(config) }),
      rawConfigJson: configTextWithDtype(checkpoint.rawConfigText, options.dtype) ?? "",
      metadata: checkpoint.metadata,
    });
  } catch (error) {
    await writer.abort();
    throw error;
  } finally {
    options.progress?.finish();
  }
}

/** A packed tensor keeps its representation: its arrays move as they are. */
async function writePacked(writer: LmpackWriter, entry: TensorEntry, progress: ProgressSink | undefined): Promise<void> {
  const packed = entry.packed!;
  let encoded: { blobs: { role: string; dtype: DType; shape: number[]; bytes: Uint8Array }[] };
  let representation: Record<string, unknown>;
  if (packed.representation === "int-group") {
    const e = encodeIntGroup(await packed.load(), packed.sourceLayout, entry.name);
    [encoded, representation] = [e, { intGroup: e.message }];
  } else if (packed.representation === "fpx") {
    const e = encodeFpx(await packed.load(), packed.sourceLayout, packed.codesFrom);
    [encoded, representation] = [e, { fpx: e.message }];
  } else if (packed.representation === "spqr") {
    const e = encodeSpqr(await packed.load(), packed.sourceLayout, entry.name);
    [encoded, representation] = [e, { spqr: e.message }];
  } else {
    const e = encodeVptq(await packed.load(), packed.sourceLayout);
    [encoded, representation] = [e, { vptq: e.message }];
  }
  const blobs = [];
  for (const b of encoded.blobs) blobs.push(await writer.writeBlob({ role: b.role, dtype: b.dtype, shape: b.shape }, [b.bytes]));
  progress?.advance(entry.byteLength, entry.name);
  writer.addTensor({ name: entry.name, shape: entry.shape, blobs, ...representation, notesMsgpack: encodeNotes(entry.notes) });
}

function configToProto(config: ModelConfig): Record<string, unknown> {
  return {
    architecture: config.architecture ?? "",
    modelType: config.modelType ?? "",
    hiddenSize: config.hiddenSize,
    intermediateSize: config.intermediateSize ?? 0,
    numLayers: config.numLayers,
    numHeads: config.numHeads,
    numKvHeads: config.numKvHeads,
    headDim: config.headDim,
    vocabSize: config.vocabSize,
    maxPositionEmbeddings: config.maxPositionEmbeddings ?? 0,
    ropeTheta: config.ropeTheta,
    rmsNormEps: config.rmsNormEps,
    tiedEmbeddings: config.tiedEmbeddings,
    attentionBias: config.attentionBias,
  };
}
