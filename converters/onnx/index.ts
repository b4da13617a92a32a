/** ONNX export: whole Llama decoders, MatMulNBits linears (and their import), dequantization subgraphs (issue 8). */
export { exportOnnxDecoder } from "./export-decoder.js";
export { exportOnnxLayers } from "./export-per-layer.js";
export { BATCH_DIM, LAYER_INPUT, LAYER_OUTPUT, METADATA_SCALE_DTYPE, METADATA_SYM, encodeMatMulNBitsLayer, matMulNBitsLayerModel, matMulNBitsNode, writeMatMulNBitsLayer } from "./export-layer.js";
export type { LayerExportOptions } from "./export-layer.js";
export { importMatMulNBits, readMatMulNBitsModel } from "./import.js";
export type { ImportedLinear } from "./import.js";
export { MIN_BLOCK_SIZE, fromMatMulNBits, matMulNBitsBitsFor, matMulNBitsGeometry, toMatMulNBits } from "./matmul-nbits.js";
export type { MatMulNBitsBits, MatMulNBitsGeometry, MatMulNBitsWeights } from "./matmul-nbits.js";
export { IR_VERSION, MS_DOMAIN, OPSET_AI_ONNX, OPSET_MS, decodeModel, encodeModel } from "./model.js";
