import { mulberry32 as productMulberry32 } from "../../formats/random.js";

/** Deterministic PRNG for seeded tests (fuzz, property tests): same seed, same stream. */
export type Rng = () => number;

/** mulberry32 (formats/random.ts, the product's own generator): floats in [0, 1). */
export const mulberry32: (seed: number) => Rng = productMulberry32;

/** A standard normal draw from two uniforms of `rng` (Box–Muller, the cosine branch). */
export function gaussian(rng: Rng): number {
  return Math.sqrt(-2 * Math.log(1 - rng())) * Math.cos(2 * Math.PI * rng());
}

/**
 * Shuffles `array` in place (Fisher–Yates from the last element down, j = ⌊rng() · (k + 1)⌋) and
 * returns it. Every seeded permutation of the tests and benches is drawn this way, so a given seed
 * gives the same permutation wherever it is used.
 */
export function shuffle<T extends { length: number; [index: number]: number }>(rng: Rng, array: T): T {
  for (let k = array.length - 1; k > 0; k--) {
    const j = Math.floor(rng() * (k + 1));
    const kept = array[k]!;
    array[k] = array[j]!;
    array[j] = kept;
  }
  return array;
}
