import { gemmAdd } from "../formats/second-order/matmul.js";

/** Deterministic uniform values in [−0.5, 0.5) (mulberry32), for reproducible bench inputs. */
export function benchRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296 - 0.5;
  };
}

/** H = XᵀX of `rows` random rows plus the identity: an SPD K×K Hessian for bench layers. */
export function benchHessian(K: number, random: () => number, rows = 256): Float64Array {
  const x = new Float64Array(rows * K).map(() => random());
  const h = new Float64Array(K * K);
  gemmAdd({ data: h, offset: 0, rowStride: K }, { data: x, offset: 0, rowStride: K, transposed: true }, { data: x, offset: 0, rowStride: K }, K, rows, K);
  for (let i = 0; i < K; i++) h[i * K + i]! += 1;
  return h;
}
