#!/usr/bin/env node
// Writes the token windows `lmpack calibrate` would use, as little-endian int32 back to back,
// for test/oracle/hessian_check.py. Usage (after npm run build):
//   node test/oracle/calibration-ids.mjs <model dir> <text> <protocol> <samples> <seq-len> <out.bin>
import { writeFile } from "node:fs/promises";
import { openCheckpoint } from "../../dist/converters/open.js";
import { spread } from "../../dist/cli/commands/calibrate.js";
import { textTokens, tokenizerFor } from "../../dist/cli/commands/text-input.js";

const [model, text, protocol, samples, seqLen, out] = process.argv.slice(2);
const checkpoint = await openCheckpoint(model);
const stream = await textTokens(text, await tokenizerFor(checkpoint, undefined), checkpoint, protocol);
const windows = spread(stream, Number(samples), Number(seqLen));
const all = new Int32Array(windows.length * Number(seqLen));
windows.forEach((w, i) => all.set(w, i * Number(seqLen)));
await writeFile(out, new Uint8Array(all.buffer));
await checkpoint.close();
console.log(`${windows.length} windows of ${seqLen} tokens -> ${out}`);
