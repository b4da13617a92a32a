/**
 * mulberry32: a small, fast 32-bit generator; the same seed gives the same stream on every
 * platform. The seeded draws of the product use it: k-means seeding (formats/vptq/kmeans.ts),
 * auto-round's window sampler (formats/int-group/quantizers/signround-block.ts) and the
 * calibration windows (converters/hessians/windows.ts). Floats in [0, 1).
 */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
