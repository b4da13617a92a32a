#!/usr/bin/env node
/**
 * Compares a Hessian store written by `lmpack calibrate` with H computed elsewhere (the outside
 * oracle test/oracle/hessian_check.py: transformers fp32 with forward hooks), entry by entry:
 * relative Frobenius error ‖H_lmpack − H_ref‖ / ‖H_ref‖ and the largest element difference
 * relative to the largest |H_ref| element.
 *
 *   node dist/bench/hessian-compare.js <lmpack store> <reference.safetensors>...
 */
import { openHessianStore } from "../converters/hessians/store.js";
import { SafetensorsFile } from "../converters/safetensors/reader.js";
import { convertFloatBytes } from "../formats/dense/convert.js";
import { viewAs } from "../formats/packed-array.js";

const [storePath, ...references] = process.argv.slice(2);
if (storePath === undefined || references.length === 0) throw new Error("usage: hessian-compare <lmpack store> <reference.safetensors>...");
const store = await openHessianStore(storePath);
console.log("| layer input | size | relative Frobenius error | max element error / max element |");
console.log("|---|---|---|---|");
let worst = 0;
let entries = 0;
for (const file of references) {
  const reference = await SafetensorsFile.open(file);
  for (const info of reference.tensors) {
    const size = info.shape[0]!;
    const ref = viewAs(convertFloatBytes(await reference.read(info.name), info.dtype as "F32", "F32"), Float32Array);
    const ours = await store.get(info.name, size);
    if (ours === undefined) throw new Error(`the lmpack store has no entry for ${info.name}`);
    let diff = 0;
    let norm = 0;
    let maxDiff = 0;
    let maxRef = 0;
    for (let i = 0; i < ref.length; i++) {
      const d = ours.data[i]! - ref[i]!;
      diff += d * d;
      norm += ref[i]! * ref[i]!;
      maxDiff = Math.max(maxDiff, Math.abs(d));
      maxRef = Math.max(maxRef, Math.abs(ref[i]!));
    }
    const relative = Math.sqrt(diff / norm);
    worst = Math.max(worst, relative);
    entries++;
    console.log(`| ${info.name} | ${size} | ${relative.toExponential(3)} | ${(maxDiff / maxRef).toExponential(3)} |`);
  }
  await reference.close();
}
await store.close();
console.log(`\n${entries} entries; largest relative Frobenius error ${worst.toExponential(3)}`);
