import { readFile } from "node:fs/promises";
import { posix } from "node:path";
import type { Checkpoint } from "../checkpoint.js";
import type { ModelConfig } from "../hf/config.js";
import { openHfDirectory } from "../hf/import-local.js";
import { inspectCheckpoint, type InspectReport, type TensorSummary } from "../inspect.js";
import { ioErrorFor } from "../io/random-access.js";
import { openCheckpoint } from "../open.js";
import type { LocalFile } from "./local-files.js";

/**
 * What a folder to publish holds, read from its files (never assumed): each artifact's layout,
 * parameters, bits per weight and quantization, as lmpack's readers see them. An HF folder's
 * facts come from config.json's `quantization_config` and the packed tensors; an .lmpack
 * container's from its tensors' representations and notes; a GGUF file's from its ggml types and
 * `general.*` metadata; an ONNX model's from its MatMulNBits nodes.
 */

export type ArtifactKind = "hf" | "lmpack" | "gguf" | "onnx";

export interface PackedFacts {
  /** Method per the files: HF quant_method, the lmpack quantizer, GGUF ggml types; distinct values. */
  methods: string[];
  tensors: number;
  parameters: number;
  /** Bits the packed tensors occupy as stored (codes, scales, zeros, codebooks, outliers...) over their parameters. */
  storedBitsPerWeight: number;
  /** Each method's own count (inspect's effectiveBitsPerWeight), parameter-weighted. */
  methodBitsPerWeight: number;
  /** Distinct values of each setting over the packed tensors ("bits" → ["4"], "group size" → ["64"], ...). */
  settings: Record<string, string[]>;
  /** Integer code widths (int-group, SpQR, FPx total bits) for tags; VPTQ's index bits rounded to 0.1. */
  bits: number[];
}

export interface ArtifactFacts {
  /** Repo path of the file; "" for an HF folder at the repo root. */
  path: string;
  kind: ArtifactKind;
  config: ModelConfig | undefined;
  parameters: number;
  bytes: number;
  /** Storage bits over parameters, whole model (embeddings, norms, unquantized layers included). */
  bitsPerWeight: number;
  packed: PackedFacts | undefined;
  /** HF: config.json `quantization_config` as written. */
  quantConfig?: Record<string, unknown>;
  /** HF: config.json `_name_or_path` when it is set. */
  nameOrPath?: string;
  /** GGUF: parameters per ggml type, and the `general.*` keys. */
  ggmlTypes?: Record<string, number>;
  general?: Record<string, string>;
  /** GGUF holding lmpack's packed arrays (--keep-packed): valid GGUF, not runnable by llama.cpp. */
  keepPacked?: boolean;
  onnx?: OnnxFacts;
  /** ONNX producer_name and producer_version. */
  producer?: string;
  tensorNames: string[];
}

export interface OnnxFacts {
  matMulNBits: number;
  /** Distinct MatMulNBits field widths and block sizes. */
  bits: number[];
  blockSizes: number[];
  /** genai_config.json next to the model: onnxruntime-genai can run it. */
  genai: boolean;
  /** Whether the graph was decoded (models above MAX_ONNX_DECODE_BYTES are listed only). */
  inspected: boolean;
}

/** ONNX graphs with inline weights are decoded whole; bigger ones are listed without detail. */
export const MAX_ONNX_DECODE_BYTES = 512 * 1024 * 1024;
const HF_WEIGHTS = /^(model\.safetensors|model\.safetensors\.index\.json|[^/]+\.safetensors)$/;

export async function readArtifacts(dir: string, files: readonly LocalFile[]): Promise<ArtifactFacts[]> {
  const paths = new Set(files.map((f) => f.path));
  const artifacts: ArtifactFacts[] = [];
  if (paths.has("config.json") && [...paths].some((p) => HF_WEIGHTS.test(p))) artifacts.push(await withCheckpoint(openHfDirectory(dir), "", "hf"));
  for (const file of files) {
    if (file.diskPath === undefined) continue;
    if (file.path.endsWith(".lmpack")) artifacts.push(await withCheckpoint(openCheckpoint(file.diskPath), file.path, "lmpack"));
    else if (file.path.endsWith(".gguf")) artifacts.push(await withCheckpoint(openCheckpoint(file.diskPath), file.path, "gguf"));
    else if (file.path.endsWith(".onnx")) artifacts.push(await onnxArtifact(file, paths.has(posix.join(posix.dirname(file.path), "genai_config.json"))));
  }
  return artifacts;
}

async function withCheckpoint(opening: Promise<Checkpoint>, path: string, kind: ArtifactKind): Promise<ArtifactFacts> {
  const checkpoint = await opening;
  try {
    const report = inspectCheckpoint(checkpoint);
    const facts: ArtifactFacts = { path, kind, config: report.config, parameters: report.parameters, bytes: report.bytes, bitsPerWeight: report.bitsPerWeight, packed: packedFacts(report, kind), tensorNames: report.tensors.map((t) => t.name) };
    const quantConfig = checkpoint.rawConfig?.["quantization_config"];
    if (kind === "hf" && typeof quantConfig === "object" && quantConfig !== null) facts.quantConfig = quantConfig as Record<string, unknown>;
    const nameOrPath = checkpoint.rawConfig?.["_name_or_path"];
    if (typeof nameOrPath === "string" && nameOrPath !== "") facts.nameOrPath = nameOrPath;
    if (kind === "gguf") {
      facts.ggmlTypes = {};
      for (const t of report.tensors) {
        const type = typeof t.notes?.["ggmlType"] === "string" ? (t.notes["ggmlType"] as string) : t.dtype;
        facts.ggmlTypes[type] = (facts.ggmlTypes[type] ?? 0) + t.parameters;
      }
      facts.general = Object.fromEntries(Object.entries(checkpoint.metadata).filter(([key]) => key.startsWith("general.")));
      facts.keepPacked = Object.keys(checkpoint.metadata).some((key) => key.startsWith("lmpack.packed."));
    }
    return facts;
  } finally {
    await checkpoint.close();
  }
}

function packedFacts(report: InspectReport, kind: ArtifactKind): PackedFacts | undefined {
  const packed = report.tensors.filter((t) => t.quant !== undefined);
  if (packed.length === 0) return undefined;
  const parameters = packed.reduce((sum, t) => sum + t.parameters, 0);
  const settings = new Map<string, Set<string>>();
  const note = (key: string, value: string | number | boolean | undefined) => {
    if (value === undefined) return;
    if (!settings.has(key)) settings.set(key, new Set());
    settings.get(key)!.add(typeof value === "boolean" ? (value ? "yes" : "no") : String(value));
  };
  const methods = new Set<string>();
  const bits = new Set<number>();
  for (const t of packed) {
    const q = t.quant!;
    methods.add(methodOf(t, kind, report));
    note("representation", q.representation);
    if (q.vectorLen !== undefined) {
      note("vector length", q.vectorLen);
      note("centroids", q.centroids);
      note("residual centroids", q.resCentroids);
      bits.add(Math.round((q.indexBitsPerWeight ?? q.bits) * 10) / 10);
      continue;
    }
    bits.add(q.bits);
    note("bits", q.bits);
    if (q.format !== undefined) note("float format", q.format);
    else note("group size", q.groupSize === t.shape[1] ? "per channel" : q.groupSize);
    if (q.outlierShare === undefined && q.format === undefined) note("symmetric", q.sym);
    note("act-order", q.actOrder);
    note("scale dtype", q.scaleDtype);
  }
  const storedBytes = packed.reduce((sum, t) => sum + t.bytes, 0);
  const methodBits = packed.reduce((sum, t) => sum + t.quant!.effectiveBitsPerWeight * t.parameters, 0);
  return {
    methods: [...methods].sort(),
    tensors: packed.length,
    parameters,
    storedBitsPerWeight: (storedBytes * 8) / parameters,
    methodBitsPerWeight: methodBits / parameters,
    settings: Object.fromEntries([...settings].map(([key, values]) => [key, [...values].sort()])),
    bits: [...bits].sort((a, b) => a - b),
  };
}

/** The method as the file records it. */
function methodOf(t: TensorSummary, kind: ArtifactKind, report: InspectReport): string {
  const q = t.quant!;
  if (kind === "gguf" && typeof t.notes?.["ggmlType"] === "string") return t.notes["ggmlType"] as string;
  if (kind === "hf" && report.quantization !== undefined) return report.quantization.method;
  if (q.representation === "fpx") return `fp${q.bits} ${q.format ?? ""}`.trim();
  if (q.representation !== "int-group") return q.representation;
  const quantizer = t.notes?.["quantizer"];
  return typeof quantizer === "string" ? quantizer : q.sourceLayout;
}

async function onnxArtifact(file: LocalFile, genai: boolean): Promise<ArtifactFacts> {
  const facts: ArtifactFacts = { path: file.path, kind: "onnx", config: undefined, parameters: 0, bytes: file.nBytes, bitsPerWeight: 0, packed: undefined, tensorNames: [] };
  const onnx: OnnxFacts = { matMulNBits: 0, bits: [], blockSizes: [], genai, inspected: false };
  facts.onnx = onnx;
  if (file.nBytes > MAX_ONNX_DECODE_BYTES) return facts;
  const { decodeModel, intAttributeOf, MS_DOMAIN } = await import("../onnx/model.js");
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(await readFile(file.diskPath!));
  } catch (cause) {
    throw ioErrorFor(cause, file.diskPath!, "cannot read the ONNX model");
  }
  const model = decodeModel(bytes, file.diskPath);
  const bits = new Set<number>();
  const blockSizes = new Set<number>();
  for (const node of model.graph?.node ?? []) {
    if (node.opType !== "MatMulNBits" || node.domain !== MS_DOMAIN) continue;
    onnx.matMulNBits++;
    const width = intAttributeOf(node, "bits", file.diskPath);
    const blockSize = intAttributeOf(node, "block_size", file.diskPath);
    if (width !== undefined) bits.add(width);
    if (blockSize !== undefined) blockSizes.add(blockSize);
  }
  onnx.bits = [...bits].sort((a, b) => a - b);
  onnx.blockSizes = [...blockSizes].sort((a, b) => a - b);
  onnx.inspected = true;
  if (model.producerName) facts.producer = `${model.producerName} ${model.producerVersion ?? ""}`.trim();
  return facts;
}
