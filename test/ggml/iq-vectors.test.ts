import { readdirSync } from "node:fs";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID, KSIGNS_IQ2XS } from "../../formats/ggml/iq/grids.js";
import { IQ_TYPES } from "../../formats/ggml/iq/index.js";
import type { GgmlTypeCodec } from "../../formats/ggml/types.js";
import { expectArray, viewAs } from "../../formats/packed-array.js";
import { goldenArray } from "../helpers/golden.js";
import { SHARED_DIR } from "../helpers/paths.js";
import { mulberry32 } from "../helpers/prng.js";
import { readAllArrays } from "../helpers/safetensors-arrays.js";

/**
 * Golden vectors from gguf-py 0.15.0 (llama.cpp @ c392e509, quants.py `dequantize`), see
 * ../shared/vectors/gguf/README.md: random block bytes with finite fp16 scales, block 1 with
 * d = +0 and block 2 with a subnormal d. Outputs are compared as u32 bit patterns (−0 ≠ +0).
 */
const VECTORS = join(SHARED_DIR, "vectors", "gguf");
const files = readdirSync(VECTORS).filter((f) => /^iq[123]_.*\.safetensors$/.test(f)).sort();
const codecByName = new Map(IQ_TYPES.map((c) => [c.name, c]));

interface Params {
  type: string;
  ggml_type_id: number;
  block_size: number;
  type_size: number;
  rows: number;
  cols: number;
  row_bytes: number;
}

/** The first element whose bit pattern differs, or −1. */
function firstBitMismatch(actual: Float32Array, expected: Uint32Array): number {
  const bits = new Uint32Array(actual.buffer, actual.byteOffset, actual.length);
  if (bits.length !== expected.length) return Math.min(bits.length, expected.length);
  return bits.findIndex((b, i) => b !== expected[i]);
}

const hex32 = (u: number | undefined) => `0x${(u ?? 0).toString(16).padStart(8, "0")}`;

const golden = suite("ggml i-quants: gguf-py golden vectors");

for (const file of files) {
  golden(file, async () => {
    const { arrays, metadata } = await readAllArrays(join(VECTORS, file));
    const p = JSON.parse(metadata["params"]!) as Params;
    const codec = codecByName.get(p.type);
    if (codec === undefined) throw new Error(`${file}: no i-quant codec named ${p.type}`);
    assert.equal([codec.id, codec.blockSize, codec.typeSize], [p.ggml_type_id, p.block_size, p.type_size], `${p.type} id, block size, type size`);
    const q = goldenArray(arrays, "q");
    const deq = goldenArray(arrays, "deq");
    expectArray(q, ["U8"], [p.rows, p.row_bytes]);
    expectArray(deq, ["F32"], [p.rows, p.cols]);
    const blocks = q.bytes.length / codec.typeSize;
    assert.ok(Number.isInteger(blocks) && blocks >= 3, `${file}: ${blocks} blocks`);
    const out = new Float32Array(blocks * codec.blockSize);
    codec.dequantize(q.bytes, blocks, out);
    const expected = viewAs(deq.bytes, Uint32Array);
    const at = firstBitMismatch(out, expected);
    const got = new Uint32Array(out.buffer)[at];
    assert.is(at, -1, `${file}: first mismatch at element ${at} (block ${Math.floor(at / codec.blockSize)}): got ${hex32(got)} (${out[at]}), expected ${hex32(expected[at])}`);
  });
}

golden("both cases of every IQ1/IQ2/IQ3 type are present", () => {
  for (const codec of IQ_TYPES) {
    for (const k of [0, 1]) {
      const name = `${codec.name.toLowerCase()}_deq_${k}.safetensors`;
      assert.ok(files.includes(name), `missing golden vector ${name} in ${VECTORS}`);
    }
  }
  assert.is(files.length, 2 * IQ_TYPES.length, `unexpected i-quant vectors: ${files.join(", ")}`);
});

golden.run();

/**
 * The decoded tables equal ggml/src/ggml-common.h @ c392e509 byte for byte (the digests, first
 * and last entries were computed from that file's u64/u32 literals, little-endian).
 */
const tables = suite("ggml i-quants: grid tables");

function fnv1a(bytes: Uint8Array): number {
  let h = 0x811c9dc5;
  for (const b of bytes) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h;
}

/** Entry `i` of a table as ggml writes it: its bytes, most significant first, in hex. */
function entryHex(table: Int8Array, width: number, i: number): string {
  const bytes = new Uint8Array(table.buffer, table.byteOffset + i * width, width);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).reverse().join("");
}

const GGML_TABLES: readonly { name: string; table: Int8Array; entries: number; width: number; fnv: number; first: string; last: string }[] = [
  { name: "iq2xxs_grid", table: IQ2XXS_GRID, entries: 256, width: 8, fnv: 0x3db4a16e, first: "0808080808080808", last: "2b2b2b1908081908" },
  { name: "iq2xs_grid", table: IQ2XS_GRID, entries: 512, width: 8, fnv: 0xebeb17dd, first: "0808080808080808", last: "2b2b2b2b2b2b2b2b" },
  { name: "iq2s_grid", table: IQ2S_GRID, entries: 1024, width: 8, fnv: 0x82981110, first: "0808080808080808", last: "2b2b2b2b2b2b2b2b" },
  { name: "iq3xxs_grid", table: IQ3XXS_GRID, entries: 256, width: 4, fnv: 0x49a45035, first: "04040404", last: "3e341c04" },
  { name: "iq3s_grid", table: IQ3S_GRID, entries: 512, width: 4, fnv: 0x71cc6c89, first: "01010101", last: "0f0f0101" },
  { name: "iq1s_grid", table: IQ1S_GRID, entries: 2048, width: 8, fnv: 0x2fe8cbce, first: "ffffffffffffffff", last: "0101010101010101" },
];

for (const t of GGML_TABLES) {
  tables(`${t.name} equals ggml-common.h`, () => {
    assert.is(t.table.length, t.entries * t.width, "size");
    assert.is(entryHex(t.table, t.width, 0), t.first, "first entry");
    assert.is(entryHex(t.table, t.width, t.entries - 1), t.last, "last entry");
    assert.is(fnv1a(new Uint8Array(t.table.buffer, t.table.byteOffset, t.table.length)), t.fnv, "FNV-1a of the table bytes");
  });
}

tables("ksigns_iq2xs equals ggml-common.h", () => {
  assert.is(KSIGNS_IQ2XS.length, 128);
  assert.is(fnv1a(KSIGNS_IQ2XS), 0xaba69a45);
});

tables.run();

/** Lengths, bounds and hostile bytes. */
const bounds = suite("ggml i-quants: bounds");

/** Random blocks whose fp16 d fields are finite and non-zero, so any stray read shows as NaN or a change. */
function randomBlocks(codec: GgmlTypeCodec, blocks: number, seed: number): Uint8Array {
  const rng = mulberry32(seed);
  const bytes = Uint8Array.from({ length: blocks * codec.typeSize }, () => Math.floor(rng() * 256));
  for (let b = 0; b < blocks; b++) {
    const p = b * codec.typeSize;
    if (codec.name === "IQ1_M") {
      // d's exponent nibble lives in the top nibble of the last scale word: keep it away from 0x7c (inf/NaN).
      bytes[p + 55] = (bytes[p + 55]! & 0x0f) | 0x30;
    } else {
      bytes[p + 1] = (bytes[p + 1]! & 0x83) | 0x30;
    }
  }
  return bytes;
}

for (const codec of IQ_TYPES) {
  bounds(`${codec.name}: refuses short buffers and bad block counts with RangeError`, () => {
    const src = new Uint8Array(2 * codec.typeSize);
    const out = new Float32Array(2 * codec.blockSize);
    assert.throws(() => codec.dequantize(src.subarray(1), 2, out), (e: unknown) => e instanceof RangeError && e.message.startsWith(codec.name));
    assert.throws(() => codec.dequantize(src, 2, out.subarray(1)), (e: unknown) => e instanceof RangeError && e.message.startsWith(codec.name));
    for (const blocks of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      assert.throws(() => codec.dequantize(src, blocks, out), (e: unknown) => e instanceof RangeError, `blocks = ${blocks}`);
    }
    codec.dequantize(new Uint8Array(0), 0, new Float32Array(0));
  });

  bounds(`${codec.name}: reads only blocks · typeSize bytes and writes only blocks · blockSize floats`, () => {
    const blocks = 64;
    const body = randomBlocks(codec, blocks, 0x1900 + codec.id);
    const outputs = [0x00, 0xff].map((fill) => {
      const src = new Uint8Array(body.length + codec.typeSize).fill(fill);
      src.set(body);
      const out = new Float32Array((blocks + 1) * codec.blockSize).fill(-7);
      codec.dequantize(src, blocks, out);
      return out;
    });
    const [a, b] = outputs as [Float32Array, Float32Array];
    for (let i = 0; i < blocks * codec.blockSize; i++) {
      if (!Number.isFinite(a[i]!)) assert.unreachable(`element ${i} is ${a[i]} (a stray table read?)`);
      if (Object.is(a[i], b[i]) === false) assert.unreachable(`element ${i} depends on bytes past the last block`);
    }
    assert.ok(a.subarray(blocks * codec.blockSize).every((v) => v === -7), "wrote past blocks · blockSize");
  });

  bounds(`${codec.name}: every byte pattern decodes (random bytes, any fp16 d)`, () => {
    const rng = mulberry32(0x5eed + codec.id);
    const blocks = 512;
    const src = Uint8Array.from({ length: blocks * codec.typeSize }, () => Math.floor(rng() * 256));
    const out = new Float32Array(blocks * codec.blockSize);
    codec.dequantize(src, blocks, out);
  });
}

bounds.run();
