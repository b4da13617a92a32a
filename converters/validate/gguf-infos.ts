import { ggmlCodec } from "../../formats/ggml/registry.js";
import { GGUF_MAX_DIMS, GGUF_MAX_NAME_BYTES, lengthBytes, padTo, type GgufTensorInfo } from "../gguf/layout.js";
import type { RandomAccessSource } from "../io/random-access.js";
import { firstInvalidUtf8 } from "../safetensors/utf8.js";
import type { Findings } from "./findings.js";

/**
 * The tensor infos of a GGUF file, walked one record at a time from `infosStart` (the end of
 * the KVs), each record checked as converters/gguf/reader.ts checks it (same codes), but a bad
 * record costs only itself: its size depends on n_dims alone, so the next one is still found.
 * Only a record that cannot be measured (a name past the cap or the file, n_dims past
 * GGML_MAX_DIMS) ends the walk. Then data ranges: inside the file, no two sharing a byte.
 */

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const NEGATIVE = 1n << 63n;

export interface InfoWalk {
  version: number;
  alignment: number;
  tensorCount: number;
  infosStart: number;
}

export async function walkTensorInfos(source: RandomAccessSource, walk: InfoWalk, findings: Findings): Promise<GgufTensorInfo[]> {
  const file = source.name;
  const lenBytes = lengthBytes(walk.version);
  const readLength = (bytes: Uint8Array, at: number): bigint => {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    return lenBytes === 4 ? BigInt(view.getUint32(at, true)) : view.getBigUint64(at, true);
  };
  const tensors: GgufTensorInfo[] = [];
  const names = new Set<string>();
  let pos = walk.infosStart;
  const left = () => source.byteLength - pos;
  for (let i = 0; i < walk.tensorCount; i++) {
    const at = pos;
    if (left() < lenBytes) return stop(findings, "tensor name length runs past the end of the file", file, at);
    const nameLength = readLength(await source.read(pos, lenBytes), 0);
    if (nameLength > BigInt(GGUF_MAX_NAME_BYTES)) {
      findings.add("GGUF_NAME_TOO_LONG", "tensor name longer than the cap", { file, byteOffset: at, expected: `<= ${GGUF_MAX_NAME_BYTES} bytes`, actual: nameLength });
      return tensors;
    }
    pos += lenBytes;
    if (left() < Number(nameLength) + 4) return stop(findings, "tensor name runs past the end of the file", file, at);
    const nameBytes = await source.read(pos, Number(nameLength));
    const name = new TextDecoder().decode(nameBytes);
    const badUtf8 = firstInvalidUtf8(nameBytes);
    pos += nameBytes.length;
    const nDims = new DataView((await source.read(pos, 4)).buffer).getUint32(0, true);
    if (nDims > GGUF_MAX_DIMS) {
      findings.add("SHAPE_INVALID", "too many dims", { file, tensor: name, byteOffset: pos, expected: `<= ${GGUF_MAX_DIMS}`, actual: nDims });
      return tensors;
    }
    pos += 4;
    const recordBytes = nDims * lenBytes + 4 + 8;
    if (left() < recordBytes) return stop(findings, "tensor info runs past the end of the file", file, at, name);
    const record = await source.read(pos, recordBytes);
    const view = new DataView(record.buffer);
    const ne = Array.from({ length: nDims }, (_, d) => readLength(record, d * lenBytes));
    const typeAt = pos + nDims * lenBytes;
    const type = view.getUint32(nDims * lenBytes, true);
    const offset = view.getBigUint64(nDims * lenBytes + 4, true);
    pos += recordBytes;
    if (badUtf8 >= 0) findings.add("HEADER_INVALID_UTF8", "tensor name is not valid UTF-8", { file, byteOffset: at + lenBytes + badUtf8 });
    if (names.has(name)) {
      findings.add("TENSOR_DUPLICATE", "duplicate tensor name", { file, tensor: name, byteOffset: at });
      continue;
    }
    names.add(name);
    const info = checkInfo({ file, at, name, ne, type, typeAt, offset, offsetAt: typeAt + 4, alignment: walk.alignment }, findings);
    if (info !== undefined) tensors.push(info);
  }
  checkDataRanges(tensors, padTo(pos, walk.alignment), source.byteLength, file, findings);
  return tensors;
}

function stop(findings: Findings, detail: string, file: string, byteOffset: number, tensor?: string): GgufTensorInfo[] {
  findings.add("GGUF_TRUNCATED", `${detail}: the remaining tensor infos cannot be read`, { file, tensor, byteOffset });
  return [];
}

interface Record {
  file: string;
  at: number;
  name: string;
  ne: bigint[];
  type: number;
  typeAt: number;
  offset: bigint;
  offsetAt: number;
  alignment: number;
}

/** One record's type, dims and offset; undefined (with a finding) when the tensor cannot be placed. */
function checkInfo(r: Record, findings: Findings): GgufTensorInfo | undefined {
  const at = { file: r.file, tensor: r.name };
  const codec = ggmlCodec(r.type);
  if (codec === undefined) return void findings.add("UNKNOWN_DTYPE", `unknown or unsupported ggml type id ${r.type}`, { ...at, byteOffset: r.typeAt, expected: "a ggml type lmpack knows", actual: r.type });
  for (const d of r.ne) {
    if (d >= NEGATIVE) return void findings.add("SHAPE_INVALID", "negative dim", { ...at, byteOffset: r.at, expected: ">= 0", actual: BigInt.asIntN(64, d) });
    if (d > MAX_SAFE) return void findings.add("SHAPE_OVERFLOW", "dim too large", { ...at, byteOffset: r.at, expected: `<= ${Number.MAX_SAFE_INTEGER}`, actual: d });
  }
  const ne0 = r.ne[0] ?? 1n;
  if (ne0 % BigInt(codec.blockSize) !== 0n) return void findings.add("GGUF_ROW_NOT_BLOCKS", `row of ${codec.name} is not a whole number of blocks`, { ...at, byteOffset: r.at, expected: `ne[0] a multiple of ${codec.blockSize}`, actual: ne0 });
  const nElements = r.ne.reduce((a, b) => a * b, 1n);
  const nBytes = (nElements / BigInt(codec.blockSize)) * BigInt(codec.typeSize);
  if (nElements > MAX_SAFE || nBytes > MAX_SAFE) return void findings.add("SHAPE_OVERFLOW", "tensor size overflows", { ...at, byteOffset: r.at, actual: nElements });
  if (r.offset % BigInt(r.alignment) !== 0n) return void findings.add("GGUF_OFFSET_MISALIGNED", "tensor data offset is not aligned", { ...at, byteOffset: r.offsetAt, expected: `a multiple of ${r.alignment}`, actual: r.offset });
  if (r.offset > MAX_SAFE) return void findings.add("OFFSET_PAST_EOF", "tensor data offset past the end of the file", { ...at, byteOffset: r.offsetAt, actual: r.offset });
  const dims = r.ne.map(Number);
  return { name: r.name, ne: dims, shape: [...dims].reverse(), type: codec.id, codec, nElements: Number(nElements), offset: Number(r.offset), byteOffset: Number(r.offset), byteLength: Number(nBytes), infoByteOffset: r.at };
}

/** Places the tensors after the data start; those past the end of the file are reported and dropped. */
function checkDataRanges(tensors: GgufTensorInfo[], dataStart: number, fileBytes: number, file: string, findings: Findings): void {
  const past = new Set<GgufTensorInfo>();
  for (const t of tensors) {
    t.byteOffset = dataStart + t.offset;
    if (t.byteOffset + t.byteLength <= fileBytes) continue;
    findings.add("OFFSET_PAST_EOF", `tensor data [${t.byteOffset}, ${t.byteOffset + t.byteLength}) ends past the end of the file`, { file, tensor: t.name, byteOffset: t.infoByteOffset, expected: `end <= ${fileBytes}`, actual: t.byteOffset + t.byteLength });
    past.add(t);
  }
  tensors.splice(0, tensors.length, ...tensors.filter((t) => !past.has(t)));
  const byStart = tensors.filter((t) => t.byteLength > 0).sort((a, b) => a.offset - b.offset);
  let end = 0;
  let endName = "";
  for (const t of byStart) {
    if (t.offset < end) findings.add("OFFSETS_OVERLAP", `tensor data overlaps "${endName}"`, { file, tensor: t.name, byteOffset: t.infoByteOffset, expected: `offset >= ${end}`, actual: t.offset });
    if (t.offset + t.byteLength > end) {
      end = t.offset + t.byteLength;
      endName = t.name;
    }
  }
}
