/** ONNX export and import of integer-group linears as com.microsoft.MatMulNBits (issue 8). */
export { BATCH_DIM, LAYER_INPUT, LAYER_OUTPUT, METADATA_SCALE_DTYPE, METADATA_SYM, encodeMatMulNBitsLayer, matMulNBitsLayerModel, matMulNBitsNode, writeMatMulNBitsLayer } from "./export-layer.js";
export type { LayerExportOptions } from "./export-layer.js";
export { importMatMulNBits, readMatMulNBitsModel } from "./import.js";
export type { ImportedLinear } from "./import.js";
export { MIN_BLOCK_SIZE, fromMatMulNBits, matMulNBitsBitsFor, matMulNBitsGeometry, toMatMulNBits } from "./matmul-nbits.js";
export type { MatMulNBitsBits, MatMulNBitsGeometry, MatMulNBitsWeights } from "./matmul-nbits.js";
export { IR_VERSION, MS_DOMAIN, OPSET_AI_ONNX, OPSET_MS, decodeModel, encodeModel } from "./model.js";
