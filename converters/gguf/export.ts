import { basename } from "node:path";
import { convertFloatBytes } from "../../formats/dense/convert.js";
import { FormatError } from "../../formats/errors.js";
import type { GgmlTypeCodec } from "../../formats/ggml/types.js";
import { viewAs } from "../../formats/packed-array.js";
import type { Checkpoint, TensorEntry } from "../checkpoint.js";
import { exactGgmlType, intGroupToGgml } from "./int-to-ggml.js";
import { INT_GROUP_SIZE_KEY } from "./ggml-to-int.js";
import { GgufType, type GgufValue } from "./layout.js";
import { llamaMetadata, type GgufNaming } from "./llama-metadata.js";
import { hfToGgufName, permutedRow, qkPermutation } from "./names.js";
import { chooseTensorType, writableCodec, type RecipeOptions } from "./tensor-plan.js";
import { ggufTokenizer } from "./tokenizer-meta.js";
import { isKeptPart, keepPacked, type KeptTensor } from "./keep-packed.js";
import { writeGguf, type GgufTensorToWrite } from "./writer.js";

/**
 * Llama-family checkpoint → GGUF that llama.cpp loads: metadata and tokenizer as
 * convert_hf_to_gguf.py writes them (llama-metadata.ts, tokenizer-meta.ts), tensors in the
 * order of their HF names, Q/K rows permuted to llama.cpp's rotary layout, every 2-D weight in
 * the recipe's type (tensor-plan.ts). Integer-group layers that a ggml type holds exactly
 * (int-to-ggml.ts) are carried over code for code; everything else is quantized from the
 * source's dense (or reference-dequantized) weights, and its added error reported.
 */

export interface GgufExportOptions extends Partial<RecipeOptions> {
  /** Store tensors without an exact ggml image in lmpack's own arrays (keep-packed.ts) instead of requantizing them. */
  keepPacked?: boolean;
  /** general.name etc.; name defaults to the source folder's name. */
  naming?: Partial<GgufNaming>;
  overwrite?: boolean;
  /** Called per tensor as it is written. */
  onTensor?: (report: GgufTensorReport) => void;
}

export interface GgufTensorReport {
  name: string;
  ggufName: string;
  type: string;
  shape: number[];
  /** "copied" (float passthrough), "exact" (integer codes carried over), "quantized", or "kept" (lmpack arrays, --keep-packed). */
  how: "copied" | "exact" | "quantized" | "kept";
  /** ‖dequant(written) − source‖ / ‖source‖ over the tensor, for quantized tensors. */
  relativeError: number | undefined;
  note: string | undefined;
}

export interface GgufExportResult {
  bytes: number;
  tensors: GgufTensorReport[];
  warnings: string[];
}

export async function exportGguf(checkpoint: Checkpoint, path: string, options: GgufExportOptions = {}): Promise<GgufExportResult> {
  const config = checkpoint.config;
  const file = checkpoint.location;
  if (config === undefined) throw new FormatError("CONFIG_INVALID", "GGUF export needs config.json", { file });
  const recipe: RecipeOptions = { mainType: (options.mainType ?? "F16").toUpperCase(), ...(options.outputType === undefined ? {} : { outputType: options.outputType }), ...(options.embeddingType === undefined ? {} : { embeddingType: options.embeddingType }) };
  writableCodec(recipe.mainType);
  const warnings: string[] = [];
  const tokenizerJson = checkpoint.sideFiles.get("tokenizer.json");
  const tokenizer = tokenizerJson === undefined ? undefined : ggufTokenizer(new TextDecoder().decode(tokenizerJson), decodeOptional(checkpoint.sideFiles.get("tokenizer_config.json")), config.vocabSize, `${file}/tokenizer.json`);
  if (tokenizer === undefined) warnings.push("no tokenizer.json: the GGUF has no tokenizer keys and llama.cpp will refuse it");
  if (tokenizer?.warning !== undefined) warnings.push(tokenizer.warning);
  const naming: GgufNaming = { name: options.naming?.name ?? basename(file.replace(/\/+$/, "")), ...options.naming };
  const metadata = new Map<string, GgufValue>(llamaMetadata(config, naming, recipe.mainType, tokenizer, file));

  // convert_hf_to_gguf walks the tensors in sorted HF-name order; a tied checkpoint that keeps
  // only lm_head.weight supplies the embedding under its HF name.
  const hasEmbedding = checkpoint.tensors.some((t) => t.name === "model.embed_tokens.weight");
  const entries = checkpoint.tensors
    .map((entry) => ({ entry, hfName: !hasEmbedding && config.tiedEmbeddings && entry.name === "lm_head.weight" ? "model.embed_tokens.weight" : entry.name }))
    .filter(({ hfName }) => !(config.tiedEmbeddings && hasEmbedding && hfName === "lm_head.weight"))
    .sort((a, b) => (a.hfName < b.hfName ? -1 : a.hfName > b.hfName ? 1 : 0));
  const tied = !entries.some((e) => e.hfName === "lm_head.weight");
  const groupSize = carriedGroupSize(entries.map((e) => e.entry), tied, recipe);
  if (groupSize !== undefined) metadata.set(INT_GROUP_SIZE_KEY, { type: GgufType.UINT32, value: groupSize });
  const reports: GgufTensorReport[] = [];
  const kept = new KeptCache();
  const tensors: GgufTensorToWrite[] = [];
  for (const { entry, hfName } of entries) {
    const ggufName = hfToGgufName(hfName);
    if (ggufName === undefined) throw new FormatError("TENSOR_INVALID_INFO", "no GGUF name for this tensor in the llama architecture", { file: entry.file, tensor: entry.name });
    const { codec, reason } = chooseTensorType(ggufName, entry.shape, tied, recipe);
    if (options.keepPacked === true && entry.packed !== undefined && !carriesExactly(entry, codec.name)) {
      // Described now (the header comes first), encoded again when its arrays are written.
      const description = await keepPacked(entry, ggufName);
      metadata.set(description.key, { type: GgufType.STRING, value: description.json });
      // Only the layout is kept here: holding every packed array until it is written would hold the model.
      const first = description.parts[0]?.name;
      for (const { name, type, shape } of description.parts) {
        tensors.push({
          name,
          type,
          shape,
          data: async function* () {
            yield (await kept.get(entry, ggufName)).parts.find((p) => p.name === name)!.bytes;
            if (name === first) {
              const report: GgufTensorReport = { name: entry.name, ggufName, type: `lmpack ${entry.packed!.representation}`, shape: [...entry.shape], how: "kept", relativeError: 0, note: "not runnable by llama.cpp" };
              reports.push(report);
              options.onTensor?.(report);
            }
          },
        });
      }
      continue;
    }
    const heads = qkPermutation(ggufName) === "q" ? config.numHeads : qkPermutation(ggufName) === "k" ? config.numKvHeads : undefined;
    tensors.push({
      name: ggufName,
      type: codec.id,
      shape: entry.shape,
      data: async function* () {
        const { bytes, report } = await tensorBytes(entry, ggufName, codec, heads, reason);
        reports.push(report);
        options.onTensor?.(report);
        yield bytes;
      },
    });
  }
  if (tensors.some((t) => isKeptPart(t.name))) warnings.push("--keep-packed: tensors in lmpack's packed formats have no llama.cpp kernels, so llama.cpp cannot run this file; lmpack and any GGUF parser read it");
  const bytes = await writeGguf(path, metadata, tensors, { overwrite: options.overwrite ?? false });
  return { bytes, tensors: reports, warnings };
}

/** Integer groups that the chosen type holds exactly (checked from the parameters: sym zeros are 2^(bits−1)). */
function carriesExactly(entry: TensorEntry, type: string): boolean {
  const p = entry.packed;
  if (p?.representation !== "int-group" || p.actOrder || !p.params.sym || p.params.scaleDtype !== "F16" || p.params.groupSize % 32 !== 0) return false;
  return (type === "Q4_0" && p.params.bits === 4) || (type === "Q8_0" && p.params.bits === 8);
}

/** One encoded packed tensor at a time: its arrays are written one after another. */
class KeptCache {
  private last: { name: string; kept: KeptTensor } | undefined;
  async get(entry: TensorEntry, ggufName: string): Promise<KeptTensor> {
    if (this.last?.name !== entry.name) this.last = { name: entry.name, kept: await keepPacked(entry, ggufName) };
    return this.last.kept;
  }
}

/**
 * The integer group size of the layers whose codes are carried over (sym 4-bit into Q4_0, sym
 * 8-bit into Q8_0), when they all share one: recorded so the import reads them back as groups
 * of that size (ggml-to-int.ts). Undefined when there are none or they differ.
 */
function carriedGroupSize(entries: TensorEntry[], tied: boolean, recipe: RecipeOptions): number | undefined {
  const sizes = new Set<number>();
  for (const entry of entries) {
    const ggufName = hfToGgufName(entry.name);
    if (ggufName === undefined || entry.packed?.representation !== "int-group") continue;
    if (carriesExactly(entry, chooseTensorType(ggufName, entry.shape, tied, recipe).codec.name)) sizes.add(entry.packed.params.groupSize);
  }
  return sizes.size === 1 ? [...sizes][0] : undefined;
}

function decodeOptional(bytes: Uint8Array | undefined): string | undefined {
  return bytes === undefined ? undefined : new TextDecoder().decode(bytes);
}

async function tensorBytes(entry: TensorEntry, ggufName: string, codec: GgmlTypeCodec, heads: number | undefined, reason: string | undefined): Promise<{ bytes: Uint8Array; report: GgufTensorReport }> {
  const rows = entry.shape.length >= 2 ? entry.shape[0]! : 1;
  const rowOrder = heads === undefined ? undefined : inversePermutation(rows, heads);
  const base = { name: entry.name, ggufName, type: codec.name, shape: [...entry.shape] };
  if (entry.packed?.representation === "int-group") {
    const tensor = await entry.packed.load();
    const exact = exactGgmlType(tensor, codec.name);
    if (exact.type !== undefined) {
      return { bytes: intGroupToGgml(tensor, exact.type, rowOrder), report: { ...base, how: "exact", relativeError: 0, note: reason } };
    }
    reason = [reason, `requantized: ${exact.why}`].filter((x) => x !== undefined).join("; ");
  }
  const source = await denseF32(entry);
  const x = rowOrder === undefined ? source : reorderRows(source, rows, rowOrder);
  if (codec.name === "F32") return { bytes: new Uint8Array(x.buffer, x.byteOffset, x.byteLength), report: { ...base, how: "copied", relativeError: 0, note: reason } };
  const blocks = x.length / codec.blockSize;
  const out = new Uint8Array(blocks * codec.typeSize);
  if (codec.quantize === undefined) throw new FormatError("DTYPE_UNSUPPORTED", `no encoder for ${codec.name}`, { tensor: entry.name });
  codec.quantize(x, blocks, out);
  const back = new Float32Array(x.length);
  codec.dequantize(out, blocks, back);
  const error = relativeError(x, back);
  const how = error === 0 && (codec.name === "F16" || codec.name === "BF16") ? "copied" : "quantized";
  return { bytes: out, report: { ...base, how, relativeError: error, note: reason } };
}

/** GGUF row r holds HF row inverse[r]: permutedRow maps HF rows to GGUF rows. */
function inversePermutation(rows: number, heads: number): (row: number) => number {
  const inverse = new Int32Array(rows);
  for (let r = 0; r < rows; r++) inverse[permutedRow(r, rows, heads)] = r;
  return (row) => inverse[row]!;
}

function reorderRows(x: Float32Array, rows: number, rowOrder: (row: number) => number): Float32Array {
  const cols = x.length / rows;
  const out = new Float32Array(x.length);
  for (let r = 0; r < rows; r++) out.set(x.subarray(rowOrder(r) * cols, (rowOrder(r) + 1) * cols), r * cols);
  return out;
}

async function denseF32(entry: TensorEntry): Promise<Float32Array> {
  const dtype = entry.dtype;
  if (dtype !== "F32" && dtype !== "F16" && dtype !== "BF16" && dtype !== "F64") {
    throw new FormatError("DTYPE_UNSUPPORTED", "GGUF export reads float tensors", { file: entry.file, tensor: entry.name, actual: dtype });
  }
  return Float32Array.from(viewAs(convertFloatBytes(await entry.read(), dtype, "F32"), Float32Array));
}

function relativeError(x: Float32Array, y: Float32Array): number {
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < x.length; i++) {
    diff += (x[i]! - y[i]!) ** 2;
    norm += x[i]! ** 2;
  }
  return norm === 0 ? (diff === 0 ? 0 : Infinity) : Math.sqrt(diff / norm);
}
