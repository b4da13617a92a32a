import { halfValues, toHalfBits } from "./half.js";
import { MIN_SCALE, roundHalfEven, type StatisticOut } from "./stats.js";

/** How far from the rounded statistic codes searchStatisticCodes looks (±2: 25 pairs; ±1 gave 9 pairs and a little less, on docs-llama-16m). */
export const STATS_SEARCH_RADIUS = 2;

/**
 * The search that `statsSearch` adds to quantizeStatistic's rounding: for each row, the scale
 * and zero codes within ±STATS_SEARCH_RADIUS of the rounded ones (on the same fp16 second-order
 * grids) whose weight grid fits the row's group best, by the GPTQ loop's own measure
 * Σ_j ((q(w_j) − w_j)/d_j)² over the values the first-order grid was fitted to (`fitted`,
 * [rows][width]: likely outliers replaced). Rounding each statistic to its nearest code minimises
 * the statistic's own error, not the weights': with 3-bit statistics shared by 16 rows the two
 * choices often differ. The codes and decoded statistics are updated in place; the second-order
 * grids stay as they are, so the format and the decoder are unchanged.
 */
export function searchStatisticCodes(fitted: Float64Array, width: number, groupDiag: Float64Array, beta1: number, maxq: number, statBits: { scale: number; zero: number }, scale: StatisticOut, zero: StatisticOut, fixedZero = false): void {
  const [scaleMax, zeroMax] = [2 ** statBits.scale - 1, 2 ** statBits.zero - 1];
  // A symmetric grid's zero is its centre by definition: only the scale is searched.
  const zeroRadius = fixedZero ? 0 : STATS_SEARCH_RADIUS;
  const half = halfValues();
  const h = (x: number): number => half[toHalfBits(x)]!;
  const span = 2 * STATS_SEARCH_RADIUS + 1;
  // Per row: the candidate statistics, h(q − z) per zero candidate, w / s per scale candidate
  // (codeOf's own division), and the levels h(s · h(q − z)) of the pair being measured, made
  // on first use (a group of 16 weights uses few of the 2^bits levels).
  const [scaleCodes, scaleValues, zeroCodes, zeroValues] = [new Int32Array(span), new Float64Array(span), new Int32Array(span), new Float64Array(span)];
  const offsets = new Float64Array(span * (maxq + 1));
  const ratios = new Float64Array(span * width);
  const levels = new Float64Array(maxq + 1);
  const made = new Uint8Array(maxq + 1);
  const weight = new Float64Array(width);
  for (let j = 0; j < width; j++) weight[j] = 1 / groupDiag[j]! ** 2;
  for (let r = 0; r < scale.codes.length; r++) {
    const t = Math.floor(r / beta1);
    const [ss, sz, zs, zz] = [half[scale.scaleBits[t]!]!, half[scale.zeroBits[t]!]!, half[zero.scaleBits[t]!]!, half[zero.zeroBits[t]!]!];
    const values = fitted.subarray(r * width, (r + 1) * width);
    const [cs0, cz0] = [scale.codes[r]!, zero.codes[r]!];
    let scales = 0;
    for (let cs = Math.max(0, cs0 - STATS_SEARCH_RADIUS); cs <= Math.min(scaleMax, cs0 + STATS_SEARCH_RADIUS); cs++, scales++) {
      const value = h(ss * h(cs - sz));
      [scaleCodes[scales], scaleValues[scales]] = [cs, value];
      const divisor = Math.max(value, MIN_SCALE);
      for (let j = 0; j < width; j++) ratios[scales * width + j] = values[j]! / divisor;
    }
    let zeros = 0;
    for (let cz = Math.max(0, cz0 - zeroRadius); cz <= Math.min(zeroMax, cz0 + zeroRadius); cz++, zeros++) {
      const value = h(zs * h(cz - zz));
      [zeroCodes[zeros], zeroValues[zeros]] = [cz, value];
      for (let q = 0; q <= maxq; q++) offsets[zeros * (maxq + 1) + q] = h(q - value);
    }
    // The rounded pair first, and only a strictly smaller error replaces it (ties keep what the
    // original stores); a pair's sum stops once it reaches the best so far.
    let [bestCs, bestCz] = [cs0, cz0];
    let best = Infinity;
    for (let pass = 0; pass < 2; pass++) {
      for (let i = 0; i < scales; i++) {
        for (let k = 0; k < zeros; k++) {
          const rounded = scaleCodes[i] === cs0 && zeroCodes[k] === cz0;
          if (rounded !== (pass === 0)) continue;
          const [s, z] = [scaleValues[i]!, zeroValues[k]!];
          made.fill(0);
          let sum = 0;
          for (let j = 0; j < width && sum < best; j++) {
            const x = roundHalfEven(ratios[i * width + j]! + z);
            const q = x < 0 ? 0 : x > maxq ? maxq : x;
            if (made[q] === 0) {
              levels[q] = h(s * offsets[k * (maxq + 1) + q]!);
              made[q] = 1;
            }
            const e = levels[q]! - values[j]!;
            sum += e * e * weight[j]!;
          }
          if (sum < best) [best, bestCs, bestCz] = [sum, scaleCodes[i]!, zeroCodes[k]!];
        }
      }
    }
    if (bestCs !== cs0 || bestCz !== cz0) {
      scale.codes[r] = bestCs;
      zero.codes[r] = bestCz;
      scale.decoded[r] = h(ss * h(bestCs - sz));
      zero.decoded[r] = h(zs * h(bestCz - zz));
    }
  }
}
