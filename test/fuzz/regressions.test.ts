import { suite } from "uvu";
import * as assert from "uvu/assert";
import { ggufTokenizer } from "../../converters/gguf/tokenizer-meta.js";
import { BufferSource } from "../../converters/io/random-access.js";
import { lmpackCheckpoint } from "../../converters/lmpack/import.js";
import { encodePreamble, encodeTrailer } from "../../converters/lmpack/layout.js";
import { pb } from "../../converters/lmpack/proto.js";
import { LmpackFile, MAX_WEIGHTS_PER_BLOB_BYTE } from "../../converters/lmpack/reader.js";
import { isLmpackError } from "../../formats/errors.js";
import { MAX_TOKEN_ID, parseTokenizer } from "../../model/tokenizer.js";
import { fuzz as fuzzHfConfig } from "../../bench/fuzz/targets/hf-config.js";

/**
 * Inputs the fuzzers (bench/fuzz, Jazzer.js) found to crash or hang a reader, minimised and
 * replayed against the reader: each must now end in the typed error named, or succeed where
 * `code` is undefined. Binary inputs are base64; the JSON targets' inputs are edit scripts over
 * the seed documents (bench/fuzz/json-mutation.ts), so their cases hold the document the script
 * produced, cut down to what triggers the bug.
 *
 * Adding a finding: minimise it (libFuzzer's -minimize_crash=1 or by hand), add a case here with
 * the reader call and the code it must raise, then fix the reader.
 */
const test = suite("fuzz regressions");

interface Regression {
  name: string;
  /** Target, and what the reader did before the fix. */
  found: string;
  run: () => unknown;
  /** The typed error code the reader must raise now; undefined when it must succeed. */
  code: string | undefined;
}

const text = (value: unknown): string => JSON.stringify(value);
const bpe = (extra: Record<string, unknown>, model: Record<string, unknown> = {}) => text({ model: { type: "BPE", vocab: { a: 0, b: 1 }, merges: [], ...model }, ...extra });

/**
 * A .lmpack holding one VPTQ tensor of `rows` × 4096 weights with a 2-entry codebook: one index
 * bit per vector of `vectorLen` output rows. Reading it dense materialises every weight.
 */
function vptqContainer(rows: number, vectorLen: number): Uint8Array {
  const K = 4096;
  const centroidBytes = 2 * vectorLen * 2;
  const vectorRows = Math.ceil(rows / vectorLen);
  const words = K / 32;
  const centroidsAt = 64;
  const indicesAt = centroidsAt + Math.ceil(centroidBytes / 64) * 64;
  const headerAt = indicesAt + Math.ceil((vectorRows * words * 4) / 64) * 64;
  const header = pb.Header.encode({
    schemaVersion: 1,
    tensors: [{
      name: "model.layers.0.mlp.down_proj.weight",
      shape: [rows, K],
      vptq: { outFeatures: rows, inFeatures: K, vectorLen, numCentroids: 2, numResCentroids: 0, groupNum: 1, groupSize: K },
      blobs: [
        { role: "centroids.weight", dtype: pb.DType.F16, shape: [1, 2 * vectorLen], byteOffset: centroidsAt, byteLength: centroidBytes },
        { role: "indices", dtype: pb.DType.I32, shape: [1, vectorRows, words], byteOffset: indicesAt, byteLength: vectorRows * words * 4 },
      ],
    }],
  }).finish();
  const file = new Uint8Array(headerAt + header.length + 32);
  file.set(encodePreamble());
  file.set(header, headerAt);
  file.set(encodeTrailer(headerAt, header), headerAt + header.length);
  return file;
}

async function readLmpackDense(bytes: Uint8Array): Promise<void> {
  const checkpoint = await lmpackCheckpoint(await LmpackFile.fromSource(new BufferSource(bytes, "fuzz.lmpack")));
  for (const t of checkpoint.tensors) await t.read();
}

const CASES: Regression[] = [
  {
    name: "hf-config edit script that copies a node into its own subtree, again and again",
    found: "hf-config (harness, not a reader): RangeError \"Maximum call stack size exceeded\" in json-mutation.ts once the copies nested thousands deep",
    run: () => fuzzHfConfig(Buffer.from("TmdScHJvdG90eQcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHcGVnVw==", "base64")),
    code: undefined,
  },
  {
    name: `.lmpack: a VPTQ tensor of over ${MAX_WEIGHTS_PER_BLOB_BYTE} weights per stored byte`,
    found: "memory review of the lmpack target: 17 KB of container made a 32 MB weight (74 KB, 2 GB)",
    run: () => readLmpackDense(vptqContainer(4096, 4096)),
    code: "CONTAINER_BLOB_INVALID",
  },
  {
    name: "the same layout with 8-row vectors (1/8 bit per weight, the cap's edge) still reads",
    found: "guard against a cap that refuses real files",
    run: () => readLmpackDense(vptqContainer(64, 8)),
    code: undefined,
  },
  {
    name: "tokenizer.json: TemplateProcessing without \"single\"",
    found: "tokenizer: TypeError \"type is not iterable\" from @huggingface/tokenizers during encode",
    run: () => parseTokenizer(bpe({ post_processor: { type: "TemplateProcessing", pair: [] } }), "tokenizer.json").encode("ab"),
    code: "CONFIG_INVALID",
  },
  {
    name: "tokenizer.json: a token id of 2^31",
    found: "tokenizer (timeout): the library's get_vocab walked 2^31 array slots (97 s)",
    run: () => parseTokenizer(bpe({}, { vocab: { a: 0, b: 2 ** 31 } }), "tokenizer.json"),
    code: "CONFIG_INVALID",
  },
  {
    name: "tokenizer.json: a BPE vocab given as a list ([2^31])",
    found: "tokenizer (timeout, 1M-run): the list reached the library as index → id pairs; get_vocab walked 2^31 slots (62 s)",
    run: () => parseTokenizer(bpe({}, { vocab: [2 ** 31] }), "tokenizer.json"),
    code: "CONFIG_INVALID",
  },
  {
    name: "tokenizer.json: a null vocab",
    found: "tokenizer: TypeError \"Cannot convert undefined or null to object\" in the id check added for the case above",
    run: () => parseTokenizer(bpe({}, { vocab: null }), "tokenizer.json"),
    code: "CONFIG_INVALID",
  },
  {
    name: `tokenizer.json: an added-token id above MAX_TOKEN_ID (${MAX_TOKEN_ID})`,
    found: "tokenizer: same walk, through added_tokens",
    run: () => parseTokenizer(bpe({ added_tokens: [{ id: MAX_TOKEN_ID + 1, content: "<s>", special: true }] }), "tokenizer.json"),
    code: "CONFIG_INVALID",
  },
  {
    name: "GGUF tokenizer: added_tokens is a number",
    found: "tokenizer: TypeError \"number 5 is not iterable\" in ggufTokenizer",
    run: () => ggufTokenizer(bpe({ added_tokens: 5 }), undefined, 4, "tokenizer.json"),
    code: "CONFIG_INVALID",
  },
  {
    name: "GGUF tokenizer: a null added token",
    found: "tokenizer: TypeError \"Cannot read properties of null (reading 'id')\"",
    run: () => ggufTokenizer(bpe({ added_tokens: [null] }), undefined, 4, "tokenizer.json"),
    code: "CONFIG_INVALID",
  },
  {
    name: "GGUF tokenizer: merges is a number",
    found: "tokenizer: TypeError \"raw.map is not a function\"",
    run: () => ggufTokenizer(bpe({ pre_tokenizer: { type: "ByteLevel" } }, { merges: 5 }), undefined, 4, "tokenizer.json"),
    code: "CONFIG_INVALID",
  },
  {
    name: "GGUF tokenizer: a Sequence pre-tokenizer with a string or null parts (read as no byte-level part)",
    found: "tokenizer: TypeError \".some is not a function\" / \"reading 'type'\"",
    run: () => {
      ggufTokenizer(bpe({ pre_tokenizer: { type: "Sequence", pretokenizers: "x" } }), undefined, 4, "tokenizer.json");
      ggufTokenizer(bpe({ pre_tokenizer: { type: "Sequence", pretokenizers: [null, { type: "ByteLevel" }, { type: "Split", pattern: null }] } }), undefined, 4, "tokenizer.json");
    },
    code: undefined,
  },
];

for (const c of CASES) {
  test(`${c.name} → ${c.code ?? "read"}`, async () => {
    let error: unknown;
    try {
      await c.run();
    } catch (e) {
      error = e;
    }
    if (c.code === undefined) {
      assert.is(error, undefined, `must read (was: ${c.found}); threw ${String(error)}`);
      return;
    }
    assert.ok(isLmpackError(error), `must raise a typed error (was: ${c.found}); got ${String(error)}`);
    assert.is((error as { code: string }).code, c.code);
  });
}

test.run();
