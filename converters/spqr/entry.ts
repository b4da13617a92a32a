import { dequantizeSpqr } from "../../formats/spqr/reference.js";
import type { PackedSpqr, TensorEntry } from "../checkpoint.js";
import { packedEntry } from "../packed-entry.js";

/**
 * A checkpoint entry for a SpQR linear `<prefix>.weight`: dense data is F16 in original column
 * order, exactly the original host dequantizer's output (SpQR computes in fp16 only).
 */
export function spqrEntry(name: string, file: string, packed: PackedSpqr, notes?: Record<string, unknown>): TensorEntry {
  return packedEntry(name, file, packed, "F16", async () => {
    const halves = dequantizeSpqr(await packed.load());
    return new Uint8Array(halves.buffer, halves.byteOffset, halves.byteLength);
  }, notes);
}
