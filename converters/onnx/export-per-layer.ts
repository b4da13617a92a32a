import { UsageError } from "../../formats/errors.js";
import type { Checkpoint } from "../checkpoint.js";
import { AtomicDirectory, writeFileAtomic } from "../io/atomic.js";
import { encodeMatMulNBitsLayer } from "./export-layer.js";

/**
 * Every integer-group linear of a checkpoint as its own one-node MatMulNBits model
 * (export-layer.ts), `<module>.onnx` in one folder: the unit-level export, for running or
 * inspecting single layers. Float tensors are not written. The folder appears only when complete.
 */

export interface OnnxLayerReport {
  /** Module name, e.g. "model.layers.0.mlp.up_proj". */
  name: string;
  /** File name inside the folder. */
  file: string;
  bytes: number;
  bits: number;
  blockSize: number;
}

export async function exportOnnxLayers(checkpoint: Checkpoint, outDir: string, options: { overwrite?: boolean; onLayer?: (report: OnnxLayerReport) => void } = {}): Promise<OnnxLayerReport[]> {
  const layers = checkpoint.tensors.filter((t) => t.packed?.representation === "int-group");
  if (layers.length === 0) {
    throw new UsageError("BAD_SOURCE", "no integer-group linears to write as per-layer MatMulNBits models (quantize the checkpoint first, or export the whole decoder)", { file: checkpoint.location });
  }
  const dir = await AtomicDirectory.create(outDir, { overwrite: options.overwrite ?? false });
  const reports: OnnxLayerReport[] = [];
  try {
    for (const entry of layers) {
      if (entry.packed?.representation !== "int-group") continue;
      const tensor = await entry.packed.load();
      const name = entry.name.replace(/\.weight$/, "");
      const bytes = encodeMatMulNBitsLayer(tensor, { tensorName: name });
      const file = `${name}.onnx`;
      await writeFileAtomic(dir.file(file), bytes);
      const report = { name, file, bytes: bytes.length, bits: tensor.params.bits, blockSize: tensor.params.groupSize };
      reports.push(report);
      options.onLayer?.(report);
    }
    await dir.commit();
    return reports;
  } catch (error) {
    await dir.abort();
    throw error;
  }
}
