import type { Checkpoint, PackedTensor, TensorEntry } from "../checkpoint.js";
import { fpxEntry } from "../fpx/entry.js";
import { intGroupEntry } from "../int-group/entry.js";
import { spqrEntry } from "../spqr/entry.js";
import { vptqEntry } from "../vptq/entry.js";
import type { VptqSemantics } from "../../formats/vptq/reference.js";

/**
 * The checkpoint with every packed layer loaded at most once: `packed.load()` and `read()` share
 * one memoized quantization. Sequential calibration reads a layer's dequantized weights to feed
 * the next layers, and the exporter later loads the same layer to write it; the SpQR and VPTQ
 * views quantize afresh on every load (they cache nothing), so without this each layer would be
 * quantized twice, and asked for its Hessian after the calibration had moved past it.
 *
 * Memory: every packed layer stays referenced until the checkpoint is dropped, i.e. the packed
 * model's size (int-group's view already keeps its layers the same way).
 */
export function quantizedOnce(checkpoint: Checkpoint): Checkpoint {
  return { ...checkpoint, tensors: checkpoint.tensors.map(memoizedEntry) };
}

function memoizedEntry(entry: TensorEntry): TensorEntry {
  const packed = entry.packed;
  if (packed === undefined) return entry;
  // Each factory's read() calls the `load` of the object it is given: the memoized one.
  const once = <T extends PackedTensor>(p: T): T => {
    let result: ReturnType<T["load"]> | undefined;
    return { ...p, load: () => (result ??= p.load() as ReturnType<T["load"]>) };
  };
  switch (packed.representation) {
    case "int-group":
      return intGroupEntry(entry.name, entry.file, once(packed), entry.notes);
    case "fpx":
      return fpxEntry(entry.name, entry.file, once(packed), entry.notes);
    case "spqr":
      return spqrEntry(entry.name, entry.file, once(packed), entry.notes);
    case "vptq": {
      const semantics = entry.notes?.["dequantSemantics"] as VptqSemantics | undefined;
      return vptqEntry(entry.name, entry.file, once(packed), entry.notes, semantics);
    }
  }
}
