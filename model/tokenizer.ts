import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { FormatError, IoError } from "../formats/errors.js";

/**
 * Text to token ids with a model folder's `tokenizer.json`, read from disk only (never the
 * network). Encoding follows Python `tokenizers`:
 * `Tokenizer.from_file(path).encode(text, add_special_tokens=False).ids`.
 *
 * `tokenizer_config.json` is deliberately not read: Python `tokenizers` ignores it, and the
 * library would take transformers-level options from it (`remove_space`,
 * `do_lowercase_and_remove_accent`) that change the ids.
 */
export interface TextTokenizer {
  /** The file the tokenizer was read from. */
  readonly file: string;
  /** Number of ids, added tokens included (one past the largest id). */
  readonly vocabSize: number;
  /** Token ids of `text`, no special tokens added (no BOS, no EOS). */
  encode(text: string): Int32Array;
  /** The id of a token string (vocabulary or added token), or undefined. */
  tokenToId(token: string): number | undefined;
}

export const TOKENIZER_FILE = "tokenizer.json";
/** Model types of tokenizer.json that the library implements as Python `tokenizers` does. */
const SUPPORTED_MODELS: readonly string[] = ["BPE", "Unigram", "WordPiece"];

export async function loadTokenizer(modelDir: string): Promise<TextTokenizer> {
  const file = join(modelDir, TOKENIZER_FILE);
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === "ENOENT") throw new FormatError("CONFIG_INVALID", "the model folder has no tokenizer.json", { file, cause });
    throw new IoError("READ_FAILED", "cannot read the tokenizer", { file, cause });
  }
  return parseTokenizer(text, file);
}

/** A tokenizer from the text of a tokenizer.json; `file` only names it in errors. */
export function parseTokenizer(text: string, file: string): TextTokenizer {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    throw new FormatError("CONFIG_INVALID", "tokenizer.json is not valid JSON", { file, cause });
  }
  if (json === null || typeof json !== "object" || Array.isArray(json)) throw new FormatError("CONFIG_INVALID", "tokenizer.json is not a JSON object", { file });
  const model = (json as { model?: unknown }).model;
  if (model === null || typeof model !== "object" || typeof (model as { vocab?: unknown }).vocab !== "object") {
    throw new FormatError("CONFIG_INVALID", "tokenizer.json has no model vocabulary", { file });
  }
  // The library guesses a model from the shape of an untyped or unknown one; Python `tokenizers` does not.
  const type = (model as { type?: unknown }).type;
  if (typeof type !== "string" || !SUPPORTED_MODELS.includes(type)) {
    throw new FormatError("CONFIG_INVALID", "tokenizer.json model type is not supported", { file, expected: SUPPORTED_MODELS.join(" | "), actual: type });
  }
  checkTokenIds(json as { model: { vocab: unknown }; added_tokens?: unknown }, type, file);
  let tokenizer: Tokenizer;
  try {
    // Older files omit the optional sections; the library insists that each key exists.
    const withDefaults = { added_tokens: [], normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null, ...json };
    tokenizer = new Tokenizer(withDefaults, {});
  } catch (cause) {
    throw new FormatError("CONFIG_INVALID", `tokenizer.json is not supported: ${cause instanceof Error ? cause.message : String(cause)}`, { file, cause });
  }
  const vocabSize = maxId(tokenizer) + 1;
  return {
    file,
    vocabSize,
    encode(text: string): Int32Array {
      let ids: readonly unknown[];
      try {
        ids = tokenizer.encode(text, { add_special_tokens: false }).ids;
      } catch (cause) {
        // The library builds its pipeline lazily: a malformed section (a TemplateProcessing without
        // "single", say) surfaces only here, as a TypeError from inside the library.
        throw new FormatError("CONFIG_INVALID", `tokenizer.json cannot encode text: ${cause instanceof Error ? cause.message : String(cause)}`, { file, cause });
      }
      const out = new Int32Array(ids.length);
      for (let i = 0; i < ids.length; i++) {
        const id = ids[i];
        // The library maps a token it cannot place to `undefined` when the model has no unk token.
        if (typeof id !== "number") throw new FormatError("CONFIG_INVALID", `token ${i} of the text has no id and the tokenizer has no unk token`, { file });
        out[i] = id;
      }
      return out;
    },
    tokenToId(token: string): number | undefined {
      return tokenizer.token_to_id(token);
    },
  };
}

/**
 * Largest token id accepted: 16× the largest real vocabulary (Gemma's 262,144). The library keeps
 * tokens in an array indexed by id and walks every id below the largest (`get_vocab`), so one
 * hostile id of 2^31 in a tiny file would cost minutes; ids are checked before it sees them.
 */
export const MAX_TOKEN_ID = 1 << 22;

/**
 * The vocabulary has its model's shape (Unigram: a [token, score] list, ids are positions; BPE and
 * WordPiece: an object token → id, as Python `tokenizers` requires) and every id, added tokens'
 * included, is an integer in 0 … MAX_TOKEN_ID. A BPE vocabulary given as a list would reach the
 * library as index → id pairs, ids unchecked.
 */
function checkTokenIds(json: { model: { vocab: unknown }; added_tokens?: unknown }, type: string, file: string): void {
  const ids: [string, unknown][] = [];
  const vocab = json.model.vocab;
  if (vocab === null || Array.isArray(vocab) !== (type === "Unigram")) {
    throw new FormatError("CONFIG_INVALID", `a ${type} model's vocab must be ${type === "Unigram" ? "a list of [token, score]" : "an object of token → id"}`, { file, actual: vocab === null ? "null" : Array.isArray(vocab) ? "list" : "object" });
  }
  if (!Array.isArray(vocab)) for (const [token, id] of Object.entries(vocab as Record<string, unknown>)) ids.push([token, id]);
  if (Array.isArray(json.added_tokens)) {
    for (const added of json.added_tokens) ids.push([String((added as { content?: unknown } | null)?.content), (added as { id?: unknown } | null)?.id]);
  }
  for (const [token, id] of ids) {
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || id > MAX_TOKEN_ID) {
      throw new FormatError("CONFIG_INVALID", `token "${token.slice(0, 64)}" has an id that is not an integer in 0 … ${MAX_TOKEN_ID}`, { file, expected: `0 … ${MAX_TOKEN_ID}`, actual: id });
    }
  }
}

function maxId(tokenizer: Tokenizer): number {
  let max = -1;
  for (const id of tokenizer.get_vocab(true).values()) if (id > max) max = id;
  return max;
}
