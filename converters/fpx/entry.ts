import { dequantizeFpx } from "../../formats/fpx/reference.js";
import { bytesOf } from "../../formats/packed-array.js";
import type { PackedFpx, TensorEntry } from "../checkpoint.js";
import { packedEntry } from "../packed-entry.js";

/**
 * A checkpoint entry for an FPx linear `<prefix>.weight`. Its dense data is F32, as torchao's
 * `from_scaled_tc_floatx` returns it: decode(code) · scale is exact in f32 but not in f16, so
 * F32 loses nothing (`--dtype f16` then gives FP6-LLM's fp16 kernel output, one rounding).
 */
export function fpxEntry(name: string, file: string, packed: PackedFpx, notes?: Record<string, unknown>): TensorEntry {
  return packedEntry(name, file, packed, "F32", async () => bytesOf(dequantizeFpx(await packed.load())), notes);
}
