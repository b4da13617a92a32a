import { mulberry32 } from "../../formats/random.js";

/**
 * Calibration windows: which `length`-token runs of a text's token stream the forward sees
 * (`lmpack calibrate`, `quantize --hessians sequential`, `--objective block`).
 */

/** `count` windows of `length` tokens spread evenly over the stream (fewer if it is short; never overlapping). */
export function spread(stream: Int32Array, count: number, length: number): Int32Array[] {
  const fit = Math.min(count, Math.floor(stream.length / length));
  if (fit === 0) return [];
  const stride = fit === 1 ? 0 : Math.floor((stream.length - length) / (fit - 1));
  return Array.from({ length: fit }, (_, i) => stream.subarray(i * stride, i * stride + length));
}

/**
 * `count` windows at independent uniform random starts, as GPTQ's and SpQR's samplers draw them
 * (`i = random.randint(0, len − seqlen − 1)` per sample; windows may overlap), from a 32-bit
 * seed: the same seed gives the same windows on every machine. Unlike those samplers, the last
 * full window can be drawn too. Why offer it beside `spread`: one evenly spread set is one draw
 * of the calibration data, and a quantizer's perplexity moves with the draw (bench/RESULTS.md,
 * issue 10: SpQR on docs-llama-16m over several seeds); seeds make that spread measurable.
 */
export function sampleWindows(stream: Int32Array, count: number, length: number, seed: number): Int32Array[] {
  const starts = stream.length - length + 1;
  if (starts < 1) return [];
  const random = mulberry32(seed);
  return Array.from({ length: count }, () => {
    const start = Math.floor(random() * starts);
    return stream.subarray(start, start + length);
  });
}

/** The windows of the calibration options: spread evenly, or drawn from `seed` when one is given. */
export function calibrationSequences(stream: Int32Array, count: number, length: number, seed: number | undefined): Int32Array[] {
  return seed === undefined ? spread(stream, count, length) : sampleWindows(stream, count, length, seed);
}
