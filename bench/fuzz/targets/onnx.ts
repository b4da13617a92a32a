import { importMatMulNBits } from "../../../converters/onnx/import.js";
import { typedErrorsOnlySync } from "../harness.js";

/**
 * ONNX: the ModelProto decoder (protobufjs code generated from schemas/onnx.proto), initializer
 * data (raw_data, float_data, int32_data), and every com.microsoft MatMulNBits node back into
 * integer groups (attributes, B / scales / zero_points geometry, act-order Gather).
 */
export function fuzz(data: Buffer): void {
  typedErrorsOnlySync(data, () => {
    importMatMulNBits(data, "fuzz.onnx");
  });
}
