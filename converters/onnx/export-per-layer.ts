import { UsageError } from "../../formats/errors.js";
import type { Checkpoint, TensorEntry } from "../checkpoint.js";
import { AtomicDirectory, writeFileAtomic } from "../io/atomic.js";
import { encodeDequantLayer, type PackedLinear } from "./dequant-layer.js";
import { encodeMatMulNBitsLayer } from "./export-layer.js";
import { matMulNBitsBitsFor } from "./matmul-nbits.js";
import type { VptqSemantics } from "../../formats/vptq/reference.js";

/**
 * Every packed linear of a checkpoint as its own ONNX model, `<module>.onnx` in one folder: the
 * unit-level export, for running or inspecting single layers. Integer groups become one-node
 * MatMulNBits models (export-layer.ts); VPTQ, SpQR and FPx layers their exact dequantization
 * subgraph feeding a MatMul (dequant-layer.ts). Float tensors are not written. The folder
 * appears only when complete.
 */

export interface OnnxLayerReport {
  /** Module name, e.g. "model.layers.0.mlp.up_proj". */
  name: string;
  /** File name inside the folder. */
  file: string;
  bytes: number;
  /** "matmul-nbits" or the representation dequantized in the graph. */
  how: "matmul-nbits" | "vptq" | "spqr" | "fpx";
  /** MatMulNBits: the codes' bits, the field width (4 for 3-bit codes) and the block size. */
  bits?: number;
  fieldBits?: number;
  blockSize?: number;
}

const PACKED = new Set(["int-group", "vptq", "spqr", "fpx"]);

export async function exportOnnxLayers(checkpoint: Checkpoint, outDir: string, options: { overwrite?: boolean; vptqSemantics?: VptqSemantics; onLayer?: (report: OnnxLayerReport) => void } = {}): Promise<OnnxLayerReport[]> {
  const layers = checkpoint.tensors.filter((t) => PACKED.has(t.packed?.representation ?? "dense"));
  if (layers.length === 0) {
    throw new UsageError("BAD_SOURCE", "no packed linears (integer groups, VPTQ, SpQR, FPx) to write as per-layer models (quantize the checkpoint first, or export the whole decoder)", { file: checkpoint.location });
  }
  const dir = await AtomicDirectory.create(outDir, { overwrite: options.overwrite ?? false });
  const reports: OnnxLayerReport[] = [];
  try {
    for (const entry of layers) {
      const name = entry.name.replace(/\.weight$/, "");
      const { bytes, report } = await layerModel(entry, name, options.vptqSemantics ?? "cuda");
      const file = `${name}.onnx`;
      await writeFileAtomic(dir.file(file), bytes);
      const full = { name, file, bytes: bytes.length, ...report };
      reports.push(full);
      options.onLayer?.(full);
    }
    await dir.commit();
    return reports;
  } catch (error) {
    await dir.abort();
    throw error;
  }
}

async function layerModel(entry: TensorEntry, name: string, semantics: VptqSemantics): Promise<{ bytes: Uint8Array; report: Omit<OnnxLayerReport, "name" | "file" | "bytes"> }> {
  const packed = entry.packed!;
  if (packed.representation === "int-group") {
    const tensor = await packed.load();
    const { bits, groupSize } = tensor.params;
    const fieldBits = matMulNBitsBitsFor({ ...tensor, gIdx: undefined }, name);
    return { bytes: encodeMatMulNBitsLayer(tensor, { tensorName: name }), report: { how: "matmul-nbits", bits, blockSize: groupSize, ...(fieldBits === bits ? {} : { fieldBits }) } };
  }
  const layer: PackedLinear = packed.representation === "vptq" ? { format: "vptq", tensor: await packed.load(), semantics }
    : packed.representation === "spqr" ? { format: "spqr", tensor: await packed.load() }
    : { format: "fpx", tensor: await packed.load() };
  return { bytes: encodeDequantLayer(layer, { tensorName: name }), report: { how: layer.format } };
}
