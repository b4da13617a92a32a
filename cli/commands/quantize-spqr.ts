import type { ArgumentsCamelCase } from "yargs";
import type { QuantizerDevice } from "./device.js";
import { withSecondOrderResources, type OpenedCheckpoint } from "./second-order-resources.js";
import { UsageError } from "../../formats/errors.js";
import { exportLmpack } from "../../converters/lmpack/export.js";
import { exportHfSpqr } from "../../converters/spqr/export-hf.js";
import { quantizeSpqrCheckpoint, type SpqrLayerReport } from "../../converters/spqr/quantize-checkpoint.js";
import { EXIT } from "../errors.js";
import { EMBEDDING_PROXY, openQuantizeJournal, type QuantizeArgs } from "./quantize.js";
import { followQuantized } from "./sequential-hessians.js";
import type { HessianSource } from "../../formats/second-order/hessian.js";

const SPQR_TARGETS = ["lmpack", "hf-spqr"];

/** `lmpack quantize --method spqr`: 3-bit 16x16 SpQR on the shared second-order engine. */
export async function quantizeSpqrToDisk(args: ArgumentsCamelCase<QuantizeArgs>): Promise<number> {
  if (!SPQR_TARGETS.includes(args.to)) throw new UsageError("BAD_ARGUMENT", `--method spqr writes ${SPQR_TARGETS.join(" or ")}`, { actual: args.to });
  if (args.hessians === undefined) throw new UsageError("BAD_ARGUMENT", `--method spqr needs --hessians (a store, or ${EMBEDDING_PROXY})`);
  if (args.bits !== undefined && args.bits !== 3) throw new UsageError("BAD_ARGUMENT", "--method spqr writes 3-bit codes (the SpQR layout's only width)", { actual: args.bits });
  if (!(args.outlierThreshold > 0)) throw new UsageError("BAD_ARGUMENT", "--outlier-threshold must be positive (Infinity: no outliers)", { actual: args.outlierThreshold });
  return withSecondOrderResources(args, (device) => `lmpack: H's factorization and the GPTQ loop on ${device.description}`, (device, checkpoint, store) => quantizeAndExport(args, device, checkpoint, store));
}

/** The run itself, over resources the caller opened and closes: the journal is its own. */
async function quantizeAndExport(args: ArgumentsCamelCase<QuantizeArgs>, device: QuantizerDevice, checkpoint: OpenedCheckpoint, store: HessianSource): Promise<number> {
  const journal = await openQuantizeJournal(args, checkpoint, device.description);
  try {
    const layers: SpqrLayerReport[] = [];
    const quantized = followQuantized(store, quantizeSpqrCheckpoint(checkpoint, {
      hessians: store,
      journal,
      ...(device.energies === undefined ? {} : { energies: device.energies }),
      quantizer: { outlierRelativeThreshold: args.outlierThreshold, statsSearch: args.statsSearch, permutationOrder: args.permutation, ...(args.damp === undefined ? {} : { percDamp: args.damp }), ...(device.deferred === undefined ? {} : { deferred: device.deferred }), ...(device.factorize === undefined ? {} : { factorize: device.factorize }) },
      onLayer: (r) => {
        layers.push(r);
        const from = r.resumed === true ? ", from the journal" : "";
        if (!args.json) console.error(`[${layers.length}/${total}] ${r.name} ${r.outFeatures}x${r.inFeatures} spqr: output error ${((r.relativeOutputError ?? 0) * 100).toFixed(3)}%, ${(r.outlierShare * 100).toFixed(2)}% outliers, ${r.bitsPerWeight.toFixed(3)} bits/w (${r.seconds.toFixed(2)} s${from})`);
      },
    }));
    const total = quantized.tensors.filter((t) => t.packed !== undefined).length;
    if (args.to === "lmpack") await exportLmpack(quantized, args.out, { overwrite: args.force });
    else await exportHfSpqr(quantized, args.out, { overwrite: args.force });
    await journal.finish();
    if (args.json) console.log(JSON.stringify({ ok: true, out: args.out, method: "spqr", resumedLayers: journal.resumedLayers, outlierThreshold: args.outlierThreshold, layers }, null, 2));
    else console.error(`lmpack: wrote ${args.out} (${layers.length} layers, ${layers.reduce((s, r) => s + r.seconds, 0).toFixed(1)} s)`);
    return EXIT.ok;
  } finally {
    await journal.close();
  }
}
