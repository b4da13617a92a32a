import { isLmpackError } from "../../formats/errors.js";
import { hfToGgufName } from "../gguf/names.js";
import { readGgufHeader, type GgufHeader, type GgufTensorInfo } from "../gguf/reader.js";
import { GgufType, lengthBytes } from "../gguf/layout.js";
import { FileSource, type RandomAccessSource } from "../io/random-access.js";
import { readRange } from "../io/read-range.js";
import { checkConfigTensors } from "./config-tensors.js";
import type { Findings } from "./findings.js";
import { walkTensorInfos } from "./gguf-infos.js";
import type { Declared, ScanArray, Validated } from "./types.js";

/**
 * A GGUF file. The strict reader parses the header; when it refuses a tensor info, the KVs are
 * parsed again by the same reader with the tensor count read as 0 (so everything but the infos
 * is checked by the reader's own code), and the infos are walked record by record
 * (gguf-infos.ts). A clean header is then opened as a checkpoint (llama config from the
 * `llama.*` keys, Q/K un-permutation) for config ↔ tensors, with findings under GGUF names.
 * Deep: every tensor decoded and checked finite, and general.file_type against the tensors.
 */
export async function validateGguf(path: string, findings: Findings, deep: boolean): Promise<Validated> {
  const source = await findings.guard({ file: path }, () => FileSource.open(path));
  const empty: Validated = { layout: "gguf", entries: [], arrays: [], close: async () => source?.close() };
  if (source === undefined) return empty;
  let header: GgufHeader | undefined;
  try {
    header = await readGgufHeader(source);
  } catch (error) {
    const version = await versionOf(source);
    const countFault = isLmpackError(error) && error.code === "GGUF_COUNT_TOO_LARGE";
    const kvs = countFault || version === undefined ? undefined : await readGgufHeader(new ZeroTensorCount(source, version)).catch(() => undefined);
    if (kvs === undefined) {
      findings.fromError(error, { file: path, byteOffset: 0 });
      return empty;
    }
    const count = await tensorCount(source, kvs.version);
    const before = findings.list.length;
    const tensors = await walkTensorInfos(source, { version: kvs.version, alignment: kvs.alignment, tensorCount: count, infosStart: kvs.infosEnd }, findings);
    // The walk mirrors the reader's checks of the infos; should the reader refuse what it does not, the reader's word stands.
    if (findings.list.length === before) findings.fromError(error, { file: path, byteOffset: 0 });
    const arrays = deep ? await scanGgufData(source, tensors, findings) : [];
    return { ...empty, arrays, declared: declaredOf(kvs, findings, path, deep ? tensors : undefined) };
  }
  const arrays = deep ? await scanGgufData(source, header.tensors, findings) : [];
  const declared = declaredOf(header, findings, path, deep ? header.tensors : undefined);
  const { openGgufCheckpoint } = await import("../gguf/import.js");
  const checkpoint = await findings.guard({ file: path }, () => openGgufCheckpoint(path));
  if (checkpoint === undefined) return { ...empty, arrays, declared };
  if (checkpoint.config !== undefined) {
    const before = findings.list.length;
    checkConfigTensors(checkpoint.config, checkpoint.tensors, findings, { configFile: path });
    // The findings are about this file's tensors: name them as the file does.
    for (const f of findings.list.slice(before)) if (f.tensor !== undefined) f.tensor = hfToGgufName(f.tensor) ?? f.tensor;
  }
  return { layout: "gguf", entries: [...checkpoint.tensors], arrays, config: checkpoint.config, declared, close: async () => { await checkpoint.close(); await source.close(); } };
}

/** The file with its tensor count read as 0: the reader then checks magic, version and every KV, and stops before the infos. */
class ZeroTensorCount implements RandomAccessSource {
  private readonly countEnd: number;
  constructor(private readonly inner: RandomAccessSource, version: number) {
    this.countEnd = 8 + lengthBytes(version);
  }
  get name(): string {
    return this.inner.name;
  }
  get byteLength(): number {
    return this.inner.byteLength;
  }
  async read(byteOffset: number, length: number): Promise<Uint8Array> {
    const bytes = await this.inner.read(byteOffset, length);
    for (let i = Math.max(8, byteOffset); i < Math.min(this.countEnd, byteOffset + length); i++) bytes[i - byteOffset] = 0;
    return bytes;
  }
  async readInto(target: Uint8Array, byteOffset: number): Promise<void> {
    target.set(await this.read(byteOffset, target.length));
  }
  async close(): Promise<void> {}
}

/** The version field, when the file has one (the KV-only parse needs the count's width). */
async function versionOf(source: RandomAccessSource): Promise<number | undefined> {
  if (source.byteLength < 8) return undefined;
  return new DataView((await source.read(4, 4)).buffer).getUint32(0, true);
}

async function tensorCount(source: RandomAccessSource, version: number): Promise<number> {
  const bytes = await source.read(8, lengthBytes(version));
  const view = new DataView(bytes.buffer);
  return version === 1 ? view.getUint32(0, true) : Number(view.getBigUint64(0, true));
}

/** llama.cpp's llama_ftype (general.file_type) → the ggml type most 2-D weights of such a file use. */
const FILE_TYPE_MAIN: Record<number, string> = {
  0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K", 12: "Q3_K", 13: "Q3_K", 14: "Q4_K", 15: "Q4_K",
  16: "Q5_K", 17: "Q5_K", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K", 22: "IQ3_S", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_S",
  28: "IQ2_S", 29: "IQ2_S", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
};

/** general.file_type as a ggml type; with `tensors` (deep), also checked against the 2-D weights. */
function declaredOf(header: Pick<GgufHeader, "metadata" | "kvOffsets">, findings: Findings, file: string, tensors: readonly GgufTensorInfo[] | undefined): Declared {
  const value = header.metadata.get("general.file_type");
  const fileType = value !== undefined && value.type !== GgufType.ARRAY && typeof value.value === "number" ? value.value : undefined;
  const main = fileType === undefined ? undefined : FILE_TYPE_MAIN[fileType];
  if (main !== undefined && tensors !== undefined) {
    // token_embd and output are often kept wider by design (llama-quantize's mixes); the other matrices carry the main type.
    const weights = tensors.filter((t) => t.shape.length === 2 && !/^(token_embd|output)\./.test(t.name));
    if (weights.length > 0 && !weights.some((t) => t.codec.name === main)) {
      const used = [...new Set(weights.map((t) => t.codec.name))].join(", ");
      findings.add("BITS_MISMATCH", `general.file_type ${fileType} declares ${main} weights, but no weight matrix is ${main}`, { file, tensor: "general.file_type", byteOffset: header.kvOffsets.get("general.file_type"), expected: main, actual: used });
    }
  }
  return { method: "gguf", ...(main === undefined ? {} : { ggmlType: main }) };
}

/** F32/F16/BF16 tensors go to the generic scan; quantized ones are decoded here, a run of blocks at a time. */
async function scanGgufData(source: RandomAccessSource, tensors: readonly GgufTensorInfo[], findings: Findings): Promise<ScanArray[]> {
  const arrays: ScanArray[] = [];
  for (const t of tensors) {
    const name = t.codec.name;
    if (name === "F32" || name === "F16" || name === "BF16") {
      arrays.push({ name: t.name, file: source.name, dtype: name, byteOffset: t.byteOffset, byteLength: t.byteLength, role: "weight", source });
      continue;
    }
    if (t.codec.blockSize === 1) continue; // integer types (I8…I64): nothing to judge
    const blocksPerChunk = 4096;
    const out = new Float32Array(blocksPerChunk * t.codec.blockSize);
    let block = 0;
    for await (const chunk of readRange(source, t.byteOffset, t.byteLength, t.codec.typeSize, blocksPerChunk * t.codec.typeSize)) {
      const blocks = chunk.length / t.codec.typeSize;
      t.codec.dequantize(chunk, blocks, out);
      const bad = out.subarray(0, blocks * t.codec.blockSize).findIndex((v) => !Number.isFinite(v));
      if (bad >= 0) {
        const at = block + Math.floor(bad / t.codec.blockSize);
        findings.add("NONFINITE_VALUE", `block ${at} of this ${name} tensor decodes to NaN or infinity (its scale is not finite)`, { file: source.name, tensor: t.name, byteOffset: t.byteOffset + at * t.codec.typeSize, expected: "finite weights" });
        break;
      }
      block += blocks;
    }
  }
  return arrays;
}
