import { bf16BitsToF32Bits, f16BitsToF32Bits, f32BitsToBf16Bits, f32BitsToF16Bits } from "../dense/float-bits.js";
import { ConversionError } from "../errors.js";
import { bytesOf, expectArray, viewAs, type PackedArray } from "../packed-array.js";
import type { ScaleDType } from "./types.js";

/** Scales as stored (F16, BF16 or F32) → float32 values (exact: every such value is a float32). */
export function decodeScales(array: PackedArray, shape: readonly number[]): { values: Float32Array; dtype: ScaleDType } {
  expectArray(array, ["F16", "BF16", "F32"], shape);
  const dtype = array.dtype as ScaleDType;
  if (dtype === "F32") return { values: viewAs(array.bytes, Float32Array).slice(), dtype };
  const bits16 = viewAs(array.bytes, Uint16Array);
  const values = new Float32Array(bits16.length);
  const asBits = new Uint32Array(values.buffer);
  if (dtype === "F16") f16BitsToF32Bits(bits16, asBits);
  else bf16BitsToF32Bits(bits16, asBits);
  return { values, dtype };
}

/**
 * float32 scale values → stored bytes in `dtype`. Refuses (NOT_REPRESENTABLE) when a value
 * would change: a repack carries scales over exactly or not at all.
 */
export function encodeScales(values: Float32Array, dtype: ScaleDType, layer: string): Uint8Array {
  if (dtype === "F32") return bytesOf(values.slice());
  const bits16 = new Uint16Array(values.length);
  const asBits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  if (dtype === "F16") f32BitsToF16Bits(asBits, bits16);
  else f32BitsToBf16Bits(asBits, bits16);
  const back = new Uint32Array(values.length);
  if (dtype === "F16") f16BitsToF32Bits(bits16, back);
  else bf16BitsToF32Bits(bits16, back);
  for (let i = 0; i < values.length; i++) {
    if (back[i] !== asBits[i]) {
      throw new ConversionError("NOT_REPRESENTABLE", `scale ${i} is not exactly representable in ${dtype}`, { tensor: layer, expected: dtype, actual: values[i] });
    }
  }
  return bytesOf(bits16);
}
