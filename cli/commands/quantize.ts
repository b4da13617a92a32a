import type { ArgumentsCamelCase, Argv } from "yargs";
import { UsageError } from "../../formats/errors.js";
import { INT_BITS, type IntBits } from "../../formats/int-group/types.js";
import type { HessianSource } from "../../formats/second-order/hessian.js";
import { openCheckpoint } from "../../converters/open.js";
import { exportLmpack } from "../../converters/lmpack/export.js";
import { exportHfInt, HF_INT_TARGETS } from "../../converters/int-group/export-hf.js";
import { quantizeCheckpoint, type IntMethod, type LayerQuantReport } from "../../converters/int-group/quantize-checkpoint.js";
import { openHessianStore } from "../../converters/hessians/store.js";
import { isQuipHessianSpec, openQuipHessians } from "../../converters/hessians/quip-import.js";
import { embeddingProxyHessians } from "../../converters/hessians/embedding-proxy.js";
import type { GpuEngine } from "../../kernels/engine.js";
import { DEVICE_CHOICES, openQuantizerDevice, type DeviceChoice } from "./device.js";
import { createHash } from "node:crypto";
import { refuseExisting } from "../../converters/io/atomic.js";
import { LayerJournal } from "../../converters/io/journal.js";
import { EXIT } from "../errors.js";
import { quantizeFpxToDisk } from "./quantize-fpx.js";
import { quantizeSpqrToDisk } from "./quantize-spqr.js";
import { quantizeVptqToDisk } from "./quantize-vptq.js";
import { checkSequentialArgs, followQuantized, openSequentialHessians, SEQUENTIAL, SEQUENTIAL_OPTIONS, sequentialJournalIdentity, type SequentialCalibrationArgs } from "./sequential-hessians.js";
import type { CodesFrom } from "../../formats/fpx/types.js";
import { blockJournalIdentity, blockObjectiveWantsGpu, checkBlockObjectiveArgs, OBJECTIVES, signRoundBlockResults, type Objective } from "./signround-block.js";

const TARGETS = ["lmpack", "hf-gptq", "hf-autoround", "hf-awq", "hf-fp6", "hf-spqr", "hf-vptq"] as const;

export interface QuantizeArgs extends SequentialCalibrationArgs {
  src: string;
  method: IntMethod | "fp6" | "spqr" | "vptq";
  objective: Objective;
  bits: number | undefined;
  groupSize: number;
  sym: boolean;
  hessians: string | undefined;
  actOrder: boolean;
  damp: number | undefined;
  device: DeviceChoice;
  iters: number;
  format: string;
  codesFrom: CodesFrom;
  outlierThreshold: number;
  statsSearch: boolean;
  permutation: "act_order" | "identity";
  vectorLen: number;
  centroids: number;
  resCentroids: number;
  outlierPct: number;
  seed: number;
  kmeansIters: number;
  kmeansInit: "kmeans++" | "random";
  codebookRefit: "auto" | "on" | "off";
  refitRounds: number;
  normHessian: boolean;
  to: (typeof TARGETS)[number];
  out: string;
  force: boolean;
  resume: boolean;
  json: boolean;
}

export const EMBEDDING_PROXY = "embedding-proxy";

export const quantizeCommand = {
  command: "quantize <src>",
  describe: "Quantize a dense checkpoint's decoder linears, layer by layer: integer groups (RTN, GPTQ, SignRound), FP6/FP5 (FP6-LLM tensor-core layout), SpQR or VPTQ",
  builder: (yargs: Argv) =>
    yargs
      .positional("src", { type: "string", demandOption: true, describe: "dense model directory, .safetensors or .lmpack file, or Hub id" })
      .option("method", { choices: ["rtn", "gptq", "signround", "fp6", "spqr", "vptq"] as const, demandOption: true, describe: "rtn: min-max round-to-nearest; gptq: second-order error propagation (needs --hessians); signround: signed-gradient rounding and clipping (layer output error with --hessians, weight MSE without); fp6: per-row scaled small floats (--format), FP6-LLM tensor-core layout; spqr: 3-bit 16x16 GPTQ with quantized statistics and fp16 outliers (needs --hessians); vptq: Hessian-weighted vector quantization (needs --hessians)" })
      .option("objective", { choices: OBJECTIVES, default: "layer" as const, describe: "signround: layer = each linear alone (output error with --hessians, weight MSE without); block = each decoder block's seven linears together, against the full-precision block's outputs on --calibration-text windows (--samples, --seq-len, --protocol, --tokenizer as --hessians sequential reads them; block forward/backward on the GPU with --device auto|cuda)" })
      .option("bits", { type: "number", describe: "code width: 2, 3, 4 or 8 (default 4); spqr: 3" })
      .option("group-size", { type: "number", default: 128, describe: "input columns per group; -1 = per output channel" })
      .option("sym", { type: "boolean", default: false, describe: "symmetric (auto-round's full-range signed grid; zero point 2^(bits-1))" })
      .option("hessians", { type: "string", describe: `Hessian store written by lmpack calibrate (safetensors, converters/hessians/store.ts); a QuIP#/VPTQ Hessian set (a directory of <layer>_qkv/_o/_up/_down.pt files, or one .pt; read without executing pickle); or "${EMBEDDING_PROXY}" for per-layer inputs computed from the model's own embedding rows; or "${SEQUENTIAL}" to compute them while quantizing, each layer's from the outputs of the already quantized layers before it (needs --calibration-text)` })
      .options(SEQUENTIAL_OPTIONS)
      .option("act-order", { type: "boolean", default: false, describe: "gptq: quantize columns by decreasing Hessian diagonal (desc_act, writes g_idx)" })
      .option("damp", { type: "number", describe: "gptq / spqr: damping, a fraction of mean(diag H) (default 0.01; SpQR's README recipe uses 1.0)" })
      .option("device", { choices: DEVICE_CHOICES, default: "auto" as const, describe: "gptq / spqr: run H's factorization and the GPTQ loop's deferred updates on the GPU; vptq: also k-means and the codebook searches; signround: the tuning steps (auto: when one is usable; cuda: fail without one)" })
      .option("iters", { type: "number", default: 200, describe: "signround: tuning steps" })
      .option("format", { type: "string", default: "e3m2", describe: "fp6: e3m2 (FP6, default), e2m3 (FP6), e3m1 or e2m2 (FP5); any eXmY of 3..7 bits" })
      .option("codes-from", { choices: ["stored-scale", "f32-scale"] as const, default: "stored-scale" as const, describe: "fp6: round codes against the stored fp16 scale (nearest grid point; default) or against the fp32 scale as torchao does (byte-identical to it)" })
      .option("outlier-threshold", { type: "number", default: 0.2, describe: "spqr: outlier criterion relative to mean(var(W[:,c]) / U[c,c]²); Infinity = no outliers" })
      .option("stats-search", { type: "boolean", default: true, describe: "spqr: choose each row's 3-bit scale and zero codes within ±2 of the rounded ones for the least Hessian-weighted error of its group's weights (rounding minimises the statistics' own error); --no-stats-search: round them, as the original" })
      .option("permutation", { choices: ["act_order", "identity"] as const, default: "act_order" as const, describe: "spqr: column order" })
      .option("vector-len", { type: "number", default: 8, describe: "vptq: output rows per vector" })
      .option("centroids", { type: "number", default: 256, describe: "vptq: main codebook size (a power of two)" })
      .option("res-centroids", { type: "number", default: 0, describe: "vptq: residual codebook size (a power of two; 0 = none)" })
      .option("outlier-pct", { type: "number", default: 0, describe: "vptq: percent of columns (highest diag H) with their own codebook" })
      .option("seed", { type: "number", default: 0, describe: "vptq: k-means seed (same seed, same bytes)" })
      .option("kmeans-iters", { type: "number", default: 100, describe: "vptq: k-means iteration cap" })
      .option("kmeans-init", { choices: ["kmeans++", "random"] as const, default: "kmeans++" as const, describe: "vptq: k-means seeding: kmeans++ (on the GPU with --device auto|cuda, the CPU's centres bit for bit; on the CPU minutes at 65,536 centroids), or random, the reference's (cuML init='random')" })
      .option("codebook-refit", { choices: ["auto", "on", "off"] as const, default: "auto" as const, describe: "vptq: after the loop, refit the codebooks by least squares to the whole Hessian (auto: without a residual codebook, where it lowers perplexity)" })
      .option("refit-rounds", { type: "number", default: 2, describe: "vptq: refit rounds, each after the first redoing the loop with the refitted codebooks" })
      .option("norm-hessian", { type: "boolean", default: true, describe: "vptq: quantize the normalised weight against D·H·D, the true output error (--no-norm-hessian: H itself, as the reference)" })
      .option("to", { choices: TARGETS, demandOption: true, describe: "output layout: lmpack, or hf-gptq / hf-autoround / hf-awq for integer methods, hf-fp6 for --method fp6, hf-spqr for --method spqr, hf-vptq for --method vptq" })
      .option("out", { type: "string", demandOption: true, describe: "output: .lmpack file or HF directory" })
      .option("force", { type: "boolean", default: false, describe: "replace an existing output (only after the new one is complete)" })
      .option("resume", { type: "boolean", default: true, describe: "rtn, gptq, signround, spqr, vptq: continue from the journal (.<out>.lmpack-journal) that a killed or failed run left beside --out, when it was made with the same options and sources; --no-resume starts over (fp6 runs at disk speed and keeps none)" }),
  handler: async (args: ArgumentsCamelCase<QuantizeArgs>): Promise<number> => {
    if (args.objective === "block") checkBlockObjectiveArgs(args);
    else checkSequentialArgs(args);
    // Before any work, journal included: opening the Hessian source (an embedding proxy,
    // sequential calibration) can take long, and the exporters refuse only once they start.
    await refuseExisting(args.out, args.force);
    if (args.method === "fp6") return quantizeFpxToDisk(args);
    if (args.method === "spqr") return quantizeSpqrToDisk(args);
    if (args.method === "vptq") return quantizeVptqToDisk(args);
    const own = { "hf-fp6": "fp6", "hf-spqr": "spqr", "hf-vptq": "vptq" } as Record<string, string>;
    if (own[args.to] !== undefined) throw new UsageError("BAD_ARGUMENT", `--to ${args.to} holds ${own[args.to]} layers; use it with --method ${own[args.to]}`);
    const bits = args.bits ?? 4;
    if (!INT_BITS.includes(bits as IntBits)) throw new UsageError("BAD_ARGUMENT", `--bits must be one of ${INT_BITS.join(", ")}`, { actual: bits });
    if (!Number.isSafeInteger(args.groupSize) || (args.groupSize < 1 && args.groupSize !== -1)) throw new UsageError("BAD_ARGUMENT", "--group-size must be a positive integer or -1", { actual: args.groupSize });
    if (args.method === "gptq" && args.hessians === undefined) throw new UsageError("BAD_ARGUMENT", `--method gptq needs --hessians (a store, or ${EMBEDDING_PROXY})`);
    // The device first: --device cuda without a GPU fails before anything is opened.
    // The block objective too (its forward/backward); without a GPU it says so on stderr.
    const device = args.method === "gptq" || (args.method === "signround" && (args.objective !== "block" || blockObjectiveWantsGpu(args.device))) ? await openQuantizerDevice(args.device) : undefined;
    const checkpoint = await openCheckpoint(args.src);
    let store: (HessianSource & { close?(): Promise<void> }) | undefined;
    let journal: LayerJournal | undefined;
    try {
      if (device !== undefined && !args.json) console.error(`lmpack: ${args.method === "gptq" ? "GPTQ factorization and loop" : "SignRound tuning"} on ${device.description}`);
      store = await hessianSource(args.hessians, checkpoint, args, device?.engine);
      journal = await openQuantizeJournal(args, checkpoint, device?.description);
      const tuningStarted = performance.now();
      const precomputed = args.objective === "block" ? await signRoundBlockResults(checkpoint, { ...args, bits: bits as IntBits }, args.json ? undefined : (line) => console.error(line), device?.engine) : undefined;
      const reports: LayerQuantReport[] = [];
      let index = 0;
      const quantized = followQuantized(store, quantizeCheckpoint(checkpoint, {
        method: args.method as IntMethod,
        bits: bits as IntBits,
        groupSize: args.groupSize,
        sym: args.sym,
        ...(store === undefined ? {} : { hessians: store }),
        actOrder: args.actOrder,
        percDamp: args.damp ?? 0.01,
        iters: args.iters,
        ...(device?.deferred === undefined ? {} : { deferred: device.deferred }),
        ...(device?.gptqLoop === undefined ? {} : { residentLoop: device.gptqLoop }),
        ...(device?.factorize === undefined ? {} : { factorize: device.factorize }),
        ...(device?.signround === undefined ? {} : { signroundBackend: device.signround }),
        ...(device?.energies === undefined ? {} : { energies: device.energies }),
        ...(precomputed === undefined ? {} : { precomputed }),
        journal,
        onLayer: (r) => {
          reports.push(r);
          if (!args.json) console.error(progressLine(++index, total, r));
        },
      }));
      const total = quantized.tensors.filter((t) => t.packed !== undefined).length;
      if (args.to === "lmpack") await exportLmpack(quantized, args.out, { overwrite: args.force });
      else await exportHfInt(quantized, args.out, { method: HF_INT_TARGETS[args.to as keyof typeof HF_INT_TARGETS], overwrite: args.force });
      await journal.finish();
      const summary = { ok: true, out: args.out, method: args.method, objective: args.objective, bits, groupSize: args.groupSize, sym: args.sym, resumedLayers: journal.resumedLayers, layers: reports };
      if (args.json) console.log(JSON.stringify(summary, null, 2));
      else {
        // Block-wise tuning happens before export, outside the per-layer reports' seconds.
        const tuningSeconds = precomputed === undefined ? 0 : (performance.now() - tuningStarted) / 1000;
        console.error(`lmpack: wrote ${args.out} (${reports.length} layers quantized, ${(tuningSeconds + reports.reduce((s, r) => s + r.seconds, 0)).toFixed(1)} s)`);
      }
      return EXIT.ok;
    } finally {
      await journal?.close();
      // The store before the device: a sequential store's GPU forward frees into the device's context.
      await store?.close?.();
      device?.close();
      await checkpoint.close();
    }
  },
};

/** `engine`: the quantizer's GPU, where sequential calibration then runs its forward and H += XᵀX. */
export async function hessianSource(spec: string | undefined, checkpoint: Awaited<ReturnType<typeof openCheckpoint>>, calibration?: SequentialCalibrationArgs & { json: boolean }, engine?: GpuEngine): Promise<(HessianSource & { close?(): Promise<void> }) | undefined> {
  if (spec === undefined) return undefined;
  if (spec === SEQUENTIAL && calibration !== undefined) return openSequentialHessians(checkpoint, calibration, calibration.json ? undefined : (line) => console.error(line), engine);
  if (spec !== EMBEDDING_PROXY) return (await isQuipHessianSpec(spec)) ? openQuipHessians(spec) : openHessianStore(spec);
  const entries = await embeddingProxyHessians(checkpoint);
  const byName = new Map(entries.flatMap((e) => [[e.name, e.hessian] as const, ...e.aliases.map((a) => [a, e.hessian] as const)]));
  return { get: async (name: string) => byName.get(name) };
}

/** Options that can change a quantized layer's values: a journal made under other values is discarded. */
const LAYER_OPTIONS = ["method", "bits", "groupSize", "sym", "hessians", "actOrder", "damp", "iters", "format", "codesFrom", "outlierThreshold", "statsSearch", "permutation", "vectorLen", "centroids", "resCentroids", "outlierPct", "seed", "kmeansIters", "kmeansInit", "codebookRefit", "refitRounds", "normHessian"] as const;

/**
 * The resume journal beside --out (converters/io/journal.ts), keyed to the layer options, the
 * device that computes (GPU and CPU results may differ in the last bit), config.json, the weight
 * files and a Hessian store: layers an interrupted run finished under the same key are reused.
 * The command's handler has already refused an existing --out.
 */
export async function openQuantizeJournal(args: ArgumentsCamelCase<QuantizeArgs>, checkpoint: Awaited<ReturnType<typeof openCheckpoint>>, deviceDescription: string | undefined): Promise<LayerJournal> {
  const options: Record<string, unknown> = Object.fromEntries(LAYER_OPTIONS.map((key) => [key, args[key] ?? null]));
  // A store is identified by its contents (in `sources`), not by how its path was spelled.
  if (args.hessians !== undefined && args.hessians !== EMBEDDING_PROXY) options["hessians"] = "store";
  options["device"] = deviceDescription ?? "cpu";
  options["config"] = createHash("sha256").update(checkpoint.rawConfigText ?? "").digest("hex");
  const sequential = sequentialJournalIdentity(args);
  // Keyed only when block-wise, so layer-wise journals keep their fingerprints.
  const block = blockJournalIdentity(args);
  Object.assign(options, sequential.options, block.options);
  const sources = [...checkpoint.files, ...(args.hessians === undefined || args.hessians === EMBEDDING_PROXY || args.hessians === SEQUENTIAL ? [] : [args.hessians]), ...sequential.sources, ...block.sources];
  const say = (line: string): void => {
    if (!args.json) console.error(line);
  };
  const journal = await LayerJournal.open(args.out, { command: "quantize", options, sources }, { resume: args.resume, log: say });
  if (journal.resumedLayers > 0) say(`lmpack: resuming ${journal.resumedLayers} ${journal.resumedLayers === 1 ? "layer" : "layers"} from ${journal.directory}`);
  return journal;
}

function progressLine(index: number, total: number, r: LayerQuantReport): string {
  const output = r.relativeOutputError === undefined ? "" : `, output error ${(r.relativeOutputError * 100).toFixed(3)}%`;
  return `[${index}/${total}] ${r.name} ${r.outFeatures}x${r.inFeatures} ${r.method}: weight MSE ${r.weightMse.toExponential(3)}${output} (${r.seconds.toFixed(2)} s${r.resumed === true ? ", from the journal" : ""})`;
}
