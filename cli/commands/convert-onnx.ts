import { UsageError } from "../../formats/errors.js";
import type { Checkpoint } from "../../converters/checkpoint.js";
import type { DecoderLinearReport, PackedLinearExport } from "../../converters/onnx/decoder-graph.js";
import { exportOnnxDecoder } from "../../converters/onnx/export-decoder.js";
import type { VptqSemantics } from "../../formats/vptq/reference.js";
import { exportOnnxLayers } from "../../converters/onnx/export-per-layer.js";
import { EXIT } from "../errors.js";

/**
 * `lmpack convert <src> --to onnx [--per-layer]`: the whole decoder as one onnxruntime model
 * folder (model.onnx, genai_config.json, tokenizer files), or with --per-layer one model per
 * packed linear. Argument checks and reporting only; the exporters are in
 * converters/onnx.
 */

export interface OnnxConvertArgs {
  src: string;
  out: string;
  dtype: string | undefined;
  perLayer: boolean;
  onnxPacked: PackedLinearExport;
  vptqDequant: VptqSemantics;
  force: boolean;
  json: boolean;
}

export async function convertToOnnx(checkpoint: Checkpoint, args: OnnxConvertArgs, started: number): Promise<number> {
  if (args.dtype !== undefined) throw new UsageError("BAD_ARGUMENT", "--to onnx writes float32 weights (and MatMulNBits for integer layers); --dtype does not apply");
  const say = (line: string) => {
    if (!args.json) console.error(line);
  };
  const seconds = () => Number(((performance.now() - started) / 1000).toFixed(3));
  if (args.perLayer) {
    const layers = await exportOnnxLayers(checkpoint, args.out, {
      overwrite: args.force,
      vptqSemantics: args.vptqDequant,
      onLayer: (r) => say(`${r.file} ${r.how === "matmul-nbits" ? matMulNBitsText(r.bits!, r.fieldBits, r.blockSize!, false) : `${r.how} dequantization subgraph + MatMul`} (${r.bytes} bytes)`),
    });
    if (args.json) console.log(JSON.stringify({ ok: true, source: args.src, to: "onnx", perLayer: true, out: args.out, seconds: seconds(), layers }, null, 2));
    else say(`lmpack: wrote ${args.out} (${layers.length} layer models, ${seconds().toFixed(1)} s)`);
    return EXIT.ok;
  }
  const result = await exportOnnxDecoder(checkpoint, args.out, {
    overwrite: args.force,
    packedLinears: args.onnxPacked,
    vptqSemantics: args.vptqDequant,
    onLinear: (r) => say(`${r.name} ${linearText(r)}`),
  });
  for (const w of result.warnings) say(`lmpack: warning: ${w}`);
  if (args.json) console.log(JSON.stringify({ ok: true, source: args.src, to: "onnx", perLayer: false, out: args.out, seconds: seconds(), ...result }, null, 2));
  else say(`lmpack: wrote ${args.out} (${result.files.join(", ")}; ${(result.weightBytes / 2 ** 20).toFixed(1)} MiB of weights${result.external ? " in model.onnx.data" : ""}, ${seconds().toFixed(1)} s)`);
  return EXIT.ok;
}

function linearText(r: DecoderLinearReport): string {
  if (r.how === "matmul-nbits") return matMulNBitsText(r.bits!, r.fieldBits, r.blockSize!, r.actOrder ?? false);
  if (r.how === "dequant-graph") return `${r.format} dequantization subgraph + MatMul (exact)`;
  return "MatMul float32";
}

/** E.g. "MatMulNBits 3-bit codes in 4-bit fields (exact, +1 bit/weight) block 128, act-order columns regrouped". */
function matMulNBitsText(bits: number, fieldBits: number | undefined, blockSize: number, actOrder: boolean): string {
  const width = fieldBits === undefined ? `${bits}-bit` : `${bits}-bit codes in ${fieldBits}-bit fields (exact, +${fieldBits - bits} bit/weight: onnxruntime runs 2, 4 and 8 bits)`;
  return `MatMulNBits ${width} block ${blockSize}${actOrder ? ", act-order columns regrouped (input gathered)" : ""}`;
}
