import { dtypeBytes, type DType } from "../../formats/dtype.js";
import { FormatError } from "../../formats/errors.js";
import type { PackedArray } from "../../formats/packed-array.js";
import { onnx } from "../../schemas/gen/onnx.js";
import { PRODUCER } from "../producer.js";

/**
 * Small builders for ONNX ModelProto pieces and the encode/decode around the protobufjs code
 * generated from schemas/onnx.proto. Only the ONNX *container* lives here; what a node's tensors
 * mean (MatMulNBits packing) is in matmul-nbits.ts.
 */

export type ModelInit = onnx.ModelProto.$Properties;
export type GraphInit = onnx.GraphProto.$Properties;
export type NodeInit = onnx.NodeProto.$Properties;
export type TensorInit = onnx.TensorProto.$Properties;
export type ValueInfoInit = onnx.ValueInfoProto.$Properties;
export type AttributeInit = onnx.AttributeProto.$Properties;

/**
 * IR 8 (ONNX 1.12) with opset 17: the newest that Debian's python3-onnx (1.12) checks, so every
 * exported model passes `onnx.checker` with full check in CI, and old enough that every
 * onnxruntime with MatMulNBits (1.17 and later) loads it. Newer IRs and opsets add nothing the
 * graphs need: IR 9/10 bring float8 and int4 element types, opset 18 the bitwise ops, which the
 * dequantization subgraphs spell with Mod and Add instead (addLowBits, addDisjointOr), and
 * ReduceMean's axes as an input, which opset 17 takes as an attribute.
 */
export const IR_VERSION = 8;
export const OPSET_AI_ONNX = 17;
/** Domain of onnxruntime's contrib ops (MatMulNBits, GroupQueryAttention...); opset 1 is the only one. */
export const MS_DOMAIN = "com.microsoft";
export const OPSET_MS = 1;

const DataType = onnx.TensorProto.DataType;

/** lmpack dtype ⇄ ONNX TensorProto.DataType, for the element types lmpack stores. */
const ONNX_DATA_TYPE: Partial<Record<DType, number>> = {
  F32: DataType.FLOAT,
  U8: DataType.UINT8,
  I8: DataType.INT8,
  U16: DataType.UINT16,
  I16: DataType.INT16,
  I32: DataType.INT32,
  I64: DataType.INT64,
  BOOL: DataType.BOOL,
  F16: DataType.FLOAT16,
  F64: DataType.DOUBLE,
  U32: DataType.UINT32,
  U64: DataType.UINT64,
  BF16: DataType.BFLOAT16,
};
const DTYPE_OF_ONNX = new Map(Object.entries(ONNX_DATA_TYPE).map(([dtype, code]) => [code, dtype as DType]));

/** The element type of an initialiser lmpack built (so a known one). */
export function dtypeOfInitializer(tensor: TensorInit): DType {
  const dtype = DTYPE_OF_ONNX.get(tensor.dataType ?? 0);
  if (dtype === undefined) throw new RangeError(`initializer ${tensor.name ?? ""} has element type ${tensor.dataType} outside lmpack's table`);
  return dtype;
}

export function onnxDataType(dtype: DType): number {
  const code = ONNX_DATA_TYPE[dtype];
  if (code === undefined) throw new FormatError("DTYPE_UNSUPPORTED", `dtype ${dtype} has no ONNX element type here`, { actual: dtype });
  return code;
}

/** An initializer holding `bytes` (little-endian, row-major) inline as raw_data. */
export function initializer(name: string, dtype: DType, dims: readonly number[], bytes: Uint8Array): TensorInit {
  return { name, dataType: onnxDataType(dtype), dims: [...dims], rawData: bytes };
}

/** A tensor-typed graph input or output; string dims are symbolic (dim_param), e.g. "batch". */
export function tensorValueInfo(name: string, dtype: DType, dims: readonly (number | string)[]): ValueInfoInit {
  const dim = dims.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d }));
  return { name, type: { tensorType: { elemType: onnxDataType(dtype), shape: { dim } } } };
}

export function intAttribute(name: string, value: number): AttributeInit {
  return { name, type: onnx.AttributeProto.AttributeType.INT, i: value };
}

/** A model over one graph, importing ai.onnx and com.microsoft at the versions above. */
export function modelProto(graph: GraphInit, docString?: string): ModelInit {
  const [producerName, producerVersion] = PRODUCER.split(" ");
  return {
    irVersion: IR_VERSION,
    opsetImport: [
      { domain: "", version: OPSET_AI_ONNX },
      { domain: MS_DOMAIN, version: OPSET_MS },
    ],
    producerName: producerName ?? "lmpack",
    producerVersion: producerVersion ?? "",
    ...(docString === undefined ? {} : { docString }),
    graph,
  };
}

export function encodeModel(model: ModelInit): Uint8Array {
  return onnx.ModelProto.encode(model).finish();
}

export type DecodedModel = onnx.ModelProto & onnx.ModelProto.$Shape;

/** Parses a ModelProto; FormatError when the bytes are not one. */
export function decodeModel(bytes: Uint8Array, file?: string): DecodedModel {
  try {
    return onnx.ModelProto.decode(bytes);
  } catch (cause) {
    // protobufjs throws RangeError("index out of range") when a length runs past the end.
    const code = cause instanceof RangeError ? "DATA_TRUNCATED" : "CONTAINER_HEADER_INVALID";
    throw new FormatError(code, `not a valid ONNX ModelProto: ${(cause as Error).message}`, { file, cause });
  }
}

/**
 * An int64 field as a number. protobufjs decodes int64 to a Long object whenever the `long`
 * package is installed (pbjs's --force-number only changes the generated types), so every int64
 * read from a decoded model goes through here; values past 2^53 come out unsafe and are refused
 * by the callers' isSafeInteger checks.
 */
export function int64(value: unknown): number {
  if (typeof value === "number") return value;
  if (typeof value === "object" && value !== null) return Number(String(value));
  return Number.NaN;
}

/** Value of INT attribute `name` of a node, undefined when absent; FormatError when of another type. */
export function intAttributeOf(node: onnx.NodeProto.$Properties, name: string, file?: string): number | undefined {
  const attribute = (node.attribute ?? []).find((a) => a.name === name);
  if (attribute === undefined) return undefined;
  if (attribute.type !== onnx.AttributeProto.AttributeType.INT) {
    throw new FormatError("QUANT_CONFIG_INVALID", `attribute "${name}" of node "${node.name ?? ""}" is not an INT`, { file, actual: attribute.type });
  }
  return int64(attribute.i ?? 0);
}

/** key → value of a metadata_props list. */
export function metadataOf(props: readonly onnx.StringStringEntryProto.$Properties[] | null | undefined): Map<string, string> {
  return new Map((props ?? []).map((p) => [p.key ?? "", p.value ?? ""]));
}

/**
 * An inline initializer's bytes as a PackedArray (dims checked against the byte count). Data in
 * raw_data, or in float_data / int32_data as small writers emit it; external data is not read yet.
 */
export function initializerArray(tensor: onnx.TensorProto.$Properties, file?: string): PackedArray {
  const name = tensor.name ?? "";
  const where = { file, tensor: name };
  const dtype = DTYPE_OF_ONNX.get(tensor.dataType ?? 0);
  if (dtype === undefined) throw new FormatError("DTYPE_UNSUPPORTED", "initializer has an element type lmpack does not read", { ...where, actual: tensor.dataType });
  if (tensor.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL) {
    throw new FormatError("DTYPE_UNSUPPORTED", "initializer data is external (data_location EXTERNAL): only inline data is read so far", where);
  }
  const shape = (tensor.dims ?? []).map(int64);
  let nElements = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw new FormatError("SHAPE_INVALID", "initializer has an invalid dimension", { ...where, actual: shape });
    nElements *= d;
    if (!Number.isSafeInteger(nElements)) throw new FormatError("SHAPE_OVERFLOW", "initializer element count overflows", { ...where, actual: shape });
  }
  const bytes = inlineBytes(tensor, dtype, where);
  const expected = nElements * dtypeBytes(dtype);
  if (bytes.length !== expected) {
    throw new FormatError("SHAPE_SIZE_MISMATCH", "initializer data does not match its dims", { ...where, expected: `${expected} bytes`, actual: `${bytes.length} bytes` });
  }
  return { name, dtype, shape: [...shape], bytes, ...(file === undefined ? {} : { file }) };
}

function inlineBytes(tensor: onnx.TensorProto.$Properties, dtype: DType, where: { file: string | undefined; tensor: string }): Uint8Array {
  if (tensor.rawData != null && Object.prototype.hasOwnProperty.call(tensor, "rawData")) return tensor.rawData;
  const floats = tensor.floatData ?? [];
  if (dtype === "F32") return new Uint8Array(Float32Array.from(floats).buffer);
  // int32_data carries every type narrower than 32 bits, one element per entry (fp16 as bits).
  const ints = tensor.int32Data ?? [];
  if (dtype === "U8" || dtype === "I8" || dtype === "BOOL") return Uint8Array.from(ints, (v) => v & 0xff);
  if (dtype === "F16" || dtype === "BF16" || dtype === "U16" || dtype === "I16") return new Uint8Array(Uint16Array.from(ints, (v) => v & 0xffff).buffer);
  if (dtype === "I32") return new Uint8Array(Int32Array.from(ints).buffer);
  throw new FormatError("DTYPE_UNSUPPORTED", `initializer of ${dtype} without raw_data is not read`, where);
}

// ---------------------------------------------------------------- building subgraphs node by node

export function intsAttribute(name: string, values: readonly number[]): AttributeInit {
  return { name, type: onnx.AttributeProto.AttributeType.INTS, ints: [...values] };
}

export function stringAttribute(name: string, value: string): AttributeInit {
  return { name, type: onnx.AttributeProto.AttributeType.STRING, s: new TextEncoder().encode(value) };
}

/** Nodes and initialisers of a graph under construction; every name starts with `prefix`. */
export interface GraphParts {
  prefix: string;
  nodes: NodeInit[];
  initializers: TensorInit[];
  /** Next number for generated names. */
  nextId: number;
}

export function graphParts(prefix: string): GraphParts {
  return { prefix, nodes: [], initializers: [], nextId: 0 };
}

/** Appends a one-output node; returns the name of its (fresh) output. */
export function addNode(g: GraphParts, opType: string, inputs: readonly string[], attribute: AttributeInit[] = []): string {
  const id = g.nextId++;
  const output = `${g.prefix}/${opType}_${id}`;
  g.nodes.push({ name: `${g.prefix}/${opType}_${id}`, opType, input: [...inputs], output: [output], attribute });
  return output;
}

/** Adds initialiser `<prefix>.<name>` holding `bytes`; returns its name. */
export function addInitializer(g: GraphParts, name: string, dtype: DType, dims: readonly number[], bytes: Uint8Array): string {
  const full = `${g.prefix}.${name}`;
  g.initializers.push(initializer(full, dtype, dims, bytes));
  return full;
}

/** The integer and float element types `addConstant` writes. */
export type ConstantDType = "F32" | "I64" | "I32" | "U64" | "U32" | "U16" | "U8";

/** A small constant (a shape, a mask, a lookup table) as an initialiser; dims [] is a scalar. */
export function addConstant(g: GraphParts, dtype: ConstantDType, dims: readonly number[], values: readonly (number | bigint)[]): string {
  const typed =
    dtype === "F32" ? Float32Array.from(values, Number)
    : dtype === "I64" ? BigInt64Array.from(values, (v) => BigInt(v))
    : dtype === "U64" ? BigUint64Array.from(values, (v) => BigInt(v))
    : dtype === "I32" ? Int32Array.from(values, Number)
    : dtype === "U32" ? Uint32Array.from(values, Number)
    : dtype === "U16" ? Uint16Array.from(values, Number)
    : Uint8Array.from(values, Number);
  return addInitializer(g, `const_${g.nextId++}`, dtype, dims, new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength));
}

/**
 * The low `width` bits of unsigned `x` (uint32 or uint64), x mod 2^width: BitwiseAnd with a
 * mask is opset 18, Mod with a power of two is the same and opset 13.
 */
export function addLowBits(g: GraphParts, x: string, width: number, dtype: "U32" | "U64"): string {
  if (!(width >= 1 && width < (dtype === "U32" ? 32 : 64))) throw new RangeError(`addLowBits: width ${width} out of range for ${dtype}`);
  return addNode(g, "Mod", [x, addConstant(g, dtype, [], [2n ** BigInt(width)])]);
}

/**
 * a | b for unsigned a and b with no set bit in common (bit fields placed side by side), which is
 * a + b: BitwiseOr is opset 18.
 */
export function addDisjointOr(g: GraphParts, a: string, b: string): string {
  return addNode(g, "Add", [a, b]);
}

/** Cast of `x` to `dtype`. */
export function addCast(g: GraphParts, x: string, dtype: DType): string {
  return addNode(g, "Cast", [x], [intAttribute("to", onnxDataType(dtype))]);
}

/**
 * float32 `x` rounded once to the 16-bit `dtype` (nearest even, as onnxruntime's Cast does) and
 * widened back, exactly: h(x) of an fp16 reference that computes in f32.
 */
export function addRoundTo16(g: GraphParts, x: string, dtype: "F16" | "BF16"): string {
  return addCast(g, addCast(g, x, dtype), "F32");
}

/** Reshape of `x` to fixed dims. */
export function addReshape(g: GraphParts, x: string, dims: readonly number[]): string {
  return addNode(g, "Reshape", [x, addConstant(g, "I64", [dims.length], dims)]);
}

/** `x[start:end]` along `axis`. */
export function addSlice(g: GraphParts, x: string, axis: number, start: number, end: number): string {
  return addNode(g, "Slice", [x, addConstant(g, "I64", [1], [start]), addConstant(g, "I64", [1], [end]), addConstant(g, "I64", [1], [axis])]);
}

/**
 * The inverse of the permutation `perm` (int64 [n], values 0 … n−1, each once), computed in the
 * graph: inv[perm[j]] = j, a ScatterElements of 0 … n−1 that overwrites every slot once.
 */
export function addInversePermutation(g: GraphParts, perm: string, n: number): string {
  const iota = addNode(g, "Range", [addConstant(g, "I64", [], [0]), addConstant(g, "I64", [], [n]), addConstant(g, "I64", [], [1])]);
  return addNode(g, "ScatterElements", [iota, perm, iota], [intAttribute("axis", 0)]);
}
