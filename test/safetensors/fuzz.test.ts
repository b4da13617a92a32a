import { suite } from "uvu";
import * as assert from "uvu/assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { FormatError } from "../../formats/errors.js";
import { BufferSource } from "../../converters/io/random-access.js";
import { SafetensorsFile } from "../../converters/safetensors/reader.js";
import { firstInvalidUtf8 } from "../../converters/safetensors/utf8.js";
import { buildSafetensors } from "../helpers/build-safetensors.js";
import { FIXTURE_MODEL } from "../helpers/paths.js";
import { mulberry32, type Rng } from "../helpers/prng.js";

/**
 * Seeded mutation fuzz of the safetensors reader (the Rust crate's fuzz target, as a test):
 * mutate valid seed files, open each mutant and read every tensor. The only allowed outcomes
 * are success or a FormatError; anything else fails with the seed and the iteration, which
 * reproduce the mutant exactly (each iteration draws from its own PRNG stream).
 *
 *   LMPACK_FUZZ_SEED=<u32> LMPACK_FUZZ_ITERATIONS=<n> node test/run.mjs fuzz
 */

const SEED = Number(process.env["LMPACK_FUZZ_SEED"] ?? 0x5afe7e45) >>> 0;
const ITERATIONS = Number(process.env["LMPACK_FUZZ_ITERATIONS"] ?? 20_000);
const NAME = "fuzz.safetensors";


/** The PRNG stream of one iteration, independent of all the others. */
function iterationRng(seed: number, iteration: number): Rng {
  return mulberry32(seed ^ Math.imul(iteration + 1, 0x9e3779b9));
}

const int = (rng: Rng, n: number): number => Math.floor(rng() * n);
const pick = <T>(rng: Rng, items: readonly T[]): T => items[int(rng, items.length)]!;

// ---------------------------------------------------------------------------------------------
// Seeds

function header(entries: Record<string, { dtype: string; shape: number[]; n: number }>, metadata?: Record<string, string>): { header: string; dataBytes: number } {
  const out: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  if (metadata !== undefined) out["__metadata__"] = metadata;
  let offset = 0;
  for (const [name, t] of Object.entries(entries)) {
    out[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.n] };
    offset += t.n;
  }
  return { header: JSON.stringify(out), dataBytes: offset };
}

function seedFile(h: { header: string; dataBytes: number }, pad = 0): Uint8Array {
  const data = Uint8Array.from({ length: h.dataBytes }, (_, i) => (i * 131 + 7) & 0xff);
  return buildSafetensors({ header: h.header + " ".repeat(pad), data });
}

/** A few layernorm tensors of the committed fixture, under their real header entries (real names, real bytes). */
function fixtureSubset(): Uint8Array {
  const file = readFileSync(join(FIXTURE_MODEL, "model.safetensors"));
  const n = Number(file.readBigUInt64LE(0));
  const real = JSON.parse(file.subarray(8, 8 + n).toString("utf8")) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const keep = Object.entries(real)
    .filter(([name, t]) => name !== "__metadata__" && t.data_offsets[1] - t.data_offsets[0] <= 1024)
    .sort(([, a], [, b]) => a.data_offsets[0] - b.data_offsets[0])
    .slice(0, 4);
  const h = header(Object.fromEntries(keep.map(([name, t]) => [name, { dtype: t.dtype, shape: t.shape, n: t.data_offsets[1] - t.data_offsets[0] }])), real["__metadata__"] as unknown as Record<string, string>);
  const json = Buffer.from(h.header + " ".repeat((8 - ((8 + Buffer.byteLength(h.header)) % 8)) % 8));
  const data = Buffer.concat(keep.map(([, t]) => file.subarray(8 + n + t.data_offsets[0], 8 + n + t.data_offsets[1])));
  return buildSafetensors({ headerBytes: json, data });
}

/** The fixture's real prefix and 4 KB header verbatim, with the data cut to its first 2 KiB (so: truncated as is). */
function fixtureHead(): Uint8Array {
  const file = readFileSync(join(FIXTURE_MODEL, "model.safetensors"));
  const n = Number(file.readBigUInt64LE(0));
  return new Uint8Array(file.subarray(0, 8 + n + 2048));
}

const SEEDS: { name: string; bytes: Uint8Array; weight: number }[] = [
  {
    name: "small",
    bytes: seedFile(header({ "w.f32": { dtype: "F32", shape: [2, 3], n: 24 }, "w.bf16": { dtype: "BF16", shape: [4], n: 8 }, "b": { dtype: "U8", shape: [3], n: 3 }, "z": { dtype: "I64", shape: [0, 2], n: 0 } }, { format: "pt" })),
    weight: 3,
  },
  {
    name: "all-dtypes",
    bytes: seedFile(header(Object.fromEntries(["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64"].map((d, i) => [`t${i}`, { dtype: d, shape: [2], n: 2 * [1, 1, 1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 8, 8, 8][i]! }])))),
    weight: 2,
  },
  {
    name: "proto-scalar-padded",
    bytes: seedFile(header({ ["__proto__"]: { dtype: "F32", shape: [], n: 4 }, e: { dtype: "F16", shape: [1, 0, 3], n: 0 }, s: { dtype: "I16", shape: [2], n: 4 } } as never), 5),
    weight: 2,
  },
  { name: "fixture-subset", bytes: fixtureSubset(), weight: 3 },
  { name: "fixture-head", bytes: fixtureHead(), weight: 1 },
];

// ---------------------------------------------------------------------------------------------
// Mutations

function headerEnd(bytes: Uint8Array): number {
  if (bytes.length < 8) return bytes.length;
  const n = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  return n + 8n > BigInt(bytes.length) ? bytes.length : 8 + Number(n);
}

function concat(...parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

function randomBytes(rng: Rng, n: number): Uint8Array {
  return Uint8Array.from({ length: n }, () => (rng() < 0.5 ? pick(rng, INTERESTING_BYTES) : int(rng, 256)));
}

const INTERESTING_BYTES = [0x00, 0x20, 0x7b, 0x7d, 0x5b, 0x5d, 0x22, 0x2c, 0x3a, 0x5c, 0x30, 0x39, 0x2d, 0x2e, 0x65, 0x75, 0x80, 0xbf, 0xc0, 0xc2, 0xe0, 0xed, 0xf0, 0xf4, 0xff];

const INTERESTING_NUMBERS = [
  "0", "1", "-1", "-0", "2", "3", "4", "7", "8", "255", "256", "65535", "1.5", "2.0", "1e2", "1e400", "-1e400", "1E-7",
  "4294967295", "4294967296", "9007199254740991", "9007199254740992", "9007199254740993",
  "18446744073709551614", "18446744073709551615", "18446744073709551616", "99999999999999999999999999999999",
];

const INTERESTING_STRINGS = [
  `"F64"`, `"F32"`, `"BF16"`, `"F16"`, `"U8"`, `"BOOL"`, `"F8_E4M3"`, `"I64"`, `"F128"`, `"f32"`, `""`, `"__proto__"`, `"__metadata__"`,
  `"constructor"`, `"toString"`, `"dtype"`, `"shape"`, `"data_offsets"`, `"\\ud800"`, `"\\u0000"`, `"caf\u00e9"`, `"\\"`, `"a\\qb"`,
];

const INTERESTING_VALUES = ["null", "true", "false", "[]", "{}", "[[]]", `"x"`, "[0,0]", "[1,2,3]", "[-1]", `{"dtype":"U8","shape":[0],"data_offsets":[0,0]}`, "[".repeat(80) + "]".repeat(80)];

/** Rewrites the header as latin1 text (one char per byte, whatever the bytes are). */
function editHeader(bytes: Uint8Array, rng: Rng, edit: (text: string) => string): Uint8Array {
  const end = headerEnd(bytes);
  if (end <= 8) return bytes;
  const text = Buffer.from(bytes.subarray(8, end)).toString("latin1");
  const edited = Buffer.from(edit(text), "latin1");
  const out = concat(bytes.subarray(0, 8), edited, bytes.subarray(end));
  // Usually keep the prefix consistent, so the edit reaches the JSON and tensor checks.
  if (rng() < 0.9) new DataView(out.buffer).setBigUint64(0, BigInt(edited.length), true);
  return out;
}

/** Replaces one regex match (chosen at random) with what `replace` returns. */
function replaceOne(text: string, pattern: RegExp, rng: Rng, replace: (match: string) => string): string {
  const matches = [...text.matchAll(pattern)];
  if (matches.length === 0) return text;
  const m = pick(rng, matches);
  return text.slice(0, m.index) + replace(m[0]) + text.slice(m.index! + m[0].length);
}

const NUMBER_TOKEN = /-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g;
const STRING_TOKEN = /"(?:[^"\\]|\\.)*"/g;
const ENTRY = /"(?:[^"\\]|\\.)*":\{[^{}]*\}/g;
const VALUE_AFTER_COLON = /:(?:"(?:[^"\\]|\\.)*"|-?\d+|\[[^[\]]*\]|\{[^{}]*\})/g;

const MUTATORS: { name: string; apply: (b: Uint8Array, rng: Rng) => Uint8Array }[] = [
  { name: "flip-bit", apply: (b, rng) => { if (b.length === 0) return b; const out = b.slice(); out[int(rng, b.length)]! ^= 1 << int(rng, 8); return out; } },
  { name: "set-bytes", apply: (b, rng) => { const out = b.slice(); for (let k = 1 + int(rng, 4); k > 0 && out.length > 0; k--) out[int(rng, out.length)] = rng() < 0.5 ? pick(rng, INTERESTING_BYTES) : int(rng, 256); return out; } },
  { name: "header-byte", apply: (b, rng) => { const end = headerEnd(b); if (end <= 8) return b; const out = b.slice(); out[8 + int(rng, end - 8)] = pick(rng, INTERESTING_BYTES); return out; } },
  { name: "insert", apply: (b, rng) => { const at = int(rng, b.length + 1); return concat(b.subarray(0, at), randomBytes(rng, 1 + int(rng, 16)), b.subarray(at)); } },
  { name: "delete", apply: (b, rng) => { const at = int(rng, b.length + 1); return concat(b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + int(rng, 16)))); } },
  { name: "truncate", apply: (b, rng) => b.subarray(0, rng() < 0.5 ? int(rng, b.length + 1) : Math.max(0, b.length - 1 - int(rng, 16))) },
  { name: "append", apply: (b, rng) => concat(b, randomBytes(rng, 1 + int(rng, 16))) },
  {
    name: "length-prefix",
    apply: (b, rng) => {
      if (b.length < 8) return b;
      const n = BigInt(headerEnd(b) - 8);
      const len = BigInt(b.length);
      const values = [0n, 1n, 2n, 7n, 8n, n - 1n, n + 1n, len - 9n, len - 8n, len - 7n, len, 2n ** 31n, 2n ** 32n, 2n ** 53n, 2n ** 53n + 1n, 2n ** 63n, 2n ** 64n - 1n, 100_000_000n, 100_000_001n, BigInt(int(rng, 2 ** 32))];
      const out = b.slice();
      new DataView(out.buffer).setBigUint64(0, BigInt.asUintN(64, pick(rng, values)), true);
      return out;
    },
  },
  { name: "number-token", apply: (b, rng) => editHeader(b, rng, (t) => replaceOne(t, NUMBER_TOKEN, rng, (m) => (rng() < 0.7 ? pick(rng, INTERESTING_NUMBERS) : String(BigInt(m.replace(/[.eE].*/, "")) + BigInt(int(rng, 9) - 4))))) },
  { name: "string-token", apply: (b, rng) => editHeader(b, rng, (t) => replaceOne(t, STRING_TOKEN, rng, () => pick(rng, INTERESTING_STRINGS))) },
  { name: "value", apply: (b, rng) => editHeader(b, rng, (t) => replaceOne(t, VALUE_AFTER_COLON, rng, () => `:${pick(rng, INTERESTING_VALUES)}`)) },
  { name: "duplicate-entry", apply: (b, rng) => editHeader(b, rng, (t) => replaceOne(t, ENTRY, rng, (m) => `${m},${rng() < 0.5 ? m : m.replace(/^"/, '"x')}`)) },
  { name: "drop-entry", apply: (b, rng) => editHeader(b, rng, (t) => replaceOne(t, new RegExp(`,?${ENTRY.source}`, "g"), rng, () => "")) },
  { name: "swap-numbers", apply: (b, rng) => editHeader(b, rng, (t) => { const nums = [...t.matchAll(NUMBER_TOKEN)].map((m) => m[0]); return nums.length === 0 ? t : replaceOne(t, NUMBER_TOKEN, rng, () => pick(rng, nums)); }) },
  { name: "pad-header", apply: (b, rng) => editHeader(b, rng, (t) => t + pick(rng, [" ", "   ", "\n", "\t", "\0", "\r\n", "}", ","])) },
  { name: "splice-seed", apply: (b, rng) => { const other = pick(rng, SEEDS).bytes; const at = int(rng, Math.min(b.length, other.length) + 1); return concat(b.subarray(0, at), other.subarray(at)); } },
  { name: "data-byte", apply: (b, rng) => { const end = headerEnd(b); if (end >= b.length) return b; const out = b.slice(); out[end + int(rng, b.length - end)] = int(rng, 256); return out; } },
];

const TOTAL_WEIGHT = SEEDS.reduce((s, x) => s + x.weight, 0);

function mutant(seed: number, iteration: number): { bytes: Uint8Array; recipe: string } {
  const rng = iterationRng(seed, iteration);
  let r = rng() * TOTAL_WEIGHT;
  const base = SEEDS.find((s) => (r -= s.weight) < 0) ?? SEEDS[0]!;
  let bytes = base.bytes;
  const steps: string[] = [];
  for (let k = 1 + int(rng, 3); k > 0; k--) {
    const m = pick(rng, MUTATORS);
    bytes = m.apply(bytes, rng);
    steps.push(m.name);
  }
  return { bytes, recipe: `${base.name}: ${steps.join(" + ")}` };
}

// ---------------------------------------------------------------------------------------------
// Oracle

type Outcome = { ok: true; file: SafetensorsFile } | { ok: false; code: string };

function reproduce(seed: number, iteration: number, recipe: string, bytes: Uint8Array): string {
  const dump = bytes.length <= 1024 ? ` bytes(base64)=${Buffer.from(bytes).toString("base64")}` : "";
  return `LMPACK_FUZZ_SEED=${seed} iteration=${iteration} (${recipe}, ${bytes.length} bytes)${dump}`;
}

async function exercise(seed: number, iteration: number): Promise<Outcome> {
  const { bytes, recipe } = mutant(seed, iteration);
  const where = (): string => reproduce(seed, iteration, recipe, bytes);
  const source = new BufferSource(bytes, NAME);
  let outcome: Outcome;
  try {
    const file = await SafetensorsFile.fromSource(source);
    for (const t of file.tensors) {
      const read = await file.read(t.name);
      if (read.length !== t.byteLength || Buffer.compare(read, bytes.subarray(t.byteOffset, t.byteOffset + t.byteLength)) !== 0) {
        assert.unreachable(`tensor "${t.name}" read back wrong bytes: ${where()}`);
      }
    }
    outcome = { ok: true, file };
  } catch (error) {
    if ((error as Error)?.name === "Assertion") throw error;
    if (!(error instanceof FormatError) || typeof error.code !== "string") {
      throw new Error(`not a FormatError: ${String((error as Error)?.stack ?? error)}\n  reproduce: ${where()}`);
    }
    assert.is(error.file, NAME, `error names the file: ${where()}`);
    outcome = { ok: false, code: error.code };
  }
  assert.ok(source.maxReadLength <= bytes.length, `read ${source.maxReadLength} bytes from ${bytes.length}: ${where()}`);
  if (outcome.ok) checkTiling(outcome.file, bytes, where);
  return outcome;
}

/**
 * An accepted file's tensors tile its data section exactly. Checked twice: on the reader's own
 * result, and independently from the header re-parsed with JSON.parse.
 */
function checkTiling(file: SafetensorsFile, bytes: Uint8Array, where: () => string): void {
  const { dataStart, tensors } = file.header;
  const total = tensors.reduce((s, t) => s + t.byteLength, 0);
  assert.is(total, bytes.length - dataStart, `sum of tensor bytes = data section: ${where()}`);
  let expected = dataStart;
  for (const t of tensors) {
    assert.is(t.byteOffset, expected, `tensor "${t.name}" starts where the previous ended: ${where()}`);
    expected += t.byteLength;
  }
  const json = JSON.parse(Buffer.from(bytes.subarray(8, dataStart)).toString("utf8")) as Record<string, { data_offsets: [number, number] }>;
  const ranges = Object.entries(json)
    .filter(([name]) => name !== "__metadata__")
    .map(([name, t]) => ({ name, begin: Number(t.data_offsets[0]), end: Number(t.data_offsets[1]) }))
    .sort((a, b) => a.begin - b.begin || a.end - b.end);
  assert.is(ranges.length, tensors.length, `every header entry is a tensor: ${where()}`);
  let at = 0;
  for (const r of ranges) {
    assert.is(r.begin, at, `JSON.parse view: "${r.name}" starts at the previous end: ${where()}`);
    at = r.end;
  }
  assert.is(at, bytes.length - dataStart, `JSON.parse view: last tensor ends at the end of the file: ${where()}`);
}

// ---------------------------------------------------------------------------------------------

const fuzz = suite("safetensors: mutation fuzz");

fuzz("every seed file is accepted (except the deliberately truncated fixture head)", async () => {
  for (const s of SEEDS) {
    let code = "ok";
    try {
      await SafetensorsFile.fromSource(new BufferSource(s.bytes, NAME));
    } catch (error) {
      code = (error as FormatError).code;
    }
    assert.is(code, s.name === "fixture-head" ? "DATA_TRUNCATED" : "ok", s.name);
  }
});

fuzz(`${ITERATIONS} mutants: success or FormatError, never anything else (seed ${SEED})`, async () => {
  const started = performance.now();
  const codes = new Map<string, number>();
  let accepted = 0;
  for (let i = 0; i < ITERATIONS; i++) {
    const outcome = await exercise(SEED, i);
    if (outcome.ok) accepted++;
    else codes.set(outcome.code, (codes.get(outcome.code) ?? 0) + 1);
  }
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  console.log(`  fuzz: ${ITERATIONS} mutants in ${seconds} s (seed ${SEED}): ${accepted} accepted, rejected by ${codes.size} codes ${JSON.stringify(Object.fromEntries([...codes].sort()))}`);
  // The mutators must reach past the cheap checks, or the fuzz proves little.
  if (ITERATIONS >= 5000) {
    assert.ok(accepted >= ITERATIONS / 100, `only ${accepted} mutants were accepted`);
    assert.ok(codes.size >= 15, `only ${codes.size} distinct codes reached: ${[...codes.keys()].join(", ")}`);
  }
});

fuzz("accepted mutants whose header changed still tile the data section exactly", async () => {
  // Mutants of the header that still open are the interesting ones for tiling: count them
  // separately, so a regression that makes every header edit fail is visible.
  let headerEdited = 0;
  for (let i = 0; i < Math.min(ITERATIONS, 4000); i++) {
    const iteration = ITERATIONS + i;
    const { bytes } = mutant(SEED, iteration);
    const outcome = await exercise(SEED, iteration);
    if (!outcome.ok) continue;
    const original = SEEDS.map((s) => s.bytes).find((s) => Buffer.compare(s.subarray(0, 8 + outcome.file.header.headerByteLength), bytes.subarray(0, outcome.file.header.dataStart)) === 0);
    if (original === undefined) headerEdited++;
  }
  if (ITERATIONS >= 1000) assert.ok(headerEdited > 0, "no accepted mutant had an edited header");
});

fuzz.run();

const utf8 = suite("safetensors: UTF-8 validator vs TextDecoder");

utf8("firstInvalidUtf8 agrees with TextDecoder on 200,000 random byte strings", () => {
  // WHATWG decoding replaces each ill-formed sequence with U+FFFD, so the bytes survive a
  // decode/encode round trip exactly when they are valid UTF-8. (Same verdict as `fatal: true`,
  // without paying for an exception per invalid string.)
  const decoder = new TextDecoder("utf-8", { ignoreBOM: true });
  const encoder = new TextEncoder();
  const decodes = (b: Uint8Array): boolean => Buffer.compare(encoder.encode(decoder.decode(b)), b) === 0;
  const alphabet = [0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xe1, 0xec, 0xed, 0xee, 0xef, 0xf0, 0xf1, 0xf3, 0xf4, 0xf5, 0xf8, 0xfe, 0xff];
  const rng = mulberry32(SEED);
  let invalid = 0;
  for (let iteration = 0; iteration < 200_000; iteration++) {
    const b = Uint8Array.from({ length: 1 + int(rng, 10) }, () => (rng() < 0.8 ? pick(rng, alphabet) : int(rng, 256)));
    const at = firstInvalidUtf8(b);
    const hex = Buffer.from(b).toString("hex");
    assert.is(at === -1, decodes(b), `valid? ${hex}`);
    if (at === -1) continue;
    invalid++;
    assert.ok(decodes(b.subarray(0, at)), `everything before ${at} is valid: ${hex}`);
    for (let k = 1; k <= 4 && at + k <= b.length; k++) assert.not.ok(decodes(b.subarray(at, at + k)), `no sequence starts at ${at}: ${hex}`);
  }
  assert.ok(invalid > 1000 && invalid < 199_000, `both outcomes exercised (${invalid} invalid)`);
});

utf8.run();
