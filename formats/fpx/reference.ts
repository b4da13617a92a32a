import type { FpxFormat } from "./format.js";
import { dequantizeFpxSimd } from "./dequant-simd.js";
import { unpackTc } from "./tc-layout.js";
import { scaleValues, type FpxTensor } from "./types.js";

/**
 * Reference dequantization, as torchao's `from_scaled_tc_floatx`: W = f32(decode(code) · f32(scale)),
 * one exact product per element (decode has at most mbits + 1 significant bits, an fp16 scale 11).
 * FP6-LLM's fp16 kernel output is this value rounded once to fp16.
 *
 * Runs on the WebAssembly SIMD kernels (dequant-simd.ts) where available; otherwise unpacks and
 * decodes by table: each row's 2^nbits products are computed once, so the inner loop is a byte
 * load and a table load per element. Both give the same bits.
 */
export function dequantizeFpx(t: FpxTensor, into?: Float32Array): Float32Array {
  const simd = dequantizeFpxSimd(t, into);
  if (simd !== undefined) return simd;
  const codes = unpackTc(t.packed, t.outFeatures, t.inFeatures, t.format.nbits);
  return dequantizeCodes(codes, t.outFeatures, t.inFeatures, t.format, t.scales, into);
}

/** Dequantization of row-major codes [M, N] with per-row fp16 scales. */
export function dequantizeCodes(codes: Uint8Array, M: number, N: number, format: FpxFormat, scales: Uint16Array, into?: Float32Array): Float32Array {
  const out = into ?? new Float32Array(M * N);
  const scale = scaleValues(scales);
  const values = format.values;
  const table = new Float32Array(values.length);
  for (let r = 0; r < M; r++) {
    const s = scale[r]!;
    for (let code = 0; code < values.length; code++) table[code] = values[code]! * s;
    const base = r * N;
    for (let c = 0; c < N; c++) out[base + c] = table[codes[base + c]!]!;
  }
  return out;
}
