import { parseArgs } from "node:util";
import { exportLmpack, exportSafetensors, openCheckpoint } from "../index.js";

/**
 * One conversion through the library, run by convert-stream.js in a process of its own so
 * that the peak RSS it reports belongs to that conversion alone.
 *
 *   node dist/bench/convert-child.js <source> --to safetensors|lmpack --out <path> [--dtype f32|f16|bf16] [--checksum crc32|sha256]
 *
 * Prints one JSON line on success: {"maxRssKiB": …, "convertSeconds": …}.
 */

const DTYPES = { f32: "F32", f16: "F16", bf16: "BF16" } as const;

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    to: { type: "string" },
    out: { type: "string" },
    dtype: { type: "string" },
    checksum: { type: "string" },
  },
});
const source = positionals[0];
const { to, out } = values;
if (source === undefined || out === undefined || (to !== "safetensors" && to !== "lmpack")) {
  throw new Error("usage: convert-child.js <source> --to safetensors|lmpack --out <path> [--dtype f32|f16|bf16] [--checksum crc32|sha256]");
}
const dtype = values.dtype === undefined ? undefined : DTYPES[values.dtype as keyof typeof DTYPES];
if (values.dtype !== undefined && dtype === undefined) throw new Error(`unknown --dtype ${values.dtype}`);
const checksum = values.checksum;
if (checksum !== undefined && checksum !== "crc32" && checksum !== "sha256") throw new Error(`unknown --checksum ${checksum}`);

const started = performance.now();
const checkpoint = await openCheckpoint(source);
try {
  if (to === "safetensors") await exportSafetensors(checkpoint, out, dtype === undefined ? {} : { dtype });
  else await exportLmpack(checkpoint, out, { ...(dtype === undefined ? {} : { dtype }), ...(checksum === undefined ? {} : { checksum }) });
} finally {
  await checkpoint.close();
}
const convertSeconds = (performance.now() - started) / 1000;
process.stdout.write(JSON.stringify({ maxRssKiB: process.resourceUsage().maxRSS, convertSeconds }) + "\n");
