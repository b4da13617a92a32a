import { halfValues, toHalfBits } from "./half.js";
import { MIN_SCALE, type StatisticOut } from "./stats.js";

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
  const span = 2 * STATS_SEARCH_RADIUS + 1;
  const tables = new TileTables(scaleMax, zeroMax, maxq, Math.min(beta1, scale.codes.length) * span * span);
  const slots = tables.slots;
  // Per row: the candidate codes, the zero candidates' values, and w / s per scale candidate
  // (codeOf's own division); the pairs' levels are the tile's, shared by its beta1 rows.
  const [scaleCodes, zeroCodes, zeroValues] = [new Int32Array(span), new Int32Array(span), new Float64Array(span)];
  const ratios = new Float64Array(span * width);
  const weight = new Float64Array(width);
  for (let j = 0; j < width; j++) weight[j] = 1 / groupDiag[j]! ** 2;
  for (let r = 0; r < scale.codes.length; r++) {
    const t = Math.floor(r / beta1);
    tables.useTile(t, scale.scaleBits[t]!, scale.zeroBits[t]!, zero.scaleBits[t]!, zero.zeroBits[t]!);
    const values = fitted.subarray(r * width, (r + 1) * width);
    const [cs0, cz0] = [scale.codes[r]!, zero.codes[r]!];
    let scales = 0;
    for (let cs = Math.max(0, cs0 - STATS_SEARCH_RADIUS); cs <= Math.min(scaleMax, cs0 + STATS_SEARCH_RADIUS); cs++, scales++) {
      scaleCodes[scales] = cs;
      const divisor = Math.max(tables.scaleValue(cs), MIN_SCALE);
      for (let j = 0; j < width; j++) ratios[scales * width + j] = values[j]! / divisor;
    }
    let zeros = 0;
    for (let cz = Math.max(0, cz0 - zeroRadius); cz <= Math.min(zeroMax, cz0 + zeroRadius); cz++, zeros++) {
      [zeroCodes[zeros], zeroValues[zeros]] = [cz, tables.zeroValue(cz)];
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
          const z = zeroValues[k]!;
          const level = tables.levelsAt(scaleCodes[i]!, zeroCodes[k]!);
          const at = i * width;
          let sum = 0;
          for (let j = 0; j < width && sum < best; j++) {
            // clamp(roundHalfEven(v), 0, maxq), with the clamp first: the rounding then stays
            // within small integers, where a bit test finds odd ties (no floating-point %).
            const v = ratios[at + j]! + z;
            let q = v <= 0 ? 0 : v >= maxq ? maxq : Math.round(v) | 0;
            if (q - v === 0.5 && (q & 1) !== 0) q--;
            const e = slots[level + q]! - values[j]!;
            sum += e * e * weight[j]!;
          }
          if (sum < best) {
            best = sum;
            bestCs = scaleCodes[i]!;
            bestCz = zeroCodes[k]!;
          }
        }
      }
    }
    if (bestCs !== cs0 || bestCz !== cz0) {
      scale.codes[r] = bestCs;
      zero.codes[r] = bestCz;
      scale.decoded[r] = tables.scaleValue(bestCs);
      zero.decoded[r] = tables.zeroValue(bestCz);
    }
  }
}

/**
 * What a tile of beta1 rows (one fp16 second-order grid per statistic) decodes its codes to, made
 * on first use and shared by the tile's rows: each code's statistic h(s₂ · h(c − z₂)), and each
 * (scale code, zero code) pair's levels h(s · h(q − z)), q = 0 … maxq. The rows' ±2 windows
 * overlap, so a tile makes a few dozen pairs' levels where each row alone would make 25 pairs'.
 * Entries are valid while their stamp equals the tile's; pairs' levels take slots in order.
 */
class TileTables {
  private readonly half = halfValues();
  private tile = -1;
  private readonly second = new Float64Array(4);
  private readonly scaleValues: Float64Array;
  private readonly zeroValues: Float64Array;
  private readonly scaleStamp: Int32Array;
  private readonly zeroStamp: Int32Array;
  private readonly pairStamp: Int32Array;
  private readonly pairSlot: Int32Array;
  /** Levels of the tile's pairs, maxq + 1 per slot (levelsAt). */
  readonly slots: Float64Array;
  private used = 0;

  constructor(scaleMax: number, private readonly zeroMax: number, private readonly maxq: number, maxPairsPerTile: number) {
    [this.scaleValues, this.scaleStamp] = [new Float64Array(scaleMax + 1), new Int32Array(scaleMax + 1).fill(-1)];
    [this.zeroValues, this.zeroStamp] = [new Float64Array(zeroMax + 1), new Int32Array(zeroMax + 1).fill(-1)];
    const pairs = (scaleMax + 1) * (zeroMax + 1);
    [this.pairStamp, this.pairSlot] = [new Int32Array(pairs).fill(-1), new Int32Array(pairs)];
    this.slots = new Float64Array(Math.min(pairs, maxPairsPerTile) * (maxq + 1));
  }

  private h(x: number): number {
    return this.half[toHalfBits(x)]!;
  }

  /** Makes tile t current: its grids' fp16 bits (scale's scale and zero, zero's scale and zero). */
  useTile(t: number, scaleScale: number, scaleZero: number, zeroScale: number, zeroZero: number): void {
    if (t === this.tile) return;
    this.tile = t;
    this.used = 0;
    const half = this.half;
    [this.second[0], this.second[1], this.second[2], this.second[3]] = [half[scaleScale]!, half[scaleZero]!, half[zeroScale]!, half[zeroZero]!];
  }

  scaleValue(code: number): number {
    if (this.scaleStamp[code] !== this.tile) {
      this.scaleValues[code] = this.h(this.second[0]! * this.h(code - this.second[1]!));
      this.scaleStamp[code] = this.tile;
    }
    return this.scaleValues[code]!;
  }

  zeroValue(code: number): number {
    if (this.zeroStamp[code] !== this.tile) {
      this.zeroValues[code] = this.h(this.second[2]! * this.h(code - this.second[3]!));
      this.zeroStamp[code] = this.tile;
    }
    return this.zeroValues[code]!;
  }

  /** Where in `slots` the maxq + 1 levels of pair (scale code, zero code) start. */
  levelsAt(scaleCode: number, zeroCode: number): number {
    const count = this.maxq + 1;
    const pair = scaleCode * (this.zeroMax + 1) + zeroCode;
    if (this.pairStamp[pair] !== this.tile) {
      const [s, z] = [this.scaleValue(scaleCode), this.zeroValue(zeroCode)];
      const at = this.used++ * count;
      for (let q = 0; q < count; q++) this.slots[at + q] = this.h(s * this.h(q - z));
      [this.pairStamp[pair], this.pairSlot[pair]] = [this.tile, at];
    }
    return this.pairSlot[pair]!;
  }
}
