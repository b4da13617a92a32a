#!/usr/bin/env node
/**
 * Why a kernel's first launch on a buffer can be slow: the same int-group and ggml launches
 * timed call after call (each call uploads, launches, downloads; the context's pool hands the
 * same buffers back). Prints each call's kernel milliseconds.
 *
 *   node dist/bench/gpu-first-touch.js
 */
import { groupCount, type IntGroupTensor } from "../formats/int-group/types.js";
import { GpuEngine } from "../kernels/engine.js";
import { dequantGgmlGpu } from "../kernels/ggml/launch.js";
import { dequantIntGroupGpu } from "../kernels/int-group/launch.js";

const [N, K] = [11008, 4096];
const engine = await GpuEngine.open();
const groups = groupCount(K, 128);
const t: IntGroupTensor = { params: { bits: 4, groupSize: 128, sym: false, scaleDtype: "F16" }, outFeatures: N, inFeatures: K, codes: new Uint8Array(N * K).fill(3), scales: new Float32Array(groups * N).fill(0.01), zeros: new Uint16Array(groups * N).fill(8), gIdx: undefined };
const q8 = new Uint8Array((N * K / 32) * 34);
const line = (label: string, ms: number[]) => console.log(`${label.padEnd(40)} ${ms.map((m) => m.toFixed(3)).join("  ")}`);
line("int-group separate calls, f16 out", Array.from({ length: 5 }, () => dequantIntGroupGpu(engine, t, { output: "f16" }).kernelMilliseconds));
line("int-group one call, 5 launches", dequantIntGroupGpu(engine, t, { output: "f16", launches: 5 }).launchMilliseconds!);
line("ggml Q8_0 separate calls, f16 out", Array.from({ length: 5 }, () => dequantGgmlGpu(engine, "Q8_0", q8, N * K, { output: "f16" }).kernelMilliseconds));
line("ggml Q8_0 separate calls, no weights", Array.from({ length: 5 }, () => dequantGgmlGpu(engine, "Q8_0", q8, N * K, { weights: false }).kernelMilliseconds));
engine.close();
