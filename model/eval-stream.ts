import { UsageError } from "../formats/errors.js";
import type { TextTokenizer } from "./tokenizer.js";

/**
 * The evaluation token stream of the perplexity protocol (shared/models/README.md): split the
 * text at every "\n\n\n", tokenize each piece with no BOS and append the eos id after it,
 * concatenate, and keep the first `maxTokens`. Empty pieces (a run of four or more newlines)
 * are kept: they contribute their eos alone, as in the reference streams.
 */

/** Separator between documents in the evaluation texts. */
export const DOCUMENT_SEPARATOR = "\n\n\n";
export const DEFAULT_WINDOW_TOKENS = 512;

export function evalTokenStream(text: string, tokenizer: Pick<TextTokenizer, "encode">, eosId: number, maxTokens?: number): Int32Array {
  if (!Number.isInteger(eosId) || eosId < 0 || eosId > 0x7fffffff) throw new UsageError("BAD_ARGUMENT", "eos id must be a non-negative int32", { actual: eosId });
  if (maxTokens !== undefined && (!Number.isInteger(maxTokens) || maxTokens < 0)) throw new UsageError("BAD_ARGUMENT", "maxTokens must be a non-negative integer", { actual: maxTokens });
  const pieces: Int32Array[] = [];
  let total = 0;
  for (const piece of text.split(DOCUMENT_SEPARATOR)) {
    if (maxTokens !== undefined && total >= maxTokens) break;
    const ids = tokenizer.encode(piece);
    pieces.push(ids);
    total += ids.length + 1;
  }
  const stream = new Int32Array(maxTokens === undefined ? total : Math.min(total, maxTokens));
  let at = 0;
  for (const ids of pieces) {
    if (at >= stream.length) break;
    const take = Math.min(ids.length, stream.length - at);
    stream.set(ids.subarray(0, take), at);
    at += take;
    if (at < stream.length) stream[at++] = eosId;
  }
  return stream;
}

/** Non-overlapping windows of `windowTokens`, full windows only (views into `stream`). */
export function windows(stream: Int32Array, windowTokens: number = DEFAULT_WINDOW_TOKENS): Int32Array[] {
  if (!Number.isInteger(windowTokens) || windowTokens < 1) throw new UsageError("BAD_ARGUMENT", "windowTokens must be a positive integer", { actual: windowTokens });
  const out: Int32Array[] = [];
  for (let start = 0; start + windowTokens <= stream.length; start += windowTokens) out.push(stream.subarray(start, start + windowTokens));
  return out;
}
