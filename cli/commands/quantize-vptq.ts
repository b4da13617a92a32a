import type { ArgumentsCamelCase } from "yargs";
import type { QuantizerDevice } from "./device.js";
import { withSecondOrderResources, type OpenedCheckpoint } from "./second-order-resources.js";
import type { VptqQuantizeOptions } from "../../formats/vptq/quantize.js";
import { UsageError } from "../../formats/errors.js";
import { indexBits } from "../../formats/vptq/types.js";
import { exportLmpack } from "../../converters/lmpack/export.js";
import { exportHfVptq } from "../../converters/vptq/export-hf.js";
import { quantizeVptqCheckpoint, type VptqLayerReport } from "../../converters/vptq/quantize-checkpoint.js";
import { EXIT } from "../errors.js";
import { EMBEDDING_PROXY, openQuantizeJournal, type QuantizeArgs } from "./quantize.js";
import { followQuantized } from "./sequential-hessians.js";
import type { HessianSource } from "../../formats/second-order/hessian.js";

const VPTQ_TARGETS = ["lmpack", "hf-vptq"];

/**
 * What microsoft/VPTQ's CUDA kernels accept (csrc/dequant.cu and quant_gemv.cu switch tables;
 * ../shared/ref/vptq-spqr.md 1.7): a checkpoint outside it loads but cannot run on a GPU.
 */
const CUDA_VECTOR_LENS = [2, 4, 6, 8, 10, 12, 16];
const CUDA_MAIN_INDEX_BITS = [4, 8, 10, 12, 13, 14, 15, 16];
const CUDA_RESIDUAL_INDEX_BITS = [0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 15, 16];
/** Codebooks costing more than this per weight are reported: the index bits no longer tell the size. */
const CODEBOOK_WARNING_BITS = 0.25;

/** `lmpack quantize --method vptq`: Hessian-weighted vector quantization on the shared second-order engine. */
export async function quantizeVptqToDisk(args: ArgumentsCamelCase<QuantizeArgs>): Promise<number> {
  if (!VPTQ_TARGETS.includes(args.to)) throw new UsageError("BAD_ARGUMENT", `--method vptq writes ${VPTQ_TARGETS.join(" or ")}`, { actual: args.to });
  if (args.hessians === undefined) throw new UsageError("BAD_ARGUMENT", `--method vptq needs --hessians (a store, or ${EMBEDDING_PROXY})`);
  if (args.to === "hf-vptq") checkCudaSupport(args.vectorLen, args.centroids, args.resCentroids);
  return withSecondOrderResources(args, (device) => `lmpack: ${device.kmeans === undefined ? "" : "k-means, codebook searches, "}H's factorization and the GPTQ loop on ${device.description}`, (device, checkpoint, store) => quantizeAndExport(args, device, checkpoint, store));
}

/** The run itself, over resources the caller opened and closes: the journal is its own. */
async function quantizeAndExport(args: ArgumentsCamelCase<QuantizeArgs>, device: QuantizerDevice, checkpoint: OpenedCheckpoint, store: HessianSource): Promise<number> {
  const journal = await openQuantizeJournal(args, checkpoint, device.description);
  try {
    const layers: VptqLayerReport[] = [];
    const quantized = followQuantized(store, quantizeVptqCheckpoint(checkpoint, {
      hessians: store,
      journal,
      ...(device.energies === undefined ? {} : { energies: device.energies }),
      quantizer: { vectorLen: args.vectorLen, numCentroids: args.centroids, numResCentroids: args.resCentroids, outlierPercent: args.outlierPct, seed: args.seed, kmeansIterations: args.kmeansIters, kmeansInit: args.kmeansInit, refitCodebooks: args.codebookRefit === "auto" ? "auto" : args.codebookRefit === "on", refitRounds: args.refitRounds, normHessian: args.normHessian, ...(args.damp === undefined ? {} : { percDamp: args.damp }), ...deviceOptions(device) },
      onLayer: (r) => {
        layers.push(r);
        const from = r.resumed === true ? ", from the journal" : "";
        if (args.json) return;
        console.error(`[${layers.length}/${total}] ${r.name} ${r.outFeatures}x${r.inFeatures} vptq: output error ${((r.relativeOutputError ?? 0) * 100).toFixed(3)}%, ${r.bitsPerWeight.toFixed(3)} bits/w (${r.seconds.toFixed(1)} s${from})`);
        if (r.codebookBitsPerWeight > CODEBOOK_WARNING_BITS) console.error(`lmpack: warning: ${r.name}: codebooks and norm cost ${r.codebookBitsPerWeight.toFixed(3)} bits/weight (index bits ${r.indexBitsPerWeight.toFixed(3)}): a smaller codebook may serve this layer better`);
      },
    }));
    const total = quantized.tensors.filter((t) => t.packed !== undefined).length;
    if (args.to === "lmpack") await exportLmpack(quantized, args.out, { overwrite: args.force });
    else await exportHfVptq(quantized, args.out, { overwrite: args.force });
    await journal.finish();
    if (args.json) console.log(JSON.stringify({ ok: true, out: args.out, method: "vptq", resumedLayers: journal.resumedLayers, layers }, null, 2));
    else console.error(`lmpack: wrote ${args.out} (${layers.length} layers, ${layers.reduce((s, r) => s + r.seconds, 0).toFixed(1)} s)`);
    return EXIT.ok;
  } finally {
    await journal.close();
  }
}

/** The device's parts of the VPTQ options (none on the CPU). */
function deviceOptions(device: QuantizerDevice): Pick<VptqQuantizeOptions, "deferred" | "factorize" | "kmeansBackend" | "codebookSearch" | "residentLoop"> {
  return {
    ...(device.deferred === undefined ? {} : { deferred: device.deferred }),
    ...(device.factorize === undefined ? {} : { factorize: device.factorize }),
    ...(device.kmeans === undefined ? {} : { kmeansBackend: device.kmeans }),
    ...(device.codebookSearch === undefined ? {} : { codebookSearch: device.codebookSearch }),
    ...(device.vptqLoop === undefined ? {} : { residentLoop: device.vptqLoop }),
  };
}

function checkCudaSupport(vectorLen: number, centroids: number, resCentroids: number): void {
  const ib = indexBits(centroids);
  const rb = indexBits(resCentroids);
  const refuse = (what: string, actual: unknown, allowed: number[]) => {
    throw new UsageError("BAD_ARGUMENT", `--to hf-vptq: the VPTQ CUDA kernels do not support ${what} (use --to lmpack to keep it anyway)`, { expected: allowed.join(", "), actual });
  };
  if (!CUDA_VECTOR_LENS.includes(vectorLen)) refuse("this vector length", vectorLen, CUDA_VECTOR_LENS);
  if (!CUDA_MAIN_INDEX_BITS.includes(ib)) refuse(`${ib}-bit main indices`, centroids, CUDA_MAIN_INDEX_BITS.map((b) => 2 ** b));
  if (!CUDA_RESIDUAL_INDEX_BITS.includes(rb)) refuse(`${rb}-bit residual indices`, resCentroids, CUDA_RESIDUAL_INDEX_BITS.map((b) => (b === 0 ? 0 : 2 ** b)));
}
