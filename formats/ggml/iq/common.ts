import type { GgmlTypeCodec } from "../types.js";

/** Elements per i-quant super-block (QK_K in ggml-common.h). */
export const QK_K = 256;
/** Bytes of the fp16 super-block scale `d`. */
export const D_BYTES = 2;
/** The IQ1_S/IQ1_M grid offset (IQ1S_DELTA = IQ1M_DELTA = 0.125f; gguf-py's np.float32(0.125)). */
export const IQ1_DELTA = 0.125;

/**
 * Entry check shared by the i-quant decoders: `blocks` whole blocks must fit in `src` and
 * their elements in `out`. The loops then touch exactly blocks · typeSize bytes and
 * blocks · blockSize floats.
 */
export function checkDequantize(codec: GgmlTypeCodec, src: Uint8Array, blocks: number, out: Float32Array): void {
  if (!Number.isSafeInteger(blocks) || blocks < 0) {
    throw new RangeError(`${codec.name}: block count ${blocks} is not a non-negative integer`);
  }
  if (src.length < blocks * codec.typeSize) {
    throw new RangeError(`${codec.name}: ${blocks} blocks need ${blocks * codec.typeSize} bytes, got ${src.length}`);
  }
  if (out.length < blocks * codec.blockSize) {
    throw new RangeError(`${codec.name}: ${blocks} blocks decode to ${blocks * codec.blockSize} elements, output holds ${out.length}`);
  }
}

/** Little-endian u16 at byte `p`. */
export function u16le(src: Uint8Array, p: number): number {
  return src[p]! | (src[p + 1]! << 8);
}

/** Little-endian u32 at byte `p` (as an unsigned number). */
export function u32le(src: Uint8Array, p: number): number {
  return (src[p]! | (src[p + 1]! << 8) | (src[p + 2]! << 16) | (src[p + 3]! << 24)) >>> 0;
}

/**
 * Exactness: every i-quant value is a product of an fp16 `d` (11 significant bits) and small
 * integers or dyadic fractions: 0.5 + s or 1 + 2s (≤ 5 bits), 0.25 or 0.5, a grid value
 * (≤ 6 bits: 43 = 0b101011, 62 = 0b111110) or grid ± 0.125 (1.125 = 0b1001 · 2^−3). At most
 * 11 + 5 + 6 = 22 < 24 significant bits, and the largest value (65504 · 15.5 · 0.25 · 43) is far
 * from float32's range ends, so no float32 step of gguf-py's numpy arithmetic ever rounds, in any
 * order (checked exhaustively over all finite fp16 d). The Float32Array store is then exact too.
 * Non-finite d propagates the same way (inf · grid = inf; NaN stays NaN).
 *
 * Signs multiply by ±1 rather than branch; that keeps numpy's zero signs: d = +0 times a minus
 * sign is −0, as in `db * grid * signs`.
 */

/** Writes the 8 elements of one sign group: out[o + j] = db · grid[g + j] · (bit j of `signs` ? −1 : 1). */
export function signedGroup8(out: Float32Array, o: number, db: number, grid: Int8Array, g: number, signs: number): void {
  for (let j = 0; j < 8; j++) out[o + j] = db * grid[g + j]! * (1 - ((signs >> j) & 1) * 2);
}

/** As signedGroup8 for 4 elements, with sign bits from bit `shift` of `signs` on. */
export function signedGroup4(out: Float32Array, o: number, db: number, grid: Int8Array, g: number, signs: number, shift: number): void {
  for (let j = 0; j < 4; j++) out[o + j] = db * grid[g + j]! * (1 - ((signs >> (shift + j)) & 1) * 2);
}
