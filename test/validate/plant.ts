import { spawnSync } from "node:child_process";
import { cp, open, readFile, truncate, writeFile } from "node:fs/promises";
import { basename } from "node:path";
import * as assert from "uvu/assert";
import { readGgufHeader, type GgufHeader } from "../../converters/gguf/reader.js";
import { FileSource } from "../../converters/io/random-access.js";
import { encodeTrailer, decodeTrailer, TRAILER_BYTES } from "../../converters/lmpack/layout.js";
import { pb, type HeaderMessage } from "../../converters/lmpack/proto.js";
import { SafetensorsFile } from "../../converters/safetensors/reader.js";
import { validatePath, type Finding, type ValidateReport } from "../../converters/validate/index.js";
import { onnx } from "../../schemas/gen/onnx.js";
import { CLI } from "../helpers/paths.js";

/**
 * Planting one defect in a copy of a clean checkpoint, byte by byte or through its own header
 * format, and the assertions every case of the corrupted suite makes. The expected location is
 * computed from the clean file with lmpack's readers (where a tensor's data starts, where a
 * tensor info is), never from the validator.
 */

/**
 * Copies a checkpoint folder to `dest`, without the reference-dense files the tests do not need
 * and, unless `withSums`, without SHA256SUMS: every planted defect changes a file, and the sums
 * would then be a second finding (they have a case of their own).
 */
export async function copyCheckpoint(src: string, dest: string, withSums = false): Promise<string> {
  await cp(src, dest, { recursive: true, filter: (from) => !basename(from).startsWith("reference-dense") && (withSums || basename(from) !== "SHA256SUMS") });
  return dest;
}

/** Overwrites bytes at an absolute offset. */
export async function patchBytes(path: string, byteOffset: number, bytes: ArrayLike<number>): Promise<void> {
  const handle = await open(path, "r+");
  try {
    await handle.write(Uint8Array.from(bytes), 0, bytes.length, byteOffset);
  } finally {
    await handle.close();
  }
}

/** A copy of `length` bytes at `byteOffset` (its own ArrayBuffer, so typed views of it start at 0). */
export async function readBytes(path: string, byteOffset: number, length: number): Promise<Uint8Array> {
  return new Uint8Array((await readFile(path)).subarray(byteOffset, byteOffset + length));
}

export async function appendBytes(path: string, bytes: ArrayLike<number>): Promise<void> {
  await writeFile(path, Uint8Array.from(bytes), { flag: "a" });
}

export async function cutBytes(path: string, bytes: number): Promise<number> {
  const size = (await readFile(path)).length - bytes;
  await truncate(path, size);
  return size;
}

/** Where a safetensors tensor's data is, from the strict reader. */
export async function tensorAt(path: string, name: string): Promise<{ byteOffset: number; byteLength: number; dtype: string; shape: number[] }> {
  const file = await SafetensorsFile.open(path);
  try {
    const t = file.tensor(name);
    return { byteOffset: t.byteOffset, byteLength: t.byteLength, dtype: t.dtype, shape: t.shape };
  } finally {
    await file.close();
  }
}

export async function tensorNames(path: string): Promise<string[]> {
  const file = await SafetensorsFile.open(path);
  try {
    return file.tensors.map((t) => t.name);
  } finally {
    await file.close();
  }
}

/**
 * Rewrites a safetensors header through `mutate` (or as raw text through `text`); the data
 * section is kept as is (offsets are relative to it). Returns the new data start and header text.
 */
export async function rewriteHeader(path: string, mutate: (header: Record<string, any>) => void, text?: (json: string) => string): Promise<{ dataStart: number; json: string }> {
  const bytes = await readFile(path);
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString("utf8")) as Record<string, any>;
  mutate(header);
  const json = text === undefined ? JSON.stringify(header) : text(JSON.stringify(header));
  const headerBytes = Buffer.from(json, "utf8");
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(headerBytes.length));
  await writeFile(path, Buffer.concat([prefix, headerBytes, bytes.subarray(8 + n)]));
  return { dataStart: 8 + headerBytes.length, json };
}

/** A tensor's begin offset relative to the data section, as its header entry writes it. */
export async function relativeBegin(path: string, name: string): Promise<number> {
  const bytes = await readFile(path);
  const n = Number(bytes.readBigUInt64LE(0));
  return (JSON.parse(bytes.subarray(8, 8 + n).toString("utf8")) as Record<string, { data_offsets: number[] }>)[name]!.data_offsets[0]!;
}

export async function patchJson(path: string, mutate: (json: Record<string, any>) => void): Promise<void> {
  const json = JSON.parse(await readFile(path, "utf8")) as Record<string, any>;
  mutate(json);
  await writeFile(path, JSON.stringify(json, null, 2));
}

/** Decodes an lmpack container's header, lets `mutate` change it, and writes it back with a matching CRC and trailer. */
export async function rewriteLmpackHeader(path: string, mutate: (header: HeaderMessage) => void): Promise<void> {
  const bytes = await readFile(path);
  const trailer = decodeTrailer(bytes.subarray(bytes.length - TRAILER_BYTES), bytes.length, path);
  const header = pb.Header.decode(bytes.subarray(trailer.headerOffset, trailer.headerOffset + trailer.headerLength));
  mutate(header);
  const encoded = pb.Header.encode(header).finish();
  await writeFile(path, Buffer.concat([bytes.subarray(0, trailer.headerOffset), encoded, encodeTrailer(trailer.headerOffset, encoded)]));
}

export async function ggufHeader(path: string): Promise<GgufHeader> {
  const source = await FileSource.open(path);
  try {
    return await readGgufHeader(source);
  } finally {
    await source.close();
  }
}

/** Offsets of a GGUF tensor info's type and data-offset fields (v2/v3: u64 lengths and dims). */
export function ggufInfoFields(header: GgufHeader, name: string): { typeAt: number; offsetAt: number; infoAt: number } {
  const t = header.tensors.find((x) => x.name === name)!;
  const typeAt = t.infoByteOffset + 8 + Buffer.byteLength(name) + 4 + 8 * t.ne.length;
  return { typeAt, offsetAt: typeAt + 4, infoAt: t.infoByteOffset };
}

/** Decodes an ONNX model, lets `mutate` change it, writes it back. */
export async function rewriteOnnx(path: string, mutate: (model: onnx.ModelProto) => void): Promise<void> {
  const model = onnx.ModelProto.decode(await readFile(path));
  mutate(model);
  await writeFile(path, onnx.ModelProto.encode(model).finish());
}

export function u16le(v: number): number[] {
  return [v & 0xff, (v >>> 8) & 0xff];
}

export function u32le(v: number): number[] {
  return [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];
}

export interface Expected {
  code: string;
  file: string;
  tensor?: string;
  byteOffset?: number;
  /** How many error findings the defect causes (default: at least one). */
  count?: number;
}

/**
 * The corrupted suite's assertion: the report fails; every error finding carries the planted
 * defect's code (one defect, one kind of finding); the first is at exactly the expected file,
 * tensor and byte offset (no tensor or byte offset when the defect has none).
 */
export function assertFound(report: ValidateReport, want: Expected): Finding {
  const errors = report.findings.filter((f) => f.severity === "error");
  const shown = JSON.stringify(errors.slice(0, 4), null, 1);
  assert.is(report.ok, false, `the defect is not reported: ${JSON.stringify(report.findings)}`);
  assert.equal([...new Set(errors.map((f) => f.code))], [want.code], shown);
  if (want.count !== undefined) assert.is(errors.length, want.count, shown);
  const first = errors[0]!;
  assert.is(first.file, want.file, shown);
  assert.is(first.tensor, want.tensor, shown);
  assert.is(first.byteOffset, want.byteOffset, shown);
  return first;
}

export async function expectFound(path: string, want: Expected, options: { deep?: boolean; base?: string } = {}): Promise<Finding> {
  return assertFound(await validatePath(path, options), want);
}

export async function expectClean(path: string, options: { deep?: boolean; base?: string } = {}): Promise<ValidateReport> {
  const report = await validatePath(path, options);
  const errors = report.findings.filter((f) => f.severity === "error");
  assert.equal(errors, [], `${path} should validate clean`);
  assert.ok(report.ok);
  return report;
}

/** Runs the CLI (from the build under test) and returns its exit code and output. */
export function lmpackCli(...args: string[]): { code: number; stdout: string; stderr: string } {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== "FORCE_COLOR" && k !== "NO_COLOR"));
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", env });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

