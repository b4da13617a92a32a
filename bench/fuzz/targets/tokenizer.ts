import { ggufTokenizer } from "../../../converters/gguf/tokenizer-meta.js";
import { parseTokenizer } from "../../../model/tokenizer.js";
import { ignoringTypedErrors, typedErrorsOnlySync } from "../harness.js";
import { loadBaseDocuments, mutatedDocument, type Json } from "../json-mutation.js";

/**
 * tokenizer.json and tokenizer_config.json where lmpack reads them: the GGUF exporter's own parser
 * (tokens, types, merges, special ids, pre-tokenizer regex) and the eval/calibrate tokenizer
 * (model/tokenizer.ts, over @huggingface/tokenizers), which must encode a sample text or refuse
 * the file with a typed error. The input is an edit script (json-mutation.ts) over the committed
 * seeds, each `{ tokenizer, config }` (a seed file is tokenizer.json, a NUL byte, then
 * tokenizer_config.json, or tokenizer.json alone).
 */
const FILE = "tokenizer.json";
/** The GGUF exporter pads the token list to the model's vocab_size; a small one keeps runs fast. */
const VOCAB_SIZE = 64;
const SAMPLE_TEXT = "Once upon a time, 42 cats\n\tsaid ‘héllo’ <s> 🙂";
const BASES = loadBaseDocuments("tokenizer", (bytes) => {
  const split = bytes.indexOf(0);
  const decode = (b: Uint8Array) => JSON.parse(new TextDecoder().decode(b)) as Json;
  return split < 0 ? { tokenizer: decode(bytes) } : { tokenizer: decode(bytes.subarray(0, split)), config: decode(bytes.subarray(split + 1)) } as Json;
});

export function fuzz(data: Buffer): void {
  const doc = mutatedDocument(BASES, data);
  const parts = typeof doc === "object" && doc !== null && !Array.isArray(doc) ? doc : { tokenizer: doc };
  const tokenizerJson = JSON.stringify(parts["tokenizer"] ?? null);
  const tokenizerConfig = parts["config"] === undefined ? undefined : JSON.stringify(parts["config"]);
  typedErrorsOnlySync(data, () => {
    ignoringTypedErrors(() => void ggufTokenizer(tokenizerJson, tokenizerConfig, VOCAB_SIZE, FILE));
    const tokenizer = parseTokenizer(tokenizerJson, FILE);
    tokenizer.encode(SAMPLE_TEXT);
    tokenizer.tokenToId("a");
  });
}
