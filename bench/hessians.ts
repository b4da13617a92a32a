import type { Checkpoint } from "../converters/checkpoint.js";
import { embeddingProxyHessians } from "../converters/hessians/embedding-proxy.js";
import { openHessianStore } from "../converters/hessians/store.js";
import type { Hessian, HessianSource } from "../formats/second-order/hessian.js";

/**
 * The Hessians a quality bench quantizes and measures with: a store written by
 * `lmpack calibrate` (real activations), or "embedding-proxy" (converters/hessians/embedding-proxy.ts).
 * A store is read once into memory, so every method of every layer sees the same H.
 */
export async function benchHessians(spec: string, checkpoint: Checkpoint): Promise<HessianSource> {
  if (spec === "embedding-proxy") {
    const entries = await embeddingProxyHessians(checkpoint);
    const byName = new Map<string, Hessian>(entries.flatMap((e) => [[e.name, e.hessian] as const, ...e.aliases.map((a) => [a, e.hessian] as const)]));
    return { get: async (name: string) => byName.get(name) };
  }
  const store = await openHessianStore(spec);
  const cache = new Map<string, Hessian | undefined>();
  return {
    get: async (name: string, inFeatures: number) => {
      if (!cache.has(name)) cache.set(name, await store.get(name, inFeatures));
      return cache.get(name);
    },
  };
}
