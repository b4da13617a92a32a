import type { PerplexityResult } from "../../model/perplexity.js";
import type { GpuLlamaForward } from "./gpu-forward.js";

/** Σ NLL over every window on the GPU, added in window order as perplexity.ts perplexity adds them. */
export function gpuPerplexity(forward: GpuLlamaForward, windows: readonly Int32Array[], onWindow?: (index: number, running: number) => void): PerplexityResult {
  let nllSum = 0;
  let scored = 0;
  windows.forEach((ids, i) => {
    const score = forward.scoreWindow(ids);
    nllSum += score.nllSum;
    scored += score.scored;
    onWindow?.(i, Math.exp(nllSum / scored));
  });
  const meanNll = scored > 0 ? nllSum / scored : NaN;
  return { perplexity: Math.exp(meanNll), meanNll, windows: windows.length, scored };
}
