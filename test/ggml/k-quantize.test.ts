import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { K_QUANTIZERS, K_TYPE_SIZE, type KQuantName } from "../../formats/ggml/k-quantize.js";
import { nearestInt } from "../../formats/ggml/k-quantize-scales.js";
import { ggmlCodec } from "../../formats/ggml/registry.js";
import { viewAs } from "../../formats/packed-array.js";
import { goldenArray } from "../helpers/golden.js";
import { REPO_ROOT } from "../helpers/paths.js";
import { mulberry32 } from "../helpers/prng.js";
import { readAllArrays } from "../helpers/safetensors-arrays.js";

/**
 * The K-quant quantizers against ggml's C reference `quantize_row_q*_K_ref` (llama.cpp
 * c392e509), bit for bit: test/fixtures/ggml-k/README.md says how the golden bytes were made.
 * As a second, independent check, the registered dequantizer (q2_k.ts … q6_k.ts) decodes the
 * quantizer's output, which must be as close to x as the type allows.
 */

const FIXTURE = join(REPO_ROOT, "test", "fixtures", "ggml-k", "k-quants.safetensors");
const QK = 256;

const TYPES: readonly { name: KQuantName; id: number; tensor: string }[] = [
  { name: "Q2_K", id: 10, tensor: "q2_k" },
  { name: "Q3_K", id: 11, tensor: "q3_k" },
  { name: "Q4_K", id: 12, tensor: "q4_k" },
  { name: "Q5_K", id: 13, tensor: "q5_k" },
  { name: "Q6_K", id: 14, tensor: "q6_k" },
];

/**
 * Relative RMS error ‖deq − x‖/‖x‖ allowed per type on Gaussian data. Measured with the
 * reference quantizer: on the fixture's Gaussian rows (outliers included) Q2_K 0.33–0.37,
 * Q3_K 0.15–0.21, Q4_K 0.079–0.092, Q5_K 0.040–0.048, Q6_K 0.020–0.028; the bounds leave a margin.
 */
const MAX_REL_RMS: Readonly<Record<KQuantName, number>> = { Q2_K: 0.4, Q3_K: 0.24, Q4_K: 0.1, Q5_K: 0.055, Q6_K: 0.03 };
/** Fixture rows of Gaussian data with ordinary scales (README.md lists every row). */
const GAUSSIAN_ROWS = [6, 7, 8, 20, 21, 22, 23];

const { arrays } = await readAllArrays(FIXTURE);
const xArray = goldenArray(arrays, "x");
const [ROWS = 0, COLS = 0] = xArray.shape;
const X = viewAs(xArray.bytes, Float32Array);
const BLOCKS = X.length / QK;

/** Byte equality of two block streams, naming the first differing block, row and field byte. */
function assertBlocks(actual: Uint8Array, expected: Uint8Array, typeSize: number, what: string): void {
  assert.is(actual.length, expected.length, `${what}: byte length`);
  const at = actual.findIndex((b, i) => b !== expected[i]);
  if (at < 0) return;
  const block = Math.floor(at / typeSize);
  const row = Math.floor((block * QK) / COLS);
  const hex = (bytes: Uint8Array) => Array.from(bytes.subarray(block * typeSize, (block + 1) * typeSize), (b) => b.toString(16).padStart(2, "0")).join("");
  assert.unreachable(
    `${what}: block ${block} (row ${row}) differs first at byte ${at % typeSize} (got ${actual[at]}, expected ${expected[at]})\n` +
      `  got      ${hex(actual)}\n  expected ${hex(expected)}`,
  );
}

function relRms(x: Float32Array, y: Float32Array, from: number, to: number): number {
  let se = 0;
  let sx = 0;
  for (let i = from; i < to; i++) {
    se += (y[i]! - x[i]!) ** 2;
    sx += x[i]! ** 2;
  }
  return Math.sqrt(se / sx);
}

function gaussian(seed: number, n: number, sigma: number): Float32Array {
  const rng = mulberry32(seed);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = sigma * Math.sqrt(-2 * Math.log(1 - rng())) * Math.cos(2 * Math.PI * rng());
  return x;
}

// ---------------------------------------------------------------------------------------------

const golden = suite("ggml K-quant quantizers: ggml C reference golden vectors");

golden("fixture has the expected shape", () => {
  assert.is(xArray.dtype, "F32");
  assert.ok(ROWS > 0 && COLS % QK === 0, `x shape ${xArray.shape.join("×")}`);
});

for (const { name, tensor } of TYPES) {
  golden(`${name}: quantize(x) equals quantize_row_${name.toLowerCase().replace("_k", "_K")}_ref byte for byte`, () => {
    const expected = goldenArray(arrays, tensor);
    assert.equal(expected.shape, [ROWS, (COLS / QK) * K_TYPE_SIZE[name]], `${tensor} shape`);
    const out = new Uint8Array(BLOCKS * K_TYPE_SIZE[name]);
    K_QUANTIZERS[name](X, BLOCKS, out);
    assertBlocks(out, expected.bytes, K_TYPE_SIZE[name], name);
  });

  golden(`${name}: block by block from an offset view, writing nothing past its blocks`, () => {
    const size = K_TYPE_SIZE[name];
    const padded = new Float32Array(X.length + 3);
    padded.set(X, 3);
    const x = padded.subarray(3);
    const before = padded.slice();
    const expected = goldenArray(arrays, tensor).bytes;
    for (let b = 0; b < BLOCKS; b++) {
      const out = new Uint8Array(size + 8).fill(0xa5);
      K_QUANTIZERS[name](x.subarray(b * QK, (b + 1) * QK + (b + 1 < BLOCKS ? 5 : 0)), 1, out);
      assertBlocks(out.subarray(0, size), expected.subarray(b * size, (b + 1) * size), size, `${name} block ${b}`);
      assert.ok(out.subarray(size).every((v) => v === 0xa5), `${name} block ${b}: wrote past its block`);
    }
    assert.equal(padded, before, "input left unchanged");
  });
}

// ---------------------------------------------------------------------------------------------

const roundTrip = suite("ggml K-quant quantizers: decoded by the registered dequantizers");

for (const { name, id, tensor } of TYPES) {
  const codec = ggmlCodec(id);
  if (codec === undefined) {
    // The dequantizers are registered by formats/ggml/registry.ts; until they are, there is
    // nothing independent to decode with, and the golden bytes above are the whole check.
    roundTrip.skip(`${name}: no ${name} codec registered yet (skipped)`, () => {});
    continue;
  }

  roundTrip(`${name}: decodes like the golden bytes, within the type's error on Gaussian rows`, () => {
    const size = K_TYPE_SIZE[name];
    assert.is(codec.typeSize, size, "typeSize agrees with the registered codec");
    const q = new Uint8Array(BLOCKS * size);
    K_QUANTIZERS[name](X, BLOCKS, q);
    const deq = new Float32Array(X.length);
    codec.dequantize(q, BLOCKS, deq);
    const deqGolden = new Float32Array(X.length);
    codec.dequantize(goldenArray(arrays, tensor).bytes, BLOCKS, deqGolden);
    const bits = new Uint32Array(deq.buffer);
    const goldenBits = new Uint32Array(deqGolden.buffer);
    const at = bits.findIndex((b, i) => b !== goldenBits[i]);
    assert.is(at, -1, `${name}: decoded element ${at} differs from the golden bytes' decoding`);
    for (const r of GAUSSIAN_ROWS) {
      const e = relRms(X, deq, r * COLS, (r + 1) * COLS);
      assert.ok(e < MAX_REL_RMS[name], `${name} row ${r}: relative RMS error ${e.toFixed(4)} ≥ ${MAX_REL_RMS[name]}`);
    }
    const zeros = deq.subarray(0, COLS);
    assert.ok(zeros.every((v) => v === 0), `${name}: the all-zero row decodes to zeros`);
  });
}

roundTrip("fresh Gaussian data: every type within its bound, and more bits give less error", () => {
  const x = gaussian(0x6b71, 64 * QK, 0.05);
  let previous = Infinity;
  for (const { name, id } of TYPES) {
    const codec = ggmlCodec(id);
    if (codec === undefined) continue; // reported as skipped above
    const q = new Uint8Array(64 * K_TYPE_SIZE[name]);
    K_QUANTIZERS[name](x, 64, q);
    const deq = new Float32Array(x.length);
    codec.dequantize(q, 64, deq);
    const e = relRms(x, deq, 0, x.length);
    assert.ok(e < MAX_REL_RMS[name], `${name}: relative RMS error ${e.toFixed(4)} ≥ ${MAX_REL_RMS[name]}`);
    assert.ok(e < previous, `${name}: error ${e.toFixed(4)} not below the previous type's ${previous.toFixed(4)}`);
    previous = e;
  }
});

// ---------------------------------------------------------------------------------------------

const entry = suite("ggml K-quant quantizers: entry checks and nearest_int");

for (const { name } of TYPES) {
  entry(`${name}: rejects bad lengths with a RangeError naming the type`, () => {
    const size = K_TYPE_SIZE[name];
    const quantize = K_QUANTIZERS[name];
    const cases: [Float32Array, number, Uint8Array][] = [
      [new Float32Array(QK), -1, new Uint8Array(size)],
      [new Float32Array(QK), 0.5, new Uint8Array(size)],
      [new Float32Array(QK), Number.NaN, new Uint8Array(size)],
      [new Float32Array(QK - 1), 1, new Uint8Array(size)],
      [new Float32Array(2 * QK), 2, new Uint8Array(2 * size - 1)],
    ];
    for (const [x, blocks, out] of cases) {
      assert.throws(() => quantize(x, blocks, out), (e: unknown) => e instanceof RangeError && e.message.startsWith(`${name}:`), `${name} blocks=${blocks}`);
    }
    quantize(new Float32Array(0), 0, new Uint8Array(0)); // zero blocks is fine
  });
}

entry("nearestInt: round half to even on nearest_int's domain, ggml's bit result outside it", () => {
  for (const [v, want] of [
    [0.5, 0],
    [1.5, 2],
    [2.5, 2],
    [-0.5, 0],
    [-1.5, -2],
    [-2.5, -2],
    [0.49999997, 0],
    [4194302.5, 4194302],
    [-4194303, -4194303],
    // Outside |v| ≤ 4194303 (asserted in debug builds, reached by release ones):
    [4194304, -4194304], // 4194304 + 1.5·2^23 = 2^24: mantissa bits 0
    [Infinity, -4194304],
    [-Infinity, -4194304],
    [Number.NaN, 0], // a quiet NaN without payload has mantissa 0x400000
    [-8388608, -4194304], // 1.5·2^23 − 2^23 = 2^22 exactly: exponent one lower, mantissa 0
    // Values printed by the C function itself (gcc 12, x86-64):
    [5000000.5, -3791456],
    [1e10, -2804999],
    [-1e10, -2829575],
    [3e38, 2208230],
  ] as const) {
    assert.is(nearestInt(Math.fround(v)), want, `nearestInt(${v})`);
  }
});

golden.run();
roundTrip.run();
entry.run();
