import { isAbsolute, join, normalize, sep } from "node:path";
import { dtypeBytes, type DType } from "../../formats/dtype.js";
import { dtypeOfInitializer, initializerArray, int64 } from "../onnx/model.js";
import { onnx } from "../../schemas/gen/onnx.js";
import { FileSource, type RandomAccessSource } from "../io/random-access.js";
import type { Findings } from "./findings.js";

/**
 * ONNX initializers, each checked on its own: a known element type, valid dims, and data that
 * is there: inline bytes matching the dims (onnx/model.ts `initializerArray`), or external data
 * whose location stays in the model's folder, whose file exists, and whose offset and length lie
 * inside it and match the dims. Where the bytes are (file and absolute offset) is recorded, so
 * later findings (MatMulNBits values, --deep scans) can name the byte.
 */

type TensorProto = onnx.TensorProto.$Properties;

export interface PlacedInitializer {
  tensor: TensorProto;
  dtype: DType;
  shape: number[];
  /** Where the data is: the .onnx file (raw_data) or the external data file. */
  file: string;
  source: RandomAccessSource | undefined;
  byteOffset: number | undefined;
  byteLength: number;
}

export class InitializerChecker {
  private readonly dataSources = new Map<string, RandomAccessSource>();

  constructor(private readonly modelPath: string, private readonly modelDir: string, private readonly modelBytes: Uint8Array, private readonly modelSource: RandomAccessSource, private readonly findings: Findings) {}

  /** Every initializer with a finding or a placement; duplicates of a name are reported once each. */
  async check(initializers: readonly TensorProto[]): Promise<Map<string, PlacedInitializer>> {
    const placed = new Map<string, PlacedInitializer>();
    const seen = new Set<string>();
    for (const tensor of initializers) {
      const name = tensor.name ?? "";
      if (seen.has(name)) {
        this.findings.add("TENSOR_DUPLICATE", "two initializers share a name", { file: this.modelPath, tensor: name });
        continue;
      }
      seen.add(name);
      const p = tensor.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL ? await this.external(tensor) : this.inline(tensor);
      if (p !== undefined) placed.set(name, p);
    }
    return placed;
  }

  private inline(tensor: TensorProto): PlacedInitializer | undefined {
    const where = { file: this.modelPath, tensor: tensor.name ?? "" };
    const array = this.guardSync(where, () => initializerArray(tensor, this.modelPath));
    if (array === undefined) return undefined;
    const raw = tensor.rawData;
    // protobufjs hands out raw_data as a view of the file's bytes: its offset in the file is known.
    const inFile = raw != null && raw.buffer === this.modelBytes.buffer ? raw.byteOffset - this.modelBytes.byteOffset : undefined;
    return { tensor, dtype: array.dtype, shape: array.shape, file: this.modelPath, source: inFile === undefined ? undefined : this.modelSource, byteOffset: inFile, byteLength: array.bytes.length };
  }

  private async external(tensor: TensorProto): Promise<PlacedInitializer | undefined> {
    const name = tensor.name ?? "";
    const where = { file: this.modelPath, tensor: name };
    const dtype = this.guardSync(where, () => dtypeOfInitializer(tensor));
    if (dtype === undefined) return undefined;
    const shape = (tensor.dims ?? []).map(int64);
    if (shape.some((d) => !Number.isSafeInteger(d) || d < 0)) return void this.findings.add("SHAPE_INVALID", "initializer has an invalid dimension", { ...where, actual: shape });
    const keys = new Map((tensor.externalData ?? []).map((e) => [e.key ?? "", e.value ?? ""]));
    const location = keys.get("location") ?? "";
    const resolved = normalize(join(this.modelDir, location));
    if (location === "" || isAbsolute(location) || !resolved.startsWith(this.modelDir + sep)) {
      return void this.findings.add("METADATA_INVALID", "external data location must be a file name inside the model's folder", { ...where, actual: location });
    }
    const offset = Number(keys.get("offset") ?? "0");
    const expected = shape.reduce((a, b) => a * b, 1) * dtypeBytes(dtype);
    const length = keys.has("length") ? Number(keys.get("length")) : expected;
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) return void this.findings.add("METADATA_INVALID", "external data offset and length must be non-negative integers", { ...where, actual: `offset ${keys.get("offset")}, length ${keys.get("length")}` });
    const source = await this.dataSource(resolved, where);
    if (source === undefined) return undefined;
    const at = { file: resolved, tensor: name, byteOffset: offset };
    if (offset > source.byteLength) return void this.findings.add("OFFSET_PAST_EOF", "external data starts past the end of its file", { ...at, expected: `<= ${source.byteLength}`, actual: offset });
    if (offset + length > source.byteLength) return void this.findings.add("DATA_TRUNCATED", "external data file ends inside the initializer's data", { ...at, expected: `file of at least ${offset + length} bytes`, actual: `${source.byteLength} bytes` });
    if (length !== expected) return void this.findings.add("SHAPE_SIZE_MISMATCH", "external data length does not match the dims", { ...at, expected: `${expected} bytes`, actual: `${length} bytes` });
    return { tensor, dtype, shape, file: resolved, source, byteOffset: offset, byteLength: length };
  }

  private async dataSource(path: string, where: { file: string; tensor: string }): Promise<RandomAccessSource | undefined> {
    const open = this.dataSources.get(path);
    if (open !== undefined) return open;
    const source = await this.findings.guard({ ...where, file: path }, () => FileSource.open(path));
    if (source !== undefined) this.dataSources.set(path, source);
    return source;
  }

  private guardSync<T>(where: { file: string; tensor: string }, check: () => T): T | undefined {
    try {
      return check();
    } catch (error) {
      this.findings.fromError(error, where);
      return undefined;
    }
  }

  get sources(): RandomAccessSource[] {
    return [...this.dataSources.values()];
  }
}
