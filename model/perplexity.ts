import type { LlamaForward } from "./llama-forward.js";

/**
 * Perplexity over windows of token ids: in each window every token after the first is scored
 * from the tokens before it in the same window (the protocol of ../shared/models/README.md,
 * windows cut by eval-stream.ts); perplexity = exp(mean negative log-likelihood).
 */

export interface WindowScore {
  /** Σ −log p(token | tokens before it), in nats. */
  nllSum: number;
  /** Tokens scored: the window length − 1. */
  scored: number;
}

export interface PerplexityResult {
  perplexity: number;
  /** Mean NLL in nats per token. */
  meanNll: number;
  windows: number;
  scored: number;
}

/** log Σ exp(x) over x[offset … offset+width), shifted by the maximum so nothing overflows. */
export function logSumExp(x: ArrayLike<number>, offset: number, width: number): number {
  let max = -Infinity;
  for (let j = 0; j < width; j++) max = Math.max(max, x[offset + j]!);
  let sum = 0;
  for (let j = 0; j < width; j++) sum += Math.exp(x[offset + j]! - max);
  return max + Math.log(sum);
}

/** Σ −log p(ids[t+1] | ids[≤t]) from logits [ids.length][vocab], in nats. */
export function windowNll(logits: ArrayLike<number>, ids: Int32Array, vocab: number): number {
  let nll = 0;
  for (let t = 0; t + 1 < ids.length; t++) nll += logSumExp(logits, t * vocab, vocab) - logits[t * vocab + ids[t + 1]!]!;
  return nll;
}

export function scoreWindow(forward: LlamaForward, ids: Int32Array): WindowScore {
  return { nllSum: windowNll(forward.run(ids), ids, forward.weights.config.vocabSize), scored: Math.max(0, ids.length - 1) };
}

/** Scores every window; `onWindow` reports progress (index, running perplexity). */
export function perplexity(forward: LlamaForward, windows: readonly Int32Array[], onWindow?: (index: number, running: number) => void): PerplexityResult {
  let nllSum = 0;
  let scored = 0;
  windows.forEach((ids, i) => {
    const score = scoreWindow(forward, ids);
    nllSum += score.nllSum;
    scored += score.scored;
    onWindow?.(i, Math.exp(nllSum / scored));
  });
  const meanNll = scored > 0 ? nllSum / scored : NaN;
  return { perplexity: Math.exp(meanNll), meanNll, windows: windows.length, scored };
}
