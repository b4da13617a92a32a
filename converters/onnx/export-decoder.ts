import { ConversionError, UsageError } from "../../formats/errors.js";
import type { Checkpoint, TensorEntry } from "../checkpoint.js";
import { AtomicDirectory, writeFileAtomic } from "../io/atomic.js";
import { externalStore, GraphBuilder, inlineStore, type InitializerStore } from "./decoder-builder.js";
import { buildDecoderGraph, requireDecoderConfig, type DecoderLinearReport, type PackedLinearExport } from "./decoder-graph.js";
import { genaiConfig } from "./genai-config.js";
import { encodeModel, modelProto } from "./model.js";
import type { VptqSemantics } from "../../formats/vptq/reference.js";

/**
 * Checkpoint → a folder onnxruntime (and onnxruntime-genai) loads:
 *
 *   model.onnx         the whole decoder (decoder-graph.ts), IR 8, opsets ai.onnx 17 + com.microsoft 1
 *   model.onnx.data    its weights, when stored externally (4096-aligned offsets, decoder-builder.ts)
 *   genai_config.json  onnxruntime-genai's description of the graph (genai-config.ts)
 *   tokenizer.json …   the checkpoint's side files, byte for byte
 *
 * Weights are read and written one tensor at a time; with external data the graph in memory
 * holds no weight bytes, so memory stays at about one layer whatever the model's size. The
 * folder appears only when complete (AtomicDirectory).
 */

export const MODEL_FILE = "model.onnx";
export const DATA_FILE = "model.onnx.data";
export const GENAI_CONFIG_FILE = "genai_config.json";
/**
 * "auto" stores weights externally above this: protobuf caps a message at 2 GiB, and a model
 * file close to it is slow to parse; onnxruntime-genai's builder likewise externalises big models.
 */
export const EXTERNAL_DATA_THRESHOLD_BYTES = 1.5 * 2 ** 30;
/** protobuf's hard limit on one message (the ModelProto with inline weights). */
export const MAX_INLINE_MODEL_BYTES = 2 ** 31 - 1;

export interface OnnxDecoderExportOptions {
  /** "auto" (default): external above EXTERNAL_DATA_THRESHOLD_BYTES of weights; "always"; "never". */
  externalData?: "auto" | "always" | "never";
  /** Positions the model serves (rotary caches, genai context_length); default max_position_embeddings. */
  contextLength?: number;
  overwrite?: boolean;
  /** VPTQ / SpQR / FPx linears: exact dequantization subgraphs (default) or float32 weights. */
  packedLinears?: PackedLinearExport;
  /** Rounding of VPTQ dequantization subgraphs ("cuda" by default). */
  vptqSemantics?: VptqSemantics;
  onLinear?: (report: DecoderLinearReport) => void;
}

export interface OnnxDecoderExportResult {
  /** Bytes of model.onnx. */
  modelBytes: number;
  /** Bytes of weight data (inline or external, alignment padding excluded). */
  weightBytes: number;
  external: boolean;
  contextLength: number;
  linears: DecoderLinearReport[];
  /** Files written, relative to the output folder. */
  files: string[];
  warnings: string[];
}

export async function exportOnnxDecoder(checkpoint: Checkpoint, outDir: string, options: OnnxDecoderExportOptions = {}): Promise<OnnxDecoderExportResult> {
  const config = requireDecoderConfig(checkpoint);
  const file = checkpoint.location;
  const warnings: string[] = [];
  const contextLength = chooseContextLength(checkpoint, options.contextLength, warnings);
  const packedLinears = options.packedLinears ?? "dequant-graph";
  const estimate = estimateWeightBytes(checkpoint.tensors, packedLinears);
  const mode = options.externalData ?? "auto";
  const external = mode === "always" || (mode === "auto" && estimate > EXTERNAL_DATA_THRESHOLD_BYTES);
  if (!external && estimate > MAX_INLINE_MODEL_BYTES) {
    throw new UsageError("BAD_ARGUMENT", `about ${(estimate / 2 ** 30).toFixed(2)} GiB of weights cannot be inline: protobuf caps a model at 2 GiB; use external data`, { file });
  }
  const linears: DecoderLinearReport[] = [];
  const dir = await AtomicDirectory.create(outDir, { overwrite: options.overwrite ?? false });
  let store: InitializerStore | undefined;
  try {
    store = external ? await externalStore(dir.file(DATA_FILE), DATA_FILE) : inlineStore();
    const g = new GraphBuilder(store);
    const graph = await buildDecoderGraph(g, checkpoint, {
      contextLength,
      packedLinears,
      ...(options.vptqSemantics === undefined ? {} : { vptqSemantics: options.vptqSemantics }),
      onLinear: (report) => {
        linears.push(report);
        options.onLinear?.(report);
      },
    });
    await store.close();
    const weightBytes = store.dataBytes;
    store = undefined;
    const count = (how: DecoderLinearReport["how"]) => linears.filter((l) => l.how === how).length;
    const summary = `${config.architecture} decoder, ${config.numLayers} layers, ${count("matmul-nbits")} MatMulNBits linears, ${count("dequant-graph")} dequantized in the graph, exported by lmpack`;
    const bytes = encodeModel(modelProto(graph, summary));
    if (bytes.length > MAX_INLINE_MODEL_BYTES) throw new ConversionError("NOT_REPRESENTABLE", "model.onnx would exceed protobuf's 2 GiB limit; use external data", { file, actual: bytes.length });
    await writeFileAtomic(dir.file(MODEL_FILE), bytes);
    const generation = checkpoint.sideFiles.get("generation_config.json");
    const genai = genaiConfig({ config, rawConfig: checkpoint.rawConfig, generationConfig: generation === undefined ? undefined : parseJsonObject(generation), contextLength, filename: MODEL_FILE });
    if (genai.model.eos_token_id === undefined) warnings.push("no eos_token_id in config.json or generation_config.json: genai_config.json has none");
    await writeFileAtomic(dir.file(GENAI_CONFIG_FILE), `${JSON.stringify(genai, null, 4)}\n`);
    for (const [name, side] of checkpoint.sideFiles) await writeFileAtomic(dir.file(name), side);
    if (!checkpoint.sideFiles.has("tokenizer.json")) warnings.push("no tokenizer.json in the source: onnxruntime-genai needs one beside the model");
    await dir.commit();
    const files = [MODEL_FILE, ...(external ? [DATA_FILE] : []), GENAI_CONFIG_FILE, ...checkpoint.sideFiles.keys()];
    return { modelBytes: bytes.length, weightBytes, external, contextLength, linears, files, warnings };
  } catch (error) {
    await store?.close().catch(() => undefined);
    await dir.abort();
    throw error;
  }
}

/**
 * max_position_embeddings unless asked otherwise. A sliding window (Mistral) shorter than that
 * caps it: the graph attends to every past position, which equals sliding-window attention
 * only while the sequence fits in the window.
 */
function chooseContextLength(checkpoint: Checkpoint, asked: number | undefined, warnings: string[]): number {
  const file = checkpoint.location;
  const window = checkpoint.rawConfig?.["sliding_window"];
  const slidingWindow = typeof window === "number" && Number.isInteger(window) && window > 0 ? window : undefined;
  const length = asked ?? checkpoint.config?.maxPositionEmbeddings;
  if (length === undefined) throw new UsageError("BAD_ARGUMENT", "config.json has no max_position_embeddings: give the context length", { file });
  if (!Number.isSafeInteger(length) || length < 1) throw new UsageError("BAD_ARGUMENT", "context length must be a positive integer", { file, actual: length });
  if (slidingWindow !== undefined && length > slidingWindow) {
    warnings.push(`context length capped at the sliding window (${slidingWindow} of ${length} positions): the graph has no sliding-window attention`);
    return slidingWindow;
  }
  return length;
}

/**
 * Weight bytes the export will hold: float32 for dense tensors, packed size for integer groups
 * (3-bit codes in 4-bit fields) and for the arrays of dequantized-in-graph layers.
 */
function estimateWeightBytes(tensors: readonly TensorEntry[], packedLinears: PackedLinearExport): number {
  return tensors.reduce((sum, t) => {
    const packed = t.packed;
    if (packed?.representation === "int-group") {
      const groups = Math.ceil(packed.inFeatures / packed.params.groupSize);
      const fieldBits = packed.params.bits === 3 ? 4 : packed.params.bits;
      return sum + (t.nElements * fieldBits) / 8 + groups * packed.outFeatures * 5;
    }
    if (packed !== undefined && packedLinears === "dequant-graph") return sum + packed.storedBytes;
    return sum + t.nElements * 4;
  }, 0);
}

function parseJsonObject(bytes: Uint8Array): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(new TextDecoder().decode(bytes));
    return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
