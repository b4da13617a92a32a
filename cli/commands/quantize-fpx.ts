import type { ArgumentsCamelCase } from "yargs";
import { UsageError } from "../../formats/errors.js";
import { parseFormat } from "../../formats/fpx/format.js";
import { openCheckpoint } from "../../converters/open.js";
import { exportLmpack } from "../../converters/lmpack/export.js";
import { exportHfFpx } from "../../converters/fpx/export-hf.js";
import { quantizeFpxCheckpoint, type FpxLayerReport } from "../../converters/fpx/quantize-checkpoint.js";
import { EXIT } from "../errors.js";
import type { QuantizeArgs } from "./quantize.js";

export const FPX_TARGETS = ["lmpack", "hf-fp6"] as const;

/** `lmpack quantize --method fp6`: per-row scaled FPx codes in the tensor-core layout. */
export async function quantizeFpxToDisk(args: ArgumentsCamelCase<QuantizeArgs>): Promise<number> {
  const format = parseFormat(args.format);
  if (!(FPX_TARGETS as readonly string[]).includes(args.to)) throw new UsageError("BAD_ARGUMENT", `--method fp6 writes ${FPX_TARGETS.join(" or ")}`, { actual: args.to });
  const checkpoint = await openCheckpoint(args.src);
  try {
    const layers: FpxLayerReport[] = [];
    const { checkpoint: quantized, kept } = quantizeFpxCheckpoint(checkpoint, {
      format,
      codesFrom: args.codesFrom,
      onLayer: (r) => {
        layers.push(r);
        if (!args.json) console.error(`[${layers.length}/${total}] ${r.name} ${r.outFeatures}x${r.inFeatures} ${format.name}: relative RMS error ${(r.relativeRmsError * 100).toFixed(3)}%, max |error| ${r.maxAbsError.toExponential(3)} (${r.seconds.toFixed(2)} s)`);
      },
    });
    const total = quantized.tensors.filter((t) => t.packed !== undefined).length;
    if (!args.json) for (const k of kept) console.error(`lmpack: kept ${k.name} in ${k.keptDtype} (${k.reason})`);
    if (args.to === "lmpack") await exportLmpack(quantized, args.out, { overwrite: args.force });
    else await exportHfFpx(quantized, args.out, { overwrite: args.force });
    if (args.json) console.log(JSON.stringify({ ok: true, out: args.out, method: "fp6", format: format.name, codesFrom: args.codesFrom, layers, kept }, null, 2));
    else console.error(`lmpack: wrote ${args.out} (${layers.length} layers ${format.name}, ${kept.length} kept in f16, ${layers.reduce((s, r) => s + r.seconds, 0).toFixed(1)} s)`);
    return EXIT.ok;
  } finally {
    await checkpoint.close();
  }
}
