import { UsageError } from "../../formats/errors.js";
import type { Checkpoint } from "../../converters/checkpoint.js";
import { exportOnnxDecoder } from "../../converters/onnx/export-decoder.js";
import { exportOnnxLayers } from "../../converters/onnx/export-per-layer.js";
import { EXIT } from "../errors.js";

/**
 * `lmpack convert <src> --to onnx [--per-layer]`: the whole decoder as one onnxruntime model
 * folder (model.onnx, genai_config.json, tokenizer files), or with --per-layer one MatMulNBits
 * model per integer-group linear. Argument checks and reporting only; the exporters are in
 * converters/onnx.
 */

export interface OnnxConvertArgs {
  src: string;
  out: string;
  dtype: string | undefined;
  perLayer: boolean;
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
    const layers = await exportOnnxLayers(checkpoint, args.out, { overwrite: args.force, onLayer: (r) => say(`${r.file} MatMulNBits ${r.bits}-bit block ${r.blockSize} (${r.bytes} bytes)`) });
    if (args.json) console.log(JSON.stringify({ ok: true, source: args.src, to: "onnx", perLayer: true, out: args.out, seconds: seconds(), layers }, null, 2));
    else say(`lmpack: wrote ${args.out} (${layers.length} MatMulNBits layer models, ${seconds().toFixed(1)} s)`);
    return EXIT.ok;
  }
  const result = await exportOnnxDecoder(checkpoint, args.out, {
    overwrite: args.force,
    onLinear: (r) => say(`${r.name} ${r.how === "matmul-nbits" ? `MatMulNBits ${r.bits}-bit block ${r.blockSize}` : "MatMul float32"}`),
  });
  for (const w of result.warnings) say(`lmpack: warning: ${w}`);
  if (args.json) console.log(JSON.stringify({ ok: true, source: args.src, to: "onnx", perLayer: false, out: args.out, seconds: seconds(), ...result }, null, 2));
  else say(`lmpack: wrote ${args.out} (${result.files.join(", ")}; ${(result.weightBytes / 2 ** 20).toFixed(1)} MiB of weights${result.external ? " in model.onnx.data" : ""}, ${seconds().toFixed(1)} s)`);
  return EXIT.ok;
}
