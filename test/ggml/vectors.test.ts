import { readdirSync } from "node:fs";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { ggmlCodec, ggmlCodecByName, ggmlCodecs } from "../../formats/ggml/registry.js";
import { rowBytes, type GgmlTypeCodec } from "../../formats/ggml/types.js";
import { viewAs } from "../../formats/packed-array.js";
import { assertBytes, goldenArray } from "../helpers/golden.js";
import { SHARED_DIR } from "../helpers/paths.js";
import { mulberry32 } from "../helpers/prng.js";
import { readAllArrays } from "../helpers/safetensors-arrays.js";

/**
 * Golden vectors from gguf-py 0.15.0 (llama.cpp @ c392e509, quants.py `quantize`/`dequantize`,
 * numpy 1.24), ../shared/vectors/gguf/README.md. Every file of the directory is a case: where
 * `x` is present, quantize(x) must equal `q` byte for byte, and dequantize(q) must equal `deq`
 * bit pattern for bit pattern (−0 ≠ +0, NaN payloads count). The i-quants IQ1/IQ2/IQ3 are
 * covered by iq-vectors.test.ts; they are skipped here only while no codec is registered.
 */
const VECTORS = join(SHARED_DIR, "vectors", "gguf");
const files = readdirSync(VECTORS).filter((f) => f.endsWith(".safetensors")).sort();
/** Types another suite owns; a missing codec for one of these skips rather than fails. */
const OTHER_SUITE = /^IQ[123]_/;

interface Params {
  type: string;
  ggml_type_id: number;
  block_size: number;
  type_size: number;
  rows: number;
  cols: number;
  row_bytes: number;
  mode: "quantize+dequantize" | "dequantize-only";
}

const hex32 = (u: number | undefined) => `0x${(u ?? 0).toString(16).padStart(8, "0")}`;

/** Bit-pattern equality of f32 arrays, reporting the first differing element. */
function assertBits(actual: Float32Array, expectedBytes: Uint8Array, what: string): void {
  const got = new Uint32Array(actual.buffer, actual.byteOffset, actual.length);
  const want = viewAs(expectedBytes, Uint32Array);
  assert.is(got.length, want.length, `${what}: element count`);
  const at = got.findIndex((b, i) => b !== want[i]);
  assert.is(at, -1, `${what}: first differing element ${at}${at >= 0 ? ` (got ${hex32(got[at])}, expected ${hex32(want[at])})` : ""}`);
}

const golden = suite("ggml codecs: gguf-py golden vectors");

for (const file of files) {
  const type = /^(.*?)(_deq)?_\d+\.safetensors$/.exec(file)?.[1]?.toUpperCase() ?? file;
  const codec = ggmlCodecByName(type);
  if (codec === undefined && OTHER_SUITE.test(type)) {
    golden.skip(`${file} (no codec for ${type} yet)`, () => {});
    continue;
  }
  golden(file, async () => {
    const { arrays, metadata } = await readAllArrays(join(VECTORS, file));
    const p = JSON.parse(metadata["params"]!) as Params;
    assert.is(p.type, type, "file name names the case's type");
    if (codec === undefined) throw new Error(`no codec for ${p.type}`);
    assert.equal([codec.id, codec.blockSize, codec.typeSize], [p.ggml_type_id, p.block_size, p.type_size], `${p.type}: id, block size, type size`);
    assert.is(rowBytes(codec, p.cols), p.row_bytes, "row bytes");

    const q = goldenArray(arrays, "q").bytes;
    const blocks = (p.rows * p.row_bytes) / codec.typeSize;
    assert.is(q.length, blocks * codec.typeSize, "q length");

    const x = arrays.get("x");
    assert.is(x !== undefined, p.mode === "quantize+dequantize", `x present exactly in quantize cases (mode ${p.mode})`);
    if (x !== undefined) {
      if (codec.quantize === undefined) throw new Error(`${p.type} has no quantize`);
      const encoded = new Uint8Array(q.length);
      codec.quantize(viewAs(x.bytes, Float32Array), blocks, encoded);
      assertBytes(encoded, q, `${file}: quantize(x)`);
    }

    const deq = new Float32Array(blocks * codec.blockSize);
    codec.dequantize(q, blocks, deq);
    assertBits(deq, goldenArray(arrays, "deq").bytes, `${file}: dequantize(q)`);
  });
}

golden("the vector set was found", () => {
  assert.ok(files.length >= 50, `found ${files.length} golden files in ${VECTORS}`);
});

golden.run();

/**
 * Rounding cases the shared vectors do not reach (their README: no vector lands where float32
 * and float64 arithmetic differ), worked by hand from quants.py and checked against numpy
 * running the same expressions.
 */
const rounding = suite("ggml codecs: float32 rounding that gguf-py's numpy expressions imply");
const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");

rounding("Q4_0 rounds x·id + 8.5 to float32 before truncating (np.trunc with dtype=float32)", () => {
  // max = −8 gives d = 1, id = 1. x = −0.5 − 2^-24 makes x + 8.5 = 8 − 2^-24 in float64 (code 7
  // if truncated there), but float32 rounds it to 8, so the code is 8. Zeros get code 8 too.
  const x = new Float32Array(32);
  x[0] = -8;
  x[1] = -0.5 - 2 ** -24;
  const q = new Uint8Array(18);
  ggmlCodecByName("Q4_0")!.quantize!(x, 1, q);
  assert.is(hex(q), "003c" + "80" + "88".repeat(15));
});

rounding("Q4_1 rounds x − min to float32 before scaling (every step in float32)", () => {
  // min = −(2^-23 + 2^-30), max = 15: max − min rounds to 15 in float32, so d = 1 and id = 1.
  // x = 2.5 − 2^-22: x − min = 2.5 − 2^-23 + 2^-30 rounds up to 2.5 in float32, + 0.5 gives 3.
  // Kept in float64 the sum would be just below 3 and truncate to 2. m = fp16(min) = 0x8002.
  const x = new Float32Array(32);
  x[0] = -(2 ** -23 + 2 ** -30);
  x[1] = 15;
  x[2] = 2.5 - 2 ** -22;
  const q = new Uint8Array(20);
  ggmlCodecByName("Q4_1")!.quantize!(x, 1, q);
  assert.is(hex(q), "003c" + "0280" + "000f03" + "00".repeat(13));
});

rounding.run();

/**
 * Block geometry: ../shared/ref/gguf-onnx.md §1.2 (ggml include/ggml.h ids, src/ggml-common.h
 * static_asserts). The IQ1/IQ3/IQ4 rows are not in that table; they come from the same
 * ggml-common.h structs and agree with the vectors README's shapes.
 */
const GEOMETRY: Record<string, { id: number; blockSize: number; typeSize: number }> = {
  F32: { id: 0, blockSize: 1, typeSize: 4 },
  F16: { id: 1, blockSize: 1, typeSize: 2 },
  Q4_0: { id: 2, blockSize: 32, typeSize: 18 },
  Q4_1: { id: 3, blockSize: 32, typeSize: 20 },
  Q5_0: { id: 6, blockSize: 32, typeSize: 22 },
  Q5_1: { id: 7, blockSize: 32, typeSize: 24 },
  Q8_0: { id: 8, blockSize: 32, typeSize: 34 },
  Q2_K: { id: 10, blockSize: 256, typeSize: 84 },
  Q3_K: { id: 11, blockSize: 256, typeSize: 110 },
  Q4_K: { id: 12, blockSize: 256, typeSize: 144 },
  Q5_K: { id: 13, blockSize: 256, typeSize: 176 },
  Q6_K: { id: 14, blockSize: 256, typeSize: 210 },
  IQ2_XXS: { id: 16, blockSize: 256, typeSize: 66 },
  IQ2_XS: { id: 17, blockSize: 256, typeSize: 74 },
  IQ3_XXS: { id: 18, blockSize: 256, typeSize: 98 },
  IQ1_S: { id: 19, blockSize: 256, typeSize: 50 },
  IQ4_NL: { id: 20, blockSize: 32, typeSize: 18 },
  IQ3_S: { id: 21, blockSize: 256, typeSize: 110 },
  IQ2_S: { id: 22, blockSize: 256, typeSize: 82 },
  IQ4_XS: { id: 23, blockSize: 256, typeSize: 136 },
  IQ1_M: { id: 29, blockSize: 256, typeSize: 56 },
  BF16: { id: 30, blockSize: 1, typeSize: 2 },
  TQ1_0: { id: 34, blockSize: 256, typeSize: 54 },
  TQ2_0: { id: 35, blockSize: 256, typeSize: 66 },
  // ggml.h's plain element types (GGML_TYPE_I8 … GGML_TYPE_F64).
  I8: { id: 24, blockSize: 1, typeSize: 1 },
  I16: { id: 25, blockSize: 1, typeSize: 2 },
  I32: { id: 26, blockSize: 1, typeSize: 4 },
  I64: { id: 27, blockSize: 1, typeSize: 8 },
  F64: { id: 28, blockSize: 1, typeSize: 8 },
};
/** The types of this suite's codecs, which must all be registered. */
const OWN_TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "TQ1_0", "TQ2_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"];
const QUANTIZERS = new Set(["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "TQ1_0", "TQ2_0"]);

const table = suite("ggml codecs: registry and block geometry");

table("every own type is registered, by id and by name", () => {
  for (const name of OWN_TYPES) {
    const codec = ggmlCodecByName(name);
    assert.ok(codec !== undefined, `${name} registered`);
    assert.is(ggmlCodec(codec.id), codec, `${name} found by id ${codec.id}`);
    assert.is(ggmlCodecByName(name.toLowerCase()), codec, `${name} found by lower-case name`);
    if (QUANTIZERS.has(name)) assert.ok(codec.quantize !== undefined, `${name} quantizes, as gguf-py does`);
  }
});

for (const codec of ggmlCodecs()) {
  table(`${codec.name}: id, blockSize, typeSize and rowBytes as ggml`, () => {
    const want = GEOMETRY[codec.name];
    assert.ok(want !== undefined, `no expected geometry for ${codec.name}`);
    assert.equal({ id: codec.id, blockSize: codec.blockSize, typeSize: codec.typeSize }, want);
    assert.is(rowBytes(codec, 0), 0);
    assert.is(rowBytes(codec, 3 * want.blockSize), 3 * want.typeSize);
    if (want.blockSize > 1) assert.throws(() => rowBytes(codec, want.blockSize + 1), RangeError);
    assert.throws(() => rowBytes(codec, -want.blockSize), RangeError);
  });
}

table.run();

const bounds = suite("ggml codecs: lengths and bounds");
const own = (): GgmlTypeCodec[] => OWN_TYPES.map((n) => ggmlCodecByName(n)!);

bounds("short buffers and bad block counts throw RangeError naming the type", () => {
  for (const c of own()) {
    const src = new Uint8Array(2 * c.typeSize);
    const out = new Float32Array(2 * c.blockSize);
    const cases: [string, () => void][] = [
      ["short src", () => c.dequantize(src.subarray(1), 2, out)],
      ["short out", () => c.dequantize(src, 2, out.subarray(1))],
      ["negative blocks", () => c.dequantize(src, -1, out)],
      ["fractional blocks", () => c.dequantize(src, 1.5, out)],
    ];
    const quantize = c.quantize?.bind(c);
    if (quantize !== undefined) {
      cases.push(["short x", () => quantize(out.subarray(1), 2, src)], ["short q", () => quantize(out, 2, src.subarray(1))]);
    }
    for (const [what, run] of cases) {
      assert.throws(run, (e: unknown) => e instanceof RangeError && e.message.startsWith(`${c.name}:`), `${c.name}: ${what}`);
    }
  }
});

bounds("codecs touch only blocks·typeSize bytes and blocks·blockSize elements, at any byte offset", () => {
  const rand = mulberry32(0x99f1);
  for (const c of own()) {
    const blocks = 3;
    const nBytes = blocks * c.typeSize;
    // Random bytes at an odd byte offset, with scale fields of any value: decoding must not
    // look past the end, and the extra output slots must keep their sentinel.
    const backing = new Uint8Array(nBytes + 9).map(() => Math.floor(rand() * 256));
    const src = backing.subarray(1, 1 + nBytes);
    const out = new Float32Array(blocks * c.blockSize + 4).fill(1234.5);
    c.dequantize(src, blocks, out);
    assert.equal(Array.from(out.subarray(blocks * c.blockSize)), [1234.5, 1234.5, 1234.5, 1234.5], `${c.name}: dequantize output tail`);
    const again = new Float32Array(blocks * c.blockSize);
    backing.fill(0xee, 1 + nBytes);
    c.dequantize(src, blocks, again);
    assert.equal(new Uint32Array(again.buffer), new Uint32Array(out.buffer, 0, again.length), `${c.name}: bytes past the end are not read`);
    if (c.quantize !== undefined) {
      const x = Float32Array.from({ length: blocks * c.blockSize + 4 }, () => rand() * 2 - 1);
      const q = new Uint8Array(nBytes + 3).fill(0xa5);
      c.quantize(x, blocks, q);
      assert.equal(Array.from(q.subarray(nBytes)), [0xa5, 0xa5, 0xa5], `${c.name}: quantize output tail`);
    }
  }
});

bounds("zero blocks is a no-op", () => {
  for (const c of own()) {
    c.dequantize(new Uint8Array(0), 0, new Float32Array(0));
    c.quantize?.(new Float32Array(0), 0, new Uint8Array(0));
  }
});

bounds.run();
