import { readFileSync } from "node:fs";
import { join } from "node:path";
import { FIXTURE_MODEL } from "../../test/helpers/paths.js";

/** Seed builders for seeds.ts that need no I/O beyond the committed fixture model. */

const encoder = new TextEncoder();

interface HeaderEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

/** Four small tensors of the fixture model (layernorms, real names and bytes) with its metadata, as one safetensors file. */
export function fixtureSubset(): Uint8Array {
  const file = readFileSync(join(FIXTURE_MODEL, "model.safetensors"));
  const n = Number(file.readBigUInt64LE(0));
  const real = JSON.parse(file.subarray(8, 8 + n).toString("utf8")) as Record<string, HeaderEntry>;
  const kept = Object.entries(real)
    .filter(([name, t]) => name !== "__metadata__" && t.data_offsets[1] - t.data_offsets[0] <= 1024)
    .sort(([, a], [, b]) => a.data_offsets[0] - b.data_offsets[0])
    .slice(0, 4);
  const header: Record<string, unknown> = { __metadata__: real["__metadata__"] };
  const data: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of kept) {
    const bytes = file.subarray(8 + n + t.data_offsets[0], 8 + n + t.data_offsets[1]);
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes.length] };
    data.push(bytes);
    offset += bytes.length;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - ((8 + encoder.encode(json).length) % 8)) % 8);
  const headerBytes = encoder.encode(json);
  const out = new Uint8Array(8 + headerBytes.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  let at = 8 + headerBytes.length;
  for (const d of data) {
    out.set(d, at);
    at += d.length;
  }
  return out;
}

/** tokenizer.json, a NUL byte, tokenizer_config.json: the tokenizer target's input format. */
function withConfig(tokenizer: unknown, config: unknown): Uint8Array {
  const a = encoder.encode(JSON.stringify(tokenizer));
  const b = encoder.encode(JSON.stringify(config));
  const out = new Uint8Array(a.length + 1 + b.length);
  out.set(a);
  out.set(b, a.length + 1);
  return out;
}

/**
 * The fixture's byte-level BPE tokenizer cut to its first 300 ids (every byte, a few merges), a
 * SentencePiece-style BPE with byte fallback, and minimal WordPiece and Unigram models.
 */
export function tokenizerSeeds(): Record<string, Uint8Array> {
  const fixture = JSON.parse(readFileSync(join(FIXTURE_MODEL, "tokenizer.json"), "utf8")) as { model: { vocab: Record<string, number>; merges: [string, string][] } } & Record<string, unknown>;
  const config = JSON.parse(readFileSync(join(FIXTURE_MODEL, "tokenizer_config.json"), "utf8")) as Record<string, unknown>;
  const vocab = Object.fromEntries(Object.entries(fixture.model.vocab).filter(([, id]) => id < 300));
  const merges = fixture.model.merges.filter(([a, b]) => (a + b) in vocab && a in vocab && b in vocab).slice(0, 40);
  const byteLevel = { ...fixture, model: { ...fixture.model, vocab, merges } };

  const pieces = ["<unk>", "<s>", "</s>", "<0x0A>", "<0x41>", "▁", "a", "b", "▁a", "ab", "▁ab"];
  const sentencePiece = {
    version: "1.0",
    added_tokens: [{ id: 1, content: "<s>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }],
    normalizer: { type: "Sequence", normalizers: [{ type: "Prepend", prepend: "▁" }, { type: "Replace", pattern: { String: " " }, content: "▁" }] },
    pre_tokenizer: null,
    post_processor: null,
    decoder: { type: "Sequence", decoders: [{ type: "Replace", pattern: { String: "▁" }, content: " " }, { type: "ByteFallback" }, { type: "Fuse" }] },
    model: { type: "BPE", unk_token: "<unk>", byte_fallback: true, fuse_unk: true, vocab: Object.fromEntries(pieces.map((p, i) => [p, i])), merges: ["▁ a", "a b", "▁ ab"] },
  };
  const wordPiece = {
    normalizer: { type: "BertNormalizer", clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
    pre_tokenizer: { type: "BertPreTokenizer" },
    model: { type: "WordPiece", unk_token: "[UNK]", continuing_subword_prefix: "##", max_input_chars_per_word: 100, vocab: { "[UNK]": 0, "[CLS]": 1, once: 2, "##s": 3, cat: 4, "42": 5 } },
  };
  const unigram = {
    pre_tokenizer: { type: "Metaspace", replacement: "▁", prepend_scheme: "always", split: true },
    model: { type: "Unigram", unk_id: 0, byte_fallback: false, vocab: [["<unk>", 0], ["▁", -2], ["▁once", -3], ["o", -4], ["n", -4], ["c", -4], ["e", -4]] },
  };
  return {
    "byte-level-bpe.bin": withConfig(byteLevel, config),
    "sentencepiece-bpe.bin": withConfig(sentencePiece, { bos_token: "<s>", eos_token: { content: "</s>" }, add_bos_token: true, chat_template: "{{ messages }}" }),
    "wordpiece.json": encoder.encode(JSON.stringify(wordPiece)),
    "unigram.json": encoder.encode(JSON.stringify(unigram)),
  };
}
