import { dtypeBytes, elementCount, type DType } from "../../formats/dtype.js";
import { UsageError } from "../../formats/errors.js";
import { AtomicFile } from "../io/atomic.js";
import { METADATA_KEY, SAFETENSORS_PREFIX_BYTES } from "./header.js";

export interface TensorPlan {
  name: string;
  dtype: DType;
  shape: readonly number[];
}

/**
 * torch's shared-tensor aliases from a source's `__metadata__` (safetensors `save_model` writes
 * `{"model.embed_tokens.weight": "lm_head.weight"}` for tied weights it stored once): the
 * entries naming a tensor that is written as the alias of one that is not. Other metadata is
 * the source's own business and is not carried into a converted file.
 */
export function sharedTensorAliases(metadata: Record<string, string>, written: ReadonlySet<string>): Record<string, string> {
  return Object.fromEntries(Object.entries(metadata).filter(([alias, target]) => !written.has(alias) && written.has(target)));
}

/** Byte length of a planned dense tensor. */
export function planByteLength(plan: TensorPlan): number {
  return Number(elementCount(plan.shape)) * dtypeBytes(plan.dtype);
}

/**
 * Builds the header bytes for tensors laid out in the given order, padded with spaces so the
 * data section starts on an 8-byte boundary (what the Rust writer does, so every tensor of
 * an 8-byte dtype is aligned for zero-copy views).
 */
export function buildHeader(tensors: readonly TensorPlan[], metadata?: Record<string, string>): Uint8Array {
  // Null prototype: on a plain object, `header["__proto__"] = …` sets the prototype and the tensor vanishes from the JSON.
  const header: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  if (metadata !== undefined && Object.keys(metadata).length > 0) header[METADATA_KEY] = metadata;
  let offset = 0;
  for (const t of tensors) {
    if (t.name === METADATA_KEY || Object.prototype.hasOwnProperty.call(header, t.name)) {
      throw new UsageError("BAD_ARGUMENT", "duplicate or reserved tensor name", { tensor: t.name });
    }
    const end = offset + planByteLength(t);
    header[t.name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, end] };
    offset = end;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil((SAFETENSORS_PREFIX_BYTES + json.length) / 8) * 8 - SAFETENSORS_PREFIX_BYTES;
  const out = new Uint8Array(SAFETENSORS_PREFIX_BYTES + padded).fill(0x20);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, SAFETENSORS_PREFIX_BYTES);
  return out;
}

/**
 * Streams one safetensors file: the header (known from the plan) is written first, then each
 * tensor's bytes in plan order, in as many chunks as the caller likes. The file appears at
 * `path` only on `finish()`, after every byte promised by the header has been written.
 */
export class SafetensorsWriter {
  private index = 0;
  private writtenInTensor = 0;
  private position: number;

  private constructor(private readonly file: AtomicFile, private readonly plan: readonly TensorPlan[], headerBytes: number) {
    this.position = headerBytes;
    // Zero-sized tensors are complete from the start: skip leading ones here, as `write` skips later ones.
    this.advancePastComplete();
  }

  static async create(path: string, plan: readonly TensorPlan[], metadata?: Record<string, string>): Promise<SafetensorsWriter> {
    const header = buildHeader(plan, metadata);
    const file = await AtomicFile.create(path);
    try {
      await file.write(header, 0);
    } catch (error) {
      await file.abort();
      throw error;
    }
    return new SafetensorsWriter(file, plan, header.length);
  }

  get path(): string {
    return this.file.path;
  }

  /** The tensor whose bytes are expected next, or undefined when all are written. */
  get current(): TensorPlan | undefined {
    return this.plan[this.index];
  }

  /** Appends bytes of tensor `name`, which must be the current one. */
  async write(name: string, bytes: Uint8Array): Promise<void> {
    const t = this.current;
    if (t === undefined || t.name !== name) {
      throw new UsageError("BAD_ARGUMENT", `tensors must be written in plan order (expected "${t?.name ?? "<none>"}")`, { file: this.path, tensor: name });
    }
    const total = planByteLength(t);
    if (this.writtenInTensor + bytes.length > total) {
      throw new UsageError("BAD_ARGUMENT", "more bytes than the tensor's shape and dtype hold", { file: this.path, tensor: name, expected: total, actual: this.writtenInTensor + bytes.length });
    }
    await this.file.write(bytes, this.position);
    this.position += bytes.length;
    this.writtenInTensor += bytes.length;
    this.advancePastComplete();
  }

  private advancePastComplete(): void {
    while (this.current !== undefined && this.writtenInTensor === planByteLength(this.current)) {
      this.index++;
      this.writtenInTensor = 0;
    }
  }

  async finish(): Promise<void> {
    this.advancePastComplete();
    if (this.current !== undefined) {
      await this.file.abort();
      throw new UsageError("BAD_ARGUMENT", "writer finished before every tensor was written", { file: this.path, tensor: this.current.name });
    }
    await this.file.commit();
  }

  async abort(): Promise<void> {
    await this.file.abort();
  }
}
