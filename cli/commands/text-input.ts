import { readFile, stat } from "node:fs/promises";
import { dirname } from "node:path";
import type { Checkpoint } from "../../converters/checkpoint.js";
import { IoError, UsageError } from "../../formats/errors.js";
import { evalTokenStream } from "../../model/eval-stream.js";
import { loadTokenizer, type TextTokenizer } from "../../model/tokenizer.js";

/**
 * Text files to token streams for `eval` and `calibrate`, with the model's own tokenizer.json
 * (or the folder `--tokenizer` names, e.g. for a .lmpack file that carries none).
 *
 * Protocols:
 *  - "docs": ../shared/models/README.md — documents split at "\n\n\n", each followed by eos.
 *  - "wikitext2": the usual GPTQ/llama.cpp form — the whole file as one text, nothing added.
 */
export const PROTOCOLS = ["docs", "wikitext2"] as const;
export type Protocol = (typeof PROTOCOLS)[number];

export async function tokenizerFor(checkpoint: Checkpoint, override: string | undefined): Promise<TextTokenizer> {
  if (override !== undefined) return loadTokenizer(override);
  const location = checkpoint.location;
  const folder = (await stat(location).catch(() => undefined))?.isDirectory() === true ? location : dirname(location);
  return loadTokenizer(folder);
}

export async function textTokens(textFile: string, tokenizer: TextTokenizer, checkpoint: Checkpoint, protocol: Protocol, maxTokens?: number): Promise<Int32Array> {
  let text: string;
  try {
    text = await readFile(textFile, "utf8");
  } catch (cause) {
    throw new IoError("READ_FAILED", "cannot read the text file", { file: textFile, cause });
  }
  if (protocol === "wikitext2") {
    const ids = tokenizer.encode(text);
    return maxTokens === undefined ? ids : ids.subarray(0, maxTokens);
  }
  const eos = checkpoint.config?.eosTokenId;
  const eosId = Array.isArray(eos) ? eos[0] : eos;
  if (eosId === undefined) throw new UsageError("BAD_ARGUMENT", "the docs protocol appends eos after each document, and config.json names no eos_token_id", { file: checkpoint.location });
  return evalTokenStream(text, tokenizer, eosId, maxTokens);
}
