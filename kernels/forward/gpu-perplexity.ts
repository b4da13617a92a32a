import type { PerplexityResult, WindowScore } from "../../model/perplexity.js";

/** Σ NLL over every window on the GPU, added in window order as perplexity.ts perplexity adds them. */
/** `forward`: GpuLlamaForward (float64) or GpuLlamaForwardBf16. */
export function gpuPerplexity(forward: { scoreWindow(ids: Int32Array): WindowScore }, windows: readonly Int32Array[], onWindow?: (index: number, running: number) => void): PerplexityResult {
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

/** perplexity.ts scoreWindow from a GPU forward's per-position NLL: the terms added in position order, as windowNll adds them. */
export function scoreFromPositionNll(nll: Float64Array, tokens: number): WindowScore {
  let nllSum = 0;
  for (const term of nll) nllSum += term;
  return { nllSum, scored: Math.max(0, tokens - 1) };
}
