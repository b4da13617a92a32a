import { dequantizeVptq, type VptqSemantics } from "../../formats/vptq/reference.js";
import type { Checkpoint, PackedVptq, TensorEntry } from "../checkpoint.js";
import { packedEntry } from "../packed-entry.js";

/**
 * A checkpoint entry for a VPTQ linear `<prefix>.weight`: dense data in the codebooks' dtype,
 * decoded with the CUDA kernel's single rounding by default (what transformers and vptq run
 * for prefill on a GPU), or the torch fallback's two roundings.
 */
export function vptqEntry(name: string, file: string, packed: PackedVptq, notes?: Record<string, unknown>, semantics: VptqSemantics = "cuda"): TensorEntry {
  return packedEntry(name, file, packed, packed.dtype, async () => {
    const halves = dequantizeVptq(await packed.load(), semantics);
    return new Uint8Array(halves.buffer, halves.byteOffset, halves.byteLength);
  }, { ...notes, dequantSemantics: semantics });
}

/** The checkpoint with its VPTQ layers decoding in `semantics` (other tensors unchanged). */
export function withVptqSemantics(checkpoint: Checkpoint, semantics: VptqSemantics): Checkpoint {
  const tensors = checkpoint.tensors.map((t) => (t.packed?.representation === "vptq" ? vptqEntry(t.name, t.file, t.packed, t.notes, semantics) : t));
  return { ...checkpoint, tensors };
}
