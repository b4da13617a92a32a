import { readFile } from "node:fs/promises";
import { f16BitsToF32Bits } from "../../formats/dense/float-bits.js";
import { ConversionError, FormatError, IoError } from "../../formats/errors.js";
import { encodeScales } from "../../formats/int-group/scales.js";
import type { IntGroupTensor, ScaleDType } from "../../formats/int-group/types.js";
import { expectArray, viewAs, type PackedArray } from "../../formats/packed-array.js";
import { restoreActOrder } from "./act-order.js";
import { INPUT_ORDER_SUFFIX, METADATA_CODE_BITS, METADATA_SCALE_DTYPE, METADATA_SYM } from "./export-layer.js";
import { fromMatMulNBits, isPowerOfTwo, matMulNBitsGeometry, MIN_BLOCK_SIZE, type MatMulNBitsBits } from "./matmul-nbits.js";
import type { onnx } from "../../schemas/gen/onnx.js";
import { decodeModel, initializerArray, intAttributeOf, metadataOf, MS_DOMAIN, type DecodedModel } from "./model.js";

/**
 * Reads the MatMulNBits nodes of an ONNX model back into integer groups: every node's B,
 * scales and zero_points initialisers, exactly (matmul-nbits.ts). Models lmpack wrote carry the
 * scale dtype and sym flag in node metadata; for others the scale dtype is that of the scales
 * initialiser and sym means "no zero_points input".
 *
 * Act-order layers come back with their g_idx and codes in source column order (act-order.ts).
 * Not read (refused with a typed error rather than guessed): external data, float zero points
 * (fractional in general: no integer image), and the g_idx / bias inputs, which lmpack does not
 * write.
 */

export interface ImportedLinear {
  /** The node's name (lmpack writes the layer's tensor name there). */
  name: string;
  tensor: IntGroupTensor;
}

/** Reads the model at `path`. */
export async function readMatMulNBitsModel(path: string): Promise<ImportedLinear[]> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code === "ENOENT" ? "NOT_FOUND" : "READ_FAILED";
    throw new IoError(code, `cannot read ONNX model: ${(cause as Error).message}`, { file: path, cause });
  }
  return importMatMulNBits(bytes, path);
}

/** Every com.microsoft MatMulNBits node of the model in `bytes`, in graph order. */
export function importMatMulNBits(bytes: Uint8Array, file?: string): ImportedLinear[] {
  const model = decodeModel(bytes, file);
  const initializers = initializersByName(model, file);
  const allNodes = model.graph?.node ?? [];
  const nodes = allNodes.filter((n) => n.opType === "MatMulNBits" && n.domain === MS_DOMAIN);
  if (nodes.length === 0) throw new FormatError("LAYOUT_UNKNOWN", "the model has no com.microsoft MatMulNBits node", { file });
  const producers = new Map<string, NodeProto>();
  for (const node of allNodes) for (const output of node.output ?? []) producers.set(output, node);
  return nodes.map((node) => {
    const name = node.name ?? "";
    const tensor = importNode(node, initializers, file);
    const order = groupOrderOf(producers.get(node.input?.[0] ?? ""), initializers, tensor.inFeatures, file);
    return { name, tensor: order === undefined ? tensor : restoreActOrder(tensor, order, name, file) };
  });
}

/**
 * The column order of an act-order layer (act-order.ts): lmpack writes it as the initialiser
 * `<layer>.input_order` of a Gather along the last axis that feeds MatMulNBits. Any other
 * producer of the input is not ours to interpret: the codes are read as they stand.
 */
function groupOrderOf(producer: NodeProto | undefined, initializers: Map<string, TensorProto>, K: number, file: string | undefined): Int32Array | undefined {
  const indicesName = producer?.input?.[1] ?? "";
  if (producer?.opType !== "Gather" || (producer.domain ?? "") !== "" || !indicesName.endsWith(INPUT_ORDER_SUFFIX)) return undefined;
  const axis = intAttributeOf(producer, "axis", file) ?? 0;
  const tensor = initializers.get(indicesName);
  if (axis !== -1 || tensor === undefined) throw new FormatError("LAYOUT_UNKNOWN", "act-order Gather must take its indices from an initializer along axis −1", { file, tensor: indicesName, actual: axis });
  const indices = initializerArray(tensor, file);
  expectArray(indices, ["I64"], [K]);
  const view = new DataView(indices.bytes.buffer, indices.bytes.byteOffset, indices.bytes.byteLength);
  const order = new Int32Array(K);
  for (let j = 0; j < K; j++) {
    const k = view.getBigInt64(j * 8, true);
    if (k < 0n || k >= BigInt(K)) throw new FormatError("PACKED_VALUE_INVALID", `column order entry ${j} = ${k} is outside 0 … ${K - 1}`, { file, tensor: indicesName, expected: `0 … ${K - 1}`, actual: String(k) });
    order[j] = Number(k);
  }
  return order;
}

type NodeProto = onnx.NodeProto.$Properties;
type TensorProto = onnx.TensorProto.$Properties;

function importNode(node: NodeProto, initializers: Map<string, TensorProto>, file: string | undefined): IntGroupTensor {
  const name = node.name ?? "";
  const where = { file, tensor: name };
  const attr = (key: string): number => {
    const value = intAttributeOf(node, key, file);
    if (value === undefined || !Number.isSafeInteger(value) || value < 1) {
      throw new FormatError("QUANT_CONFIG_INVALID", `MatMulNBits attribute "${key}" is missing or not a positive integer`, { ...where, actual: value });
    }
    return value;
  };
  const [K, N, bits, blockSize] = [attr("K"), attr("N"), attr("bits"), attr("block_size")];
  if (bits !== 2 && bits !== 4 && bits !== 8) throw new FormatError("QUANT_CONFIG_INVALID", "MatMulNBits bits must be 2, 4 or 8", { ...where, actual: bits });
  if (!isPowerOfTwo(blockSize) || blockSize < MIN_BLOCK_SIZE) {
    throw new FormatError("QUANT_CONFIG_INVALID", `MatMulNBits block_size must be a power of two ≥ ${MIN_BLOCK_SIZE}`, { ...where, actual: blockSize });
  }
  const inputs = node.input ?? [];
  if ((inputs[4] ?? "") !== "") throw new FormatError("LAYOUT_UNKNOWN", "MatMulNBits with a g_idx input (deprecated act-order) is not read", where);
  if ((inputs[5] ?? "") !== "") throw new FormatError("LAYOUT_UNKNOWN", "MatMulNBits with a bias input is not read", where);
  const { kBlocks, blobBytes, zeroPointBytesPerRow } = matMulNBitsGeometry(K, bits, blockSize);
  const get = (index: number, role: string): PackedArray => {
    const inputName = inputs[index] ?? "";
    const tensor = initializers.get(inputName);
    if (tensor === undefined) throw new FormatError("TENSOR_MISSING", `MatMulNBits ${role} input "${inputName}" is not an initializer`, where);
    return initializerArray(tensor, file);
  };
  const b = get(1, "B");
  expectArray(b, ["U8"], [N, kBlocks, blobBytes]);
  const scaleArray = get(2, "scales");
  // 1-D [N·k_blocks] scales are what models before ORT PR #24828 carry; same order.
  expectArray(scaleArray, ["F32", "F16"], scaleArray.shape.length === 1 ? [N * kBlocks] : [N, kBlocks]);
  let zeroPoints: Uint8Array | undefined;
  if ((inputs[3] ?? "") !== "") {
    const zp = get(3, "zero_points");
    if (zp.dtype !== "U8") throw new ConversionError("NOT_REPRESENTABLE", "float zero points (possibly fractional) have no integer-group image", { ...where, expected: "U8", actual: zp.dtype });
    expectArray(zp, ["U8"], [N, zeroPointBytesPerRow]);
    zeroPoints = zp.bytes;
  }
  const scales = scalesAsF32(scaleArray);
  const metadata = metadataOf(node.metadataProps);
  const scaleDtype = recordedScaleDtype(metadata.get(METADATA_SCALE_DTYPE), scaleArray.dtype === "F16" ? "F16" : "F32", where);
  const symText = metadata.get(METADATA_SYM);
  if (symText !== undefined && symText !== "true" && symText !== "false") throw new FormatError("METADATA_INVALID", `${METADATA_SYM} must be "true" or "false"`, { ...where, actual: symText });
  const sym = symText === undefined ? zeroPoints === undefined : symText === "true";
  const bitsText = metadata.get(METADATA_CODE_BITS);
  const codeBits = bitsText === undefined ? bits : Number(bitsText);
  if (codeBits !== 2 && codeBits !== 3 && codeBits !== 4 && codeBits !== 8) throw new FormatError("METADATA_INVALID", `${METADATA_CODE_BITS} must be 2, 3, 4 or 8`, { ...where, actual: bitsText });
  try {
    encodeScales(scales, scaleDtype, name);
  } catch (cause) {
    if (!(cause instanceof ConversionError)) throw cause;
    throw new FormatError("PACKED_VALUE_INVALID", `scales are recorded as ${scaleDtype} but one is not a ${scaleDtype} value`, { ...where, cause });
  }
  return fromMatMulNBits({ K, N, bits: bits as MatMulNBitsBits, blockSize, b: b.bytes, scales, zeroPoints }, { sym, scaleDtype, bits: codeBits }, name, file);
}

/** Initializers by name; decoded only when a MatMulNBits node asks (others may be of any type). */
function initializersByName(model: DecodedModel, file: string | undefined): Map<string, TensorProto> {
  const byName = new Map<string, TensorProto>();
  for (const tensor of model.graph?.initializer ?? []) {
    const name = tensor.name ?? "";
    if (byName.has(name)) throw new FormatError("TENSOR_DUPLICATE", "two initializers share a name", { file, tensor: name });
    byName.set(name, tensor);
  }
  return byName;
}

function scalesAsF32(array: PackedArray): Float32Array {
  if (array.dtype === "F32") return viewAs(array.bytes, Float32Array).slice();
  const values = new Float32Array(array.bytes.length / 2);
  f16BitsToF32Bits(viewAs(array.bytes, Uint16Array), new Uint32Array(values.buffer));
  return values;
}

function recordedScaleDtype(text: string | undefined, fallback: ScaleDType, where: { file: string | undefined; tensor: string }): ScaleDType {
  if (text === undefined) return fallback;
  if (text === "F16" || text === "BF16" || text === "F32") return text;
  throw new FormatError("METADATA_INVALID", `${METADATA_SCALE_DTYPE} must be F16, BF16 or F32`, { ...where, actual: text });
}
