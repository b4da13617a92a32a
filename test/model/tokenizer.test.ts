import { suite } from "uvu";
import * as assert from "uvu/assert";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { FormatError } from "../../formats/errors.js";
import { DOCUMENT_SEPARATOR, evalTokenStream, windows } from "../../model/eval-stream.js";
import { loadTokenizer, type TextTokenizer } from "../../model/tokenizer.js";
import { parseNpy, readNpy } from "../helpers/npy.js";
import { REPO_ROOT, SHARED_DIR, sharedModel, tempDir } from "../helpers/paths.js";

/**
 * Tokenization against Python `tokenizers`, two ways:
 * - the perplexity token stream of docs-valid.txt equals the shared reference ids
 *   (shared/models/token-ids/*.docs-valid.ids.npy), element for element;
 * - each whole shared text, encoded by each HF model, has the count and SHA-256 recorded in
 *   test/fixtures/token-streams.json (its "provenance" says how they were computed).
 */

const HF_MODELS = ["docs-llama-16m", "lmpack-fixture-2m", "tinystories-656K"] as const;
const STREAM_MODELS = ["docs-llama-16m", "lmpack-fixture-2m"] as const;

interface StreamRecord {
  model: string;
  text: string;
  count: number;
  sha256: string;
}
interface StreamFixture {
  provenance: string;
  inputs: Record<string, string>;
  records: StreamRecord[];
}

const FIXTURE = JSON.parse(readFileSync(join(REPO_ROOT, "test", "fixtures", "token-streams.json"), "utf8")) as StreamFixture;

const tokenizers = new Map<string, Promise<TextTokenizer>>();
function tokenizerOf(model: string): Promise<TextTokenizer> {
  let t = tokenizers.get(model);
  if (t === undefined) tokenizers.set(model, (t = loadTokenizer(sharedModel(model))));
  return t;
}

const sharedText = (name: string): string => readFileSync(join(SHARED_DIR, "text", name), "utf8");
const sha256 = (bytes: Uint8Array): string => createHash("sha256").update(bytes).digest("hex");
const int32Bytes = (ids: Int32Array): Uint8Array => new Uint8Array(ids.buffer, ids.byteOffset, ids.byteLength);

function eosIdOf(model: string): number {
  const config = JSON.parse(readFileSync(join(sharedModel(model), "config.json"), "utf8")) as { eos_token_id?: unknown };
  if (typeof config.eos_token_id !== "number") throw new Error(`${model}/config.json has no numeric eos_token_id`);
  return config.eos_token_id;
}

/** Where stream index `at` came from: the "\n\n\n"-piece that produced it, with the text around it. */
function locate(text: string, tokenizer: TextTokenizer, at: number): string {
  let start = 0;
  const pieces = text.split(DOCUMENT_SEPARATOR);
  for (const [n, piece] of pieces.entries()) {
    const length = tokenizer.encode(piece).length + 1;
    if (at < start + length) {
      const ids = tokenizer.encode(piece);
      const k = at - start;
      return `piece ${n} of ${pieces.length}, token ${k} of ${length - 1}` + (k < ids.length ? "" : " (its eos)") + `; piece text: ${JSON.stringify(piece.slice(0, 240))}`;
    }
    start += length;
  }
  return "past the end of the stream";
}

// ---------------------------------------------------------------------------------------------

const Stream = suite("eval token stream");

for (const model of STREAM_MODELS) {
  Stream(`${model}: docs-valid stream equals the Python reference ids`, async () => {
    const tokenizer = await tokenizerOf(model);
    const text = sharedText("docs-valid.txt");
    const eosId = eosIdOf(model);
    assert.is(tokenizer.tokenToId("<|eos|>"), eosId);
    const reference = readNpy(join(SHARED_DIR, "models", "token-ids", `${model}.docs-valid.ids.npy`));
    assert.instance(reference.data, Int32Array);
    assert.equal(reference.shape, [reference.data.length]);

    const stream = evalTokenStream(text, tokenizer, eosId);
    const n = Math.min(stream.length, reference.data.length);
    let first = -1;
    for (let i = 0; i < n; i++) {
      if (stream[i] !== reference.data[i]) {
        first = i;
        break;
      }
    }
    if (first < 0 && stream.length !== reference.data.length) first = n;
    if (first >= 0) {
      const around = (ids: Int32Array): string => `[${Array.from(ids.subarray(Math.max(0, first - 5), first + 6)).join(", ")}]`;
      assert.unreachable(
        `stream differs at index ${first} (lengths ${stream.length} vs reference ${reference.data.length}): ` +
          `ours ${around(stream)}, reference ${around(reference.data as Int32Array)} (from index ${Math.max(0, first - 5)}); ${locate(text, tokenizer, first)}`,
      );
    }
    assert.is(stream.length, reference.data.length);
  });
}

Stream("maxTokens keeps a prefix of the full stream", async () => {
  const tokenizer = await tokenizerOf("lmpack-fixture-2m");
  const text = sharedText("docs-valid.txt").slice(0, 20_000);
  const full = evalTokenStream(text, tokenizer, 1);
  for (const max of [0, 1, 511, 4096, full.length, full.length + 10]) {
    const cut = evalTokenStream(text, tokenizer, 1, max);
    assert.is(cut.length, Math.min(max, full.length), `maxTokens ${max}`);
    assert.equal(Array.from(cut), Array.from(full.subarray(0, cut.length)), `maxTokens ${max}`);
  }
});

Stream("empty pieces contribute their eos alone; no BOS anywhere", () => {
  const letters: Pick<TextTokenizer, "encode"> = { encode: (s) => Int32Array.from(Array.from(s, (c) => c.charCodeAt(0))) };
  assert.equal(Array.from(evalTokenStream("ab\n\n\nc", letters, 7)), [97, 98, 7, 99, 7]);
  // "\n\n\n\n\n\n" is two separators around an empty piece; a fourth newline starts the next piece.
  assert.equal(Array.from(evalTokenStream("a\n\n\n\n\n\nb\n\n\n\nc", letters, 7)), [97, 7, 7, 98, 7, 10, 99, 7]);
  assert.equal(Array.from(evalTokenStream("", letters, 7)), [7]);
  assert.equal(Array.from(evalTokenStream("abc", letters, 7, 2)), [97, 98]);
});

Stream("windows: non-overlapping, full windows only, views of the stream", () => {
  const stream = Int32Array.from({ length: 1100 }, (_, i) => i);
  const w = windows(stream, 512);
  assert.is(w.length, 2);
  assert.is(w[0]![0], 0);
  assert.is(w[1]![0], 512);
  assert.is(w[1]![511], 1023);
  assert.ok(w.every((x) => x.length === 512 && x.buffer === stream.buffer));
  assert.is(windows(stream.subarray(0, 511), 512).length, 0);
  assert.is(windows(stream.subarray(0, 1024)).length, 2);
});

Stream.run();

// ---------------------------------------------------------------------------------------------

const Whole = suite("whole texts against Python tokenizers");

Whole("the fixture covers every model and text, and names its provenance", () => {
  assert.ok(/tokenizers \d+\.\d+/.test(FIXTURE.provenance));
  assert.is(FIXTURE.records.length, 9);
  for (const model of HF_MODELS) assert.is(FIXTURE.records.filter((r) => r.model === model).length, 3, model);
});

Whole("the shared inputs are the files the fixture was computed from", () => {
  for (const [path, expected] of Object.entries(FIXTURE.inputs)) {
    assert.is(sha256(readFileSync(join(SHARED_DIR, path))), expected, `${join(SHARED_DIR, path)} changed since token-streams.json was computed`);
  }
});

for (const record of FIXTURE.records) {
  Whole(`${record.model} encodes ${record.text} as Python does`, async () => {
    const tokenizer = await tokenizerOf(record.model);
    const ids = tokenizer.encode(sharedText(record.text));
    assert.is(ids.length, record.count, "token count");
    assert.is(sha256(int32Bytes(ids)), record.sha256, "sha256 of the ids (little-endian int32)");
  });
}

Whole.run();

// ---------------------------------------------------------------------------------------------

const Load = suite("loadTokenizer");

Load("vocabulary sizes and special tokens", async () => {
  const expected = { "docs-llama-16m": 8192, "lmpack-fixture-2m": 4096, "tinystories-656K": 2048 };
  for (const model of HF_MODELS) assert.is((await tokenizerOf(model)).vocabSize, expected[model], model);
  assert.is((await tokenizerOf("tinystories-656K")).tokenToId("<|end_story|>"), eosIdOf("tinystories-656K"));
  assert.is((await tokenizerOf("docs-llama-16m")).tokenToId("no such token"), undefined);
});

Load("encode adds no special tokens", async () => {
  const tokenizer = await tokenizerOf("tinystories-656K");
  const ids = tokenizer.encode("Once upon a time");
  assert.ok(ids.length > 0);
  assert.is.not(ids[0], tokenizer.tokenToId("<|start_story|>"));
  assert.is(tokenizer.encode("").length, 0);
});

Load("a malformed tokenizer.json is a FormatError naming the file", async () => {
  const dir = await tempDir();
  try {
    const file = join(dir.path, "tokenizer.json");
    for (const [content, detail] of [
      ["{", /not valid JSON/],
      ["[1, 2]", /not a JSON object/],
      ['{"model": {"type": "BPE"}}', /no model vocabulary/],
      ['{"model": {"type": "Nonsense", "vocab": {}}}', /model type is not supported/],
      ['{"model": {"type": "BPE", "vocab": {}, "merges": []}, "pre_tokenizer": {"type": "Nonsense"}}', /not supported: /],
    ] as const) {
      await writeFile(file, content);
      try {
        await loadTokenizer(dir.path);
        assert.unreachable(`accepted ${content}`);
      } catch (error) {
        assert.instance(error, FormatError, content);
        const e = error as FormatError;
        assert.is(e.code, "CONFIG_INVALID");
        assert.is(e.file, file);
        assert.ok(e.message.includes(file), e.message);
        assert.match(e.message, detail);
      }
    }
  } finally {
    await dir.cleanup();
  }
});

Load("a folder without tokenizer.json is a FormatError naming the file", async () => {
  const dir = await tempDir();
  try {
    await loadTokenizer(dir.path);
    assert.unreachable("loaded a tokenizer from an empty folder");
  } catch (error) {
    assert.instance(error, FormatError);
    assert.is((error as FormatError).code, "CONFIG_INVALID");
    assert.is((error as FormatError).file, join(dir.path, "tokenizer.json"));
  } finally {
    await dir.cleanup();
  }
});

Load.run();

// ---------------------------------------------------------------------------------------------

const Npy = suite("npy reader");

/** A v1.0 .npy file with the given header dict and data bytes. */
function npy(dict: string, data: Uint8Array, version: 1 | 2 = 1): Uint8Array {
  const preamble = version === 1 ? 10 : 12;
  let header = dict;
  while ((preamble + header.length + 1) % 64 !== 0) header += " ";
  header += "\n";
  const out = new Uint8Array(preamble + header.length + data.length);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, version, 0]);
  const view = new DataView(out.buffer);
  if (version === 1) view.setUint16(8, header.length, true);
  else view.setUint32(8, header.length, true);
  out.set(new TextEncoder().encode(header), preamble);
  out.set(data, preamble + header.length);
  return out;
}

Npy("reads v1 and v2 '<i4' and '<f4' in C order", () => {
  const i4 = new Uint8Array(Int32Array.from([1, -2, 3, 4, 5, 6]).buffer);
  const a = parseNpy(npy("{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }", i4));
  assert.equal(a.shape, [2, 3]);
  assert.equal(Array.from(a.data), [1, -2, 3, 4, 5, 6]);
  const f4 = new Uint8Array(Float32Array.from([0.5, -1]).buffer);
  const b = parseNpy(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", f4, 2));
  assert.instance(b.data, Float32Array);
  assert.equal(Array.from(b.data), [0.5, -1]);
  const c = parseNpy(npy("{'descr': '<i4', 'fortran_order': False, 'shape': (), }", i4.subarray(0, 4)));
  assert.equal(c.shape, []);
  assert.equal(Array.from(c.data), [1]);
});

Npy("rejects other dtypes, Fortran order, wrong sizes and bad magic", () => {
  const data = new Uint8Array(8);
  const cases: [Uint8Array, RegExp][] = [
    [npy("{'descr': '>i4', 'fortran_order': False, 'shape': (2,), }", data), /unsupported dtype '>i4'/],
    [npy("{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }", data), /unsupported dtype '<i8'/],
    [npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", data), /Fortran/],
    [npy("{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }", data), /expected 12 data bytes/],
    [data, /bad magic/],
  ];
  for (const [bytes, message] of cases) assert.throws(() => parseNpy(bytes, "x.npy"), (e: unknown) => e instanceof Error && message.test(e.message) && e.message.startsWith("x.npy: "));
});

Npy.run();
