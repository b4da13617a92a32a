import { f32BitsToBf16Bits, f32BitsToF16Bits, bf16BitsToF32Bits, f16BitsToF32Bits } from "../dense/float-bits.js";
import type { IntGroupTensor } from "./types.js";

/**
 * Reference dequantization: slow-and-obvious per element, the oracle for layouts, kernels and
 * exporters.
 *
 *   "scale-dtype" (default): W = round_to_scaleDtype(scale · (code − zero)). This is what the
 *     GPTQ/AWQ loaders compute in fp16 (`fp16(scale * fp16(q − z))`), and what the golden
 *     vectors and reference-dense checkpoints hold. The product of a 16-bit scale and a
 *     9-bit integer is exact in float32, so one rounding to the scale's dtype is the only one.
 *   "f32": W = float32(scale · (code − zero)), auto-round's fake-quant weight W_qdq.
 */
export type DequantPrecision = "scale-dtype" | "f32";

export interface DequantOptions {
  precision?: DequantPrecision;
  /**
   * A negative scale times (code − zero) = 0 is −0 in IEEE arithmetic. "positive" (default)
   * writes +0, as the GPTQ loaders' matmul observes the weight (and as forward(eye(K)) gives
   * it: the golden `deq` of GPTQ cases and reference-dense checkpoints); "keep" writes the IEEE
   * product, as AWQ's `dequantize_gemm` does. The two differ only in the sign of zeros.
   */
  negativeZero?: "positive" | "keep";
}

/** Dequantized weight [N][K] row-major, as float32 values. */
export function dequantize(tensor: IntGroupTensor, options: DequantOptions = {}): Float32Array {
  const precision = options.precision ?? "scale-dtype";
  const zeroBias = options.negativeZero === "keep" ? -0 : 0;
  const N = tensor.outFeatures;
  const K = tensor.inFeatures;
  const { groupSize, scaleDtype } = tensor.params;
  const out = new Float32Array(N * K);
  const groupOfColumn = tensor.gIdx ?? Int32Array.from({ length: K }, (_, k) => Math.floor(k / groupSize));
  for (let n = 0; n < N; n++) {
    const row = n * K;
    for (let k = 0; k < K; k++) {
      const at = groupOfColumn[k]! * N + n;
      // x + 0 maps −0 to +0; x + (−0) leaves every value as it is.
      out[row + k] = tensor.scales[at]! * (tensor.codes[row + k]! - tensor.zeros[at]!) + zeroBias;
    }
  }
  if (precision === "scale-dtype" && scaleDtype !== "F32") roundInPlace(out, scaleDtype);
  return out;
}

/** Rounds float32 values to F16 or BF16 (nearest even) and widens them back, in place. */
function roundInPlace(values: Float32Array, dtype: "F16" | "BF16"): void {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const narrow = new Uint16Array(values.length);
  if (dtype === "F16") {
    f32BitsToF16Bits(bits, narrow);
    f16BitsToF32Bits(narrow, bits);
  } else {
    f32BitsToBf16Bits(bits, narrow);
    bf16BitsToF32Bits(narrow, bits);
  }
}
