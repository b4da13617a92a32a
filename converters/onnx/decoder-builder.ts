import { open, type FileHandle } from "node:fs/promises";
import type { DType } from "../../formats/dtype.js";
import { IoError } from "../../formats/errors.js";
import { onnx } from "../../schemas/gen/onnx.js";
import { initializer, type AttributeInit, type MS_DOMAIN, type NodeInit, type TensorInit } from "./model.js";

/**
 * The small machinery the decoder graph is written with: a node list with unique output names,
 * and an initialiser store that keeps weights inline (raw_data) or appends them to an external
 * data file as onnx/docs/ExternalData.md describes (gguf-onnx.md §3.7).
 */

/**
 * External data offsets are multiples of this: ExternalData.md asks for the page size so that
 * a runtime can mmap each tensor (64 KiB would suit Windows; onnxruntime reads either).
 */
export const EXTERNAL_ALIGNMENT_BYTES = 4096;
/**
 * Initialisers smaller than this stay inline even in an external-data model: the same cut-off
 * as onnx's `convert_model_to_external_data(size_threshold=1024)`, so that norms and constants
 * do not each cost a 4 KiB page.
 */
export const EXTERNAL_MIN_TENSOR_BYTES = 1024;

/** Where weights go: raw_data in the ModelProto, or an external data file beside it. */
export interface InitializerStore {
  /** Adds an initialiser holding `bytes`; returns its TensorProto (data inline or referenced). */
  add(name: string, dtype: DType, dims: readonly number[], bytes: Uint8Array): Promise<TensorInit>;
  /** Bytes of weight data stored so far (inline or external, padding excluded). */
  readonly dataBytes: number;
  close(): Promise<void>;
}

/** Keeps every initialiser's bytes in the ModelProto. */
export function inlineStore(): InitializerStore {
  let dataBytes = 0;
  return {
    get dataBytes() {
      return dataBytes;
    },
    add: async (name, dtype, dims, bytes) => {
      dataBytes += bytes.length;
      return initializer(name, dtype, dims, bytes);
    },
    close: async () => undefined,
  };
}

/**
 * Appends initialisers of at least EXTERNAL_MIN_TENSOR_BYTES to `path`, each at an offset that
 * is a multiple of EXTERNAL_ALIGNMENT_BYTES; `location` is the name the model records (relative
 * to the model file's directory, as onnxruntime resolves it).
 */
export async function externalStore(path: string, location: string): Promise<InitializerStore> {
  let handle: FileHandle;
  try {
    handle = await open(path, "wx");
  } catch (cause) {
    throw new IoError("WRITE_FAILED", `cannot create external data file: ${(cause as Error).message}`, { file: path, cause });
  }
  let end = 0;
  let dataBytes = 0;
  return {
    get dataBytes() {
      return dataBytes;
    },
    add: async (name, dtype, dims, bytes) => {
      dataBytes += bytes.length;
      if (bytes.length < EXTERNAL_MIN_TENSOR_BYTES) return initializer(name, dtype, dims, bytes);
      const offset = Math.ceil(end / EXTERNAL_ALIGNMENT_BYTES) * EXTERNAL_ALIGNMENT_BYTES;
      for (let done = 0; done < bytes.length; ) {
        const { bytesWritten } = await handle.write(bytes, done, bytes.length - done, offset + done);
        done += bytesWritten;
      }
      end = offset + bytes.length;
      const { rawData: _inline, ...tensor } = initializer(name, dtype, dims, new Uint8Array(0));
      return {
        ...tensor,
        dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
        externalData: [
          { key: "location", value: location },
          { key: "offset", value: String(offset) },
          { key: "length", value: String(bytes.length) },
        ],
      };
    },
    close: async () => {
      await handle.sync();
      await handle.close();
    },
  };
}

export function floatAttribute(name: string, value: number): AttributeInit {
  return { name, type: onnx.AttributeProto.AttributeType.FLOAT, f: value };
}

export interface OpOptions {
  /** Number of outputs (default 1). */
  outputs?: number;
  /** Explicit output names (graph outputs); generated when absent. */
  outputNames?: readonly string[];
  attributes?: readonly AttributeInit[];
  /** "com.microsoft" for onnxruntime's contrib ops; the ONNX domain when absent. */
  domain?: typeof MS_DOMAIN;
}

/**
 * Nodes and initialisers of one graph. Node and value names are `<scope>/<op>_<n>`, unique per
 * graph, so a reader of the model (Netron, onnxruntime's verbose log) can tell which layer a
 * node belongs to.
 */
export class GraphBuilder {
  readonly nodes: NodeInit[] = [];
  readonly initializers: TensorInit[] = [];
  private readonly constants = new Map<string, string>();
  private counter = 0;
  /** Prefix of the names of nodes added next (e.g. "layers.3/attn"). */
  scope = "";

  constructor(readonly store: InitializerStore) {}

  /** Adds a node; returns its output names. */
  op(opType: string, inputs: readonly string[], options: OpOptions = {}): string[] {
    const name = `${this.scope === "" ? "" : `${this.scope}/`}${opType}_${this.counter++}`;
    const count = options.outputNames?.length ?? options.outputs ?? 1;
    const output = options.outputNames !== undefined ? [...options.outputNames] : Array.from({ length: count }, (_, i) => (count === 1 ? `${name}/out` : `${name}/out${i}`));
    this.nodes.push({
      name,
      opType,
      input: [...inputs],
      output,
      ...(options.domain === undefined ? {} : { domain: options.domain }),
      ...(options.attributes === undefined ? {} : { attribute: [...options.attributes] }),
    });
    return output;
  }

  /** `op` with exactly one output, returned as a string. */
  op1(opType: string, inputs: readonly string[], options: Omit<OpOptions, "outputs"> = {}): string {
    return this.op(opType, inputs, options)[0]!;
  }

  /** Adds an already-built node (the MatMulNBits builder in export-layer.ts makes whole nodes). */
  node(node: NodeInit): void {
    this.nodes.push(node);
  }

  /** A weight initialiser, through the store (inline or external). */
  async weight(name: string, dtype: DType, dims: readonly number[], bytes: Uint8Array): Promise<string> {
    this.initializers.push(await this.store.add(name, dtype, dims, bytes));
    return name;
  }

  /** A small constant, always inline, created once per distinct key and shared by every use. */
  constant(key: string, dtype: DType, dims: readonly number[], bytes: Uint8Array): string {
    const existing = this.constants.get(key);
    if (existing !== undefined) return existing;
    const name = `const/${key}`;
    this.initializers.push(initializer(name, dtype, dims, bytes));
    this.constants.set(key, name);
    return name;
  }

  /** A float32 constant of the given shape ([] for a scalar). */
  floats(key: string, values: readonly number[], dims: readonly number[] = [values.length]): string {
    return this.constant(key, "F32", dims, new Uint8Array(Float32Array.from(values).buffer));
  }

  /** An int64 constant (axes, shapes, indices). */
  int64s(key: string, values: readonly number[], dims: readonly number[] = [values.length]): string {
    return this.constant(key, "I64", dims, new Uint8Array(BigInt64Array.from(values.map(BigInt)).buffer));
  }
}
