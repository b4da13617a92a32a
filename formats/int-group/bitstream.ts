/**
 * The little-endian bit streams of GPTQ-family int32 tensors. A stream of `bits`-wide fields
 * runs along one axis of a 2-D int32 tensor: field i occupies stream bits [i·bits, (i+1)·bits),
 * and stream bit b is bit (b mod 32) of the b-th/32 word along that axis. For 2/4/8 bits a
 * word simply holds 32/bits whole fields; for 3 bits, fields 10 and 21 of every 32 straddle
 * two words (AutoGPTQ writes them as `<<30` + `>>2 & 1` and `<<31` + `>>1 & 3`: the same stream).
 *
 * Words are addressed as `base + wordIndex · stride`, so one routine serves streams along rows
 * (qweight: along K, stride N) and along columns (qzeros: along N, stride 1).
 */

/** Field i (unsigned, masked to `bits`) of the stream. Unsigned shifts: words are signed on disk. */
export function readField(words: Int32Array, base: number, stride: number, i: number, bits: number): number {
  const bit = i * bits;
  const word = bit >>> 5;
  const shift = bit & 31;
  let value = words[base + word * stride]! >>> shift;
  if (shift + bits > 32) value |= words[base + (word + 1) * stride]! << (32 - shift);
  return value & ((1 << bits) - 1);
}

/** ORs `value` (already within `bits`) into field i of the stream (the words start zeroed). */
export function writeField(words: Int32Array, base: number, stride: number, i: number, bits: number, value: number): void {
  const bit = i * bits;
  const word = bit >>> 5;
  const shift = bit & 31;
  words[base + word * stride]! |= value << shift;
  if (shift + bits > 32) words[base + (word + 1) * stride]! |= value >>> (32 - shift);
}

/** Words a stream of `count` fields of `bits` takes (GPTQ requires whole words: count·bits a multiple of 32). */
export function streamWords(count: number, bits: number): number {
  return Math.ceil((count * bits) / 32);
}
