#!/usr/bin/env node
/**
 * FP6/FPx quantize+pack throughput on one core, against reading the same layer:
 *
 *   node dist/bench/fp6-speed.js [--shapes 4096x4096,4096x11008] [--format e3m2] [--reps 5]
 *
 * Per shape [out×in], a Gaussian-like f16 layer (0.2% outliers ×20) is written to a temporary
 * safetensors file; the table gives the best of `--reps` runs of: reading the tensor back with
 * lmpack's reader (warm page cache), quantize+pack from the f16 bytes in both code modes on the
 * WebAssembly SIMD path, the same on the scalar JavaScript path (what `node --jitless` or
 * LMPACK_NO_WASM=1 run), and reference dequantization to f32. MB/s are MB of f16 input per
 * second. Everything runs on the main thread: one core. Prints a markdown table.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { convertFloatBytes } from "../formats/dense/convert.js";
import { parseFormat } from "../formats/fpx/format.js";
import { quantizeFpx, quantizeFpxCodes } from "../formats/fpx/quantize.js";
import { dequantizeFpx } from "../formats/fpx/reference.js";
import { fpxKernel } from "../formats/fpx/simd-kernel.js";
import { packTc } from "../formats/fpx/tc-layout.js";
import type { CodesFrom } from "../formats/fpx/types.js";
import { SafetensorsFile } from "../converters/safetensors/reader.js";
import { SafetensorsWriter } from "../converters/safetensors/writer.js";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

function gaussianF16(count: number, seed: number): Uint8Array {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const w = new Float32Array(count);
  for (let i = 0; i < count; i++) w[i] = (next() + next() + next() - 1.5) * 0.03 * (next() < 0.002 ? 20 : 1);
  return convertFloatBytes(new Uint8Array(w.buffer), "F32", "F16");
}

async function best(reps: number, run: () => unknown): Promise<number> {
  let fastest = Infinity;
  for (let r = 0; r < reps; r++) {
    const t = performance.now();
    await run();
    fastest = Math.min(fastest, performance.now() - t);
  }
  return fastest / 1000;
}

const shapes = arg("shapes", "4096x4096,4096x11008").split(",").map((s) => s.split("x").map(Number) as [number, number]);
const format = parseFormat(arg("format", "e3m2"));
const reps = Number(arg("reps", "5"));
const modes: CodesFrom[] = ["stored-scale", "f32-scale"];
const dir = await mkdtemp(join(tmpdir(), "lmpack-fp6-bench-"));
console.log(`# FPx (${format.name}) quantize+pack speed, one core (CPU: ${cpus()[0]?.model ?? "?"}, Node ${process.version}, SIMD kernel ${fpxKernel(format) === undefined ? "unavailable" : "on"}, ${new Date().toISOString().slice(0, 10)})\n`);
console.log("| shape [out×in] | f16 MB | read s (MB/s) | SIMD stored-scale s (MB/s) | SIMD f32-scale s (MB/s) | scalar stored-scale s (MB/s) | dequant f32 s (MB/s) |");
console.log("|---|---|---|---|---|---|---|");
try {
  for (const [M, N] of shapes) {
    const bytes = gaussianF16(M * N, M * 7 + N);
    const path = join(dir, `${M}x${N}.safetensors`);
    const writer = await SafetensorsWriter.create(path, [{ name: "w", dtype: "F16", shape: [M, N] }]);
    await writer.write("w", bytes);
    await writer.finish();
    const megabytes = bytes.length / 1e6;
    const cell = (seconds: number) => `${seconds.toFixed(3)} (${(megabytes / seconds).toFixed(0)})`;
    const read = await best(reps, async () => {
      const file = await SafetensorsFile.open(path);
      await file.read("w");
      await file.close();
    });
    const simd = [];
    for (const codesFrom of modes) simd.push(await best(reps, () => quantizeFpx({ bytes, dtype: "F16" }, M, N, { format, codesFrom })));
    const f32 = new Float32Array(convertFloatBytes(bytes, "F16", "F32").buffer);
    const scalar = await best(Math.min(reps, 2), () => {
      const f32Again = new Float32Array(convertFloatBytes(bytes, "F16", "F32").buffer);
      const q = quantizeFpxCodes(f32Again, M, N, { format, codesFrom: "stored-scale" });
      packTc(q.codes, M, N, format.nbits);
    });
    const tensor = quantizeFpx(f32, M, N, { format, codesFrom: "stored-scale" });
    const dequant = await best(reps, () => dequantizeFpx(tensor));
    console.log(`| ${M}×${N} | ${megabytes.toFixed(1)} | ${cell(read)} | ${cell(simd[0]!)} | ${cell(simd[1]!)} | ${cell(scalar)} | ${cell(dequant)} |`);
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
