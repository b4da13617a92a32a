import { FormatError } from "../../formats/errors.js";

/**
 * The `tokenizer.ggml.*` keys llama.cpp needs, from a Hugging Face `tokenizer.json` (and
 * `tokenizer_config.json`), the way llama.cpp's convert_hf_to_gguf.py writes them
 * (../shared/ref/gguf-onnx.md §1.6):
 *  - byte-level BPE (GPT-2 style: ByteLevel pre-tokenizer) → model "gpt2", tokens in id order,
 *    merges as "a b" strings, pre-tokenizer name from the split regex;
 *  - SentencePiece-style BPE (▁ for spaces, byte fallback) → model "llama", tokens with scores
 *    (−1000 each, as LlamaHfVocab writes) and BYTE types for <0xNN>.
 * Ids the tokenizer lacks below the model's vocab_size become "[PAD<i>]" UNUSED tokens, so the
 * token list always has vocab_size entries (llama.cpp checks it against the embedding).
 */

/** llama.cpp's token types (llama_token_type / gguf.TokenType). */
export const TOKEN_TYPE = { normal: 1, unknown: 2, control: 3, userDefined: 4, unused: 5, byte: 6 } as const;

export interface GgufTokenizer {
  model: "gpt2" | "llama";
  pre: string;
  tokens: string[];
  tokenTypes: Int32Array;
  /** "llama" only. */
  scores: Float32Array | undefined;
  /** "gpt2" only. */
  merges: string[] | undefined;
  /** In the order convert_hf_to_gguf writes them. */
  specialIds: { kind: "bos" | "eos" | "unknown" | "seperator" | "padding"; id: number }[];
  addBos: boolean | undefined;
  addEos: boolean | undefined;
  chatTemplate: string | undefined;
  /** Set when the pre-tokenizer was not recognised and "default" was written. */
  warning: string | undefined;
}

/** Split regexes llama.cpp knows by name (llama-vocab.cpp's pre-tokenizer types). */
const KNOWN_SPLITS: [string, string][] = [
  ["(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", "llama-bpe"],
  ["(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", "qwen2"],
];

type Json = Record<string, unknown>;

export function ggufTokenizer(tokenizerJsonText: string, tokenizerConfigText: string | undefined, vocabSize: number, file: string): GgufTokenizer {
  const json = parseObject(tokenizerJsonText, file);
  const config = tokenizerConfigText === undefined ? {} : parseObject(tokenizerConfigText, file.replace(/tokenizer\.json$/, "tokenizer_config.json"));
  const model = json["model"] as Json | undefined;
  if (model?.["type"] !== "BPE" || typeof model["vocab"] !== "object" || model["vocab"] === null) {
    throw new FormatError("CONFIG_INVALID", "GGUF export handles BPE tokenizers (byte-level or SentencePiece-style); this tokenizer.json is not one", { file, actual: model?.["type"] });
  }
  const vocab = new Map<number, string>();
  for (const [token, id] of Object.entries(model["vocab"] as Record<string, unknown>)) if (typeof id === "number") vocab.set(id, token);
  const added = new Map<number, { content: string; special: boolean }>();
  for (const a of objectList(json["added_tokens"], "added_tokens", file)) {
    if (typeof a["id"] === "number" && typeof a["content"] === "string") {
      added.set(a["id"], { content: a["content"], special: a["special"] === true });
      vocab.set(a["id"], a["content"]);
    }
  }
  const byteLevel = isByteLevel(json);
  const tokens: string[] = [];
  const tokenTypes = new Int32Array(vocabSize);
  for (let id = 0; id < vocabSize; id++) {
    const token = vocab.get(id);
    if (token === undefined) {
      tokens.push(`[PAD${id}]`);
      tokenTypes[id] = TOKEN_TYPE.unused;
      continue;
    }
    tokens.push(token);
    const extra = added.get(id);
    if (extra !== undefined) tokenTypes[id] = extra.special || looksSpecial(token) ? TOKEN_TYPE.control : TOKEN_TYPE.userDefined;
    else tokenTypes[id] = !byteLevel && /^<0x[0-9A-F]{2}>$/.test(token) ? TOKEN_TYPE.byte : TOKEN_TYPE.normal;
  }
  const idOf = (content: unknown): number | undefined => {
    const text = typeof content === "string" ? content : typeof content === "object" && content !== null ? (content as Json)["content"] : undefined;
    if (typeof text !== "string") return undefined;
    for (const [id, token] of vocab) if (token === text) return id;
    return undefined;
  };
  const specialIds: GgufTokenizer["specialIds"] = [];
  for (const [kind, key] of [["bos", "bos_token"], ["eos", "eos_token"], ["unknown", "unk_token"], ["seperator", "sep_token"], ["padding", "pad_token"]] as const) {
    const id = idOf(config[key]);
    if (id !== undefined && id < vocabSize) specialIds.push({ kind, id });
  }
  const pre = byteLevel ? preTokenizerName(json) : { name: "default", warning: undefined };
  return {
    model: byteLevel ? "gpt2" : "llama",
    pre: pre.name,
    tokens,
    tokenTypes,
    scores: byteLevel ? undefined : new Float32Array(vocabSize).fill(-1000),
    merges: byteLevel ? merges(model, file) : undefined,
    specialIds,
    addBos: typeof config["add_bos_token"] === "boolean" ? config["add_bos_token"] : undefined,
    addEos: typeof config["add_eos_token"] === "boolean" ? config["add_eos_token"] : undefined,
    chatTemplate: typeof config["chat_template"] === "string" ? config["chat_template"] : undefined,
    warning: pre.warning,
  };
}

function parseObject(text: string, file: string): Json {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (cause) {
    throw new FormatError("CONFIG_INVALID", "not valid JSON", { file, cause });
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new FormatError("CONFIG_INVALID", "not a JSON object", { file });
  return value as Json;
}

function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A list of objects (`added_tokens`): absent is empty; any other shape is refused, naming the key. */
function objectList(value: unknown, key: string, file: string): Json[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value) || !value.every(isObject)) throw new FormatError("CONFIG_INVALID", `${key} must be a list of objects`, { file, actual: JSON.stringify(value).slice(0, 64) });
  return value;
}

/** GPT-2-style byte-level BPE: a ByteLevel pre-tokenizer (alone or inside a Sequence). */
function isByteLevel(json: Json): boolean {
  const pre = json["pre_tokenizer"];
  if (!isObject(pre)) return false;
  if (pre["type"] === "ByteLevel") return true;
  return pre["type"] === "Sequence" && Array.isArray(pre["pretokenizers"]) && pre["pretokenizers"].some((p) => isObject(p) && p["type"] === "ByteLevel");
}

/** llama.cpp's name for the split the pre-tokenizer performs; "default" (with a warning) when unknown. */
function preTokenizerName(json: Json): { name: string; warning: string | undefined } {
  const pre = json["pre_tokenizer"] as Json;
  if (pre["type"] === "ByteLevel" && pre["use_regex"] !== false) return { name: "gpt-2", warning: undefined };
  const parts: unknown[] = pre["type"] === "Sequence" && Array.isArray(pre["pretokenizers"]) ? pre["pretokenizers"] : [pre];
  const split = parts.find((p): p is Json => isObject(p) && p["type"] === "Split");
  const regex = ((split?.["pattern"] as Json | undefined)?.["Regex"] as string | undefined) ?? "";
  const known = KNOWN_SPLITS.find(([pattern]) => pattern === regex);
  if (known !== undefined) return { name: known[1], warning: undefined };
  return { name: "default", warning: "the tokenizer's pre-tokenizer split is not one llama.cpp names; wrote tokenizer.ggml.pre = \"default\", so llama.cpp may split text differently" };
}

/** tokenizer.json merges as "left right" strings (older files store strings, newer ones pairs). */
function merges(model: Json, file: string): string[] {
  const raw = model["merges"] ?? [];
  if (!Array.isArray(raw)) throw new FormatError("CONFIG_INVALID", "model.merges must be a list", { file, actual: typeof raw });
  return raw.map((m, i) => {
    if (typeof m === "string") return m;
    if (Array.isArray(m) && m.length === 2 && typeof m[0] === "string" && typeof m[1] === "string") return `${m[0]} ${m[1]}`;
    throw new FormatError("CONFIG_INVALID", `merge ${i} is neither "a b" nor ["a", "b"]`, { file, actual: m });
  });
}

/** convert_hf_to_gguf's does_token_look_special: added tokens some models fail to mark special. */
function looksSpecial(token: string): boolean {
  if (["<pad>", "<mask>", "<2mass>", "[@BOS@]"].includes(token)) return true;
  if (token.startsWith("<|") && token.endsWith("|>")) return true;
  if (token.startsWith("<｜") && token.endsWith("｜>")) return true;
  return token.startsWith("<unused") && token.endsWith(">");
}
