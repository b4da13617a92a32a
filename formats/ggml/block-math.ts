/**
 * Shared arithmetic of the ggml block codecs: fp16 scale fields, gguf-py's rounding helpers and
 * the length checks every codec runs at entry.
 *
 * Bit-exactness with gguf-py (quants.py at llama.cpp c392e509, numpy float32 arithmetic) rests
 * on three facts, used throughout formats/ggml:
 *
 * - A single IEEE operation on float32 operands, done in float64 and then stored to float32, gives
 *   the float32 result: binary64 has 53 ≥ 2·24 + 2 significand bits, so the double rounding is
 *   harmless. Chains of operations need Math.fround after each step unless the intermediates
 *   are exact.
 * - In every dequantizer the intermediates are exact. An fp16 scale has 11 significant bits and
 *   is a multiple of 2^-24 below 2^16; the integer factors of one product (sub-block scale times
 *   code or grid level) carry at most 12 significant bits together (Q6_K: 127 · 31). So each
 *   product is a multiple of 2^-24 below 2^29 with at most 23 significant bits: exact in float32,
 *   as numpy computes it, and in float64, as we do. The one addition or subtraction (`+ m`,
 *   `− dmin·m`) is then the only rounding, in both; its exact result spans under 53 bits.
 * - Quantizers round at every float32 step (Math.fround), as numpy does.
 */

import { f32BitsToF16Bit, halfPrecisionValues } from "../dense/float-bits.js";
import type { GgmlTypeCodec } from "./types.js";

/** Value of every fp16 bit pattern (65,536 entries), for reading scale fields. */
export const F16_VALUE: Float32Array = halfPrecisionValues("F16");
/**
 * The same table as f32 bit patterns. Copy through this table rather than through a JS number
 * when NaN payloads must survive: a float load and store may quiet a signalling NaN.
 */
export const F16_BITS: Uint32Array = new Uint32Array(F16_VALUE.buffer, F16_VALUE.byteOffset, F16_VALUE.length);

/** The fp16 value stored little-endian at `src[at]`. */
export function readF16(src: Uint8Array, at: number): number {
  return F16_VALUE[src[at]! | (src[at + 1]! << 8)]!;
}

/**
 * f32 bit pattern → fp16 bit pattern as numpy's `astype(np.float16)` (npy_floatbits_to_halfbits,
 * numpy 1.24): round to nearest even, overflow to ±inf. A NaN keeps its top 10 payload bits,
 * and one whose kept payload is zero gets payload 1, so 0x7F800001 becomes 0x7C01 (IEEE
 * hardware would quiet it to 0x7E00 instead).
 */
export function f16BitsNumpy(u: number): number {
  if ((u & 0x7fffffff) > 0x7f800000) {
    const h = ((u >>> 16) & 0x8000) | 0x7c00 | ((u >>> 13) & 0x3ff);
    return (h & 0x3ff) === 0 ? h + 1 : h;
  }
  return f32BitsToF16Bit(u);
}

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** Stores float32 value `value` (already rounded to float32) as fp16 at `out[at]`, little-endian. */
export function writeF16(out: Uint8Array, at: number, value: number): void {
  scratchF32[0] = value;
  const h = f16BitsNumpy(scratchU32[0]!);
  out[at] = h & 0xff;
  out[at + 1] = h >>> 8;
}

/**
 * gguf-py's `np_roundf`: round half away from zero, like C `roundf`. For a float32 `x`,
 * `|x| + 0.5` is exact in float64 up to the last bit that matters, so floor gives the same
 * integer as numpy's `floor(a) + floor(2·(a − floor(a)))`.
 */
export function roundHalfAway(x: number): number {
  return x < 0 ? -Math.floor(0.5 - x) : Math.floor(x + 0.5);
}

/** The index of the first element of largest magnitude in x[from, from + n) (numpy argmax of abs). */
export function argMaxAbs(x: Float32Array, from: number, n: number): number {
  let best = from;
  let bestAbs = Math.abs(x[from]!);
  for (let i = from + 1; i < from + n; i++) {
    const a = Math.abs(x[i]!);
    if (a > bestAbs) {
      bestAbs = a;
      best = i;
    }
  }
  return best;
}

/** The largest |x| in x[from, from + n) (numpy `abs(blocks).max()`). */
export function maxAbs(x: Float32Array, from: number, n: number): number {
  let m = 0;
  for (let i = from; i < from + n; i++) {
    const a = Math.abs(x[i]!);
    if (a > m) m = a;
  }
  return m;
}

function checkBlocks(codec: GgmlTypeCodec, blocks: number): void {
  if (!Number.isSafeInteger(blocks) || blocks < 0) {
    throw new RangeError(`${codec.name}: block count must be a non-negative integer, got ${blocks}`);
  }
}

/**
 * Entry check of `dequantize`: `src` holds at least `blocks` blocks and `out` room for their
 * elements. Codecs read only the first blocks·typeSize bytes and write only the first
 * blocks·blockSize elements, so longer buffers are allowed.
 */
export function checkDequantize(codec: GgmlTypeCodec, src: Uint8Array, blocks: number, out: Float32Array): void {
  checkBlocks(codec, blocks);
  const nBytes = blocks * codec.typeSize;
  if (src.length < nBytes) {
    throw new RangeError(`${codec.name}: ${blocks} blocks need ${nBytes} bytes of input, got ${src.length}`);
  }
  const nElements = blocks * codec.blockSize;
  if (out.length < nElements) {
    throw new RangeError(`${codec.name}: ${blocks} blocks need room for ${nElements} output elements, got ${out.length}`);
  }
}

/** Entry check of `quantize`, the mirror of checkDequantize. */
export function checkQuantize(codec: GgmlTypeCodec, x: Float32Array, blocks: number, out: Uint8Array): void {
  checkBlocks(codec, blocks);
  const nElements = blocks * codec.blockSize;
  if (x.length < nElements) {
    throw new RangeError(`${codec.name}: ${blocks} blocks need ${nElements} input elements, got ${x.length}`);
  }
  const nBytes = blocks * codec.typeSize;
  if (out.length < nBytes) {
    throw new RangeError(`${codec.name}: ${blocks} blocks need room for ${nBytes} output bytes, got ${out.length}`);
  }
}
