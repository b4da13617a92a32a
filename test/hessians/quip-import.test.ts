import { suite } from "uvu";
import * as assert from "uvu/assert";
import { copyFile, writeFile } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { crc32 } from "node:zlib";
import { hessianSource } from "../../cli/commands/quantize.js";
import { importQuipHessians, isQuipHessianSpec, openQuipHessians, readQuipHessianFile, readQuipRecord } from "../../converters/hessians/quip-import.js";
import { HESSIAN_FILE, openHessianStore, writeHessianStore } from "../../converters/hessians/store.js";
import { BufferSource } from "../../converters/io/random-access.js";
import { unpickle } from "../../converters/torch/pickle.js";
import { ZipArchive } from "../../converters/torch/zip.js";
import { FormatError, isLmpackError, VerificationError, type FormatErrorCode } from "../../formats/errors.js";
import { REPO_ROOT, tempDir } from "../helpers/paths.js";
import { mulberry32 } from "../helpers/prng.js";

/**
 * QuIP#/VPTQ Hessian import. The fixtures are real torch.save files (test/fixtures/quip-hessians/
 * README.md says how they were made); expected.json holds torch's own flat_to_sym(flatH, n) and
 * flat_to_sym(flatH, n) + mu·muᵀ, which lmpack must reproduce bit for bit. Hostile inputs are
 * built here byte by byte (nothing is ever executed) and each is refused with its own code.
 *
 *   LMPACK_FUZZ_SEED=<u32> LMPACK_QUIP_FUZZ_ITERATIONS=<n>
 */

const FIXTURES = join(REPO_ROOT, "test", "fixtures", "quip-hessians");
const SEED = Number(process.env["LMPACK_FUZZ_SEED"] ?? 0x9417e55) >>> 0;
const ITERATIONS = Number(process.env["LMPACK_QUIP_FUZZ_ITERATIONS"] ?? 300);

interface Expected {
  n: number;
  ct: number;
  mu: number[];
  flat_to_sym?: number[][];
  uncentred: number[][];
  xtx_over_ct?: number[][];
}
const EXPECTED = JSON.parse(readFileSync(join(FIXTURES, "expected.json"), "utf8")) as { torch: string; files: Record<string, Expected> };

function assertMatrix(actual: Float64Array, expected: number[][], what: string): void {
  const K = expected.length;
  assert.is(actual.length, K * K, `${what}: size`);
  for (let i = 0; i < K; i++) for (let j = 0; j < K; j++) if (actual[i * K + j] !== expected[i]![j]) assert.unreachable(`${what}[${i}][${j}] = ${actual[i * K + j]}, torch ${expected[i]![j]}`);
}

async function caught(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(() => undefined, (error: unknown) => error);
}

function assertFormatError(error: unknown, code: FormatErrorCode, what: string): FormatError {
  if (!(error instanceof FormatError)) throw new Error(`${what}: expected FormatError ${code}, got ${String(error)}`);
  assert.is(error.code, code, `${what}: ${error.message}`);
  return error;
}

// ---------------------------------------------------------------------------------------------
// Byte builders: a ZIP as torch.save lays it out, and pickle programs as torch.save writes them.

const enc = new TextEncoder();

interface ZipInput {
  name: string;
  data: Uint8Array;
  method?: number;
  /** Stored CRC override. */
  crc?: number;
}

function buildZip(entries: ZipInput[]): Uint8Array {
  const parts: Uint8Array[] = [];
  const central: Uint8Array[] = [];
  let offset = 0;
  for (const e of entries) {
    const name = enc.encode(e.name);
    const crc = e.crc ?? crc32(e.data) >>> 0;
    const local = new DataView(new ArrayBuffer(30));
    local.setUint32(0, 0x04034b50, true);
    local.setUint16(6, 0x0800, true);
    local.setUint16(8, e.method ?? 0, true);
    local.setUint32(14, crc, true);
    local.setUint32(18, e.data.length, true);
    local.setUint32(22, e.data.length, true);
    local.setUint16(26, name.length, true);
    const head = new DataView(new ArrayBuffer(46));
    head.setUint32(0, 0x02014b50, true);
    head.setUint16(8, 0x0800, true);
    head.setUint16(10, e.method ?? 0, true);
    head.setUint32(16, crc, true);
    head.setUint32(20, e.data.length, true);
    head.setUint32(24, e.data.length, true);
    head.setUint16(28, name.length, true);
    head.setUint32(42, offset, true);
    parts.push(new Uint8Array(local.buffer), name, e.data);
    central.push(new Uint8Array(head.buffer), name);
    offset += 30 + name.length + e.data.length;
  }
  const directoryBytes = central.reduce((s, p) => s + p.length, 0);
  const end = new DataView(new ArrayBuffer(22));
  end.setUint32(0, 0x06054b50, true);
  end.setUint16(8, entries.length, true);
  end.setUint16(10, entries.length, true);
  end.setUint32(12, directoryBytes, true);
  end.setUint32(16, offset, true);
  return concat([...parts, ...central, new Uint8Array(end.buffer)]);
}

function concat(parts: ArrayLike<number>[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Pickle pieces: numbers are opcode bytes, strings are raw ASCII (for GLOBAL lines). */
function pkl(...parts: (number | string | Uint8Array)[]): Uint8Array {
  return concat(parts.map((p) => (typeof p === "number" ? [p] : typeof p === "string" ? Array.from(p, (c) => c.charCodeAt(0)) : p)));
}
const u32 = (n: number) => Uint8Array.of(n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24);
const unicode = (s: string) => pkl(0x58, u32(enc.encode(s).length), enc.encode(s));
const int = (n: number) => (n < 256 ? pkl(0x4b, Uint8Array.of(n)) : pkl(0x4a, u32(n)));
const PROTO2 = pkl(0x80, 2);

/** torch's `_rebuild_tensor_v2((storage, FloatStorage, key, cpu, numel), offset, (size,), (1,), False, OrderedDict())`. */
function tensorOps(key: string, numel: number, offset: number, size: number): Uint8Array {
  return pkl(
    "ctorch._utils\n_rebuild_tensor_v2\n", 0x28,
    0x28, unicode("storage"), "ctorch\nFloatStorage\n", unicode(key), unicode("cpu"), int(numel), 0x74, 0x51,
    int(offset), int(size), 0x85, int(1), 0x85, 0x89, "ccollections\nOrderedDict\n", 0x29, 0x52, 0x74, 0x52,
  );
}

interface QuipSpec {
  n: number;
  ct?: number;
  flat?: { numel: number; offset?: number; size?: number };
  mu?: { numel: number; offset?: number; size?: number } | null;
}

/** A QuIP#-form data.pkl: {"flatH": tensor(storage "0"), "mu": tensor(storage "1"), "n": n, "ct": ct}. */
function quipPickle(spec: QuipSpec): Uint8Array {
  const tri = (spec.n * (spec.n + 1)) / 2;
  const flat = spec.flat ?? { numel: tri };
  const mu = spec.mu === undefined ? { numel: spec.n } : spec.mu;
  return pkl(
    PROTO2, 0x7d, 0x28,
    unicode("flatH"), tensorOps("0", flat.numel, flat.offset ?? 0, flat.size ?? flat.numel),
    ...(mu === null ? [] : [unicode("mu"), tensorOps("1", mu.numel, mu.offset ?? 0, mu.size ?? mu.numel)]),
    unicode("n"), int(spec.n), unicode("ct"), int(spec.ct ?? 7), 0x75, 0x2e,
  );
}

function f32(values: number[]): Uint8Array {
  return new Uint8Array(Float32Array.from(values).buffer);
}

/** A complete torch.save-shaped archive around `pickle`, with storages "0" and "1". */
function torchArchive(pickle: Uint8Array, storages: { "0"?: Uint8Array; "1"?: Uint8Array }, extra: ZipInput[] = [], options: { byteorder?: string; pickleMethod?: number } = {}): Uint8Array {
  return buildZip([
    { name: "archive/data.pkl", data: pickle, ...(options.pickleMethod === undefined ? {} : { method: options.pickleMethod }) },
    { name: "archive/byteorder", data: enc.encode(options.byteorder ?? "little") },
    ...(storages["0"] === undefined ? [] : [{ name: "archive/data/0", data: storages["0"] }]),
    ...(storages["1"] === undefined ? [] : [{ name: "archive/data/1", data: storages["1"] }]),
    { name: "archive/version", data: enc.encode("3\n") },
    ...extra,
  ]);
}

/** n = 2: flatH = [a, b, c] → [[a, b], [b, c]]; mu = [m0, m1]. */
const SMALL_FLAT = [4, 1, 9];
const SMALL_MU = [0.5, -2];
const small = (spec: Partial<QuipSpec> = {}, storages: { "0"?: Uint8Array; "1"?: Uint8Array } = { "0": f32(SMALL_FLAT), "1": f32(SMALL_MU) }, extra: ZipInput[] = [], options = {}) =>
  torchArchive(quipPickle({ n: 2, ...spec }), storages, extra, options);

// ---------------------------------------------------------------------------------------------

const decode = suite("quip hessians: torch.save fixtures");

for (const [rel, expected] of Object.entries(EXPECTED.files)) {
  decode(`${rel}: flat_to_sym(flatH) + mu·muᵀ equals torch's, element for element`, async () => {
    const record = await readQuipRecord(join(FIXTURES, rel));
    assert.is(record.size, expected.n);
    assert.is(record.nSamples, expected.ct);
    assert.equal(Array.from(record.mu!), expected.mu);
    if (expected.flat_to_sym !== undefined) assertMatrix(record.stored, expected.flat_to_sym, "flat_to_sym");
    const h = await readQuipHessianFile(join(FIXTURES, rel));
    assert.is(h.nSamples, expected.ct);
    assertMatrix(h.data, expected.uncentred, "H");
  });
}

decode("H is the uncentred second moment XᵀX/ct: it matches torch's float64 XᵀX/ct, the stored centred matrix does not", async () => {
  const expected = EXPECTED.files["single/3_qkv.pt"]!;
  const K = expected.n;
  const h = await readQuipHessianFile(join(FIXTURES, "single/3_qkv.pt"));
  const record = await readQuipRecord(join(FIXTURES, "single/3_qkv.pt"));
  const scale = Math.max(...expected.xtx_over_ct!.flat().map(Math.abs));
  let worstH = 0;
  let worstStored = 0;
  for (let i = 0; i < K; i++) {
    for (let j = 0; j < K; j++) {
      worstH = Math.max(worstH, Math.abs(h.data[i * K + j]! - expected.xtx_over_ct![i]![j]!));
      worstStored = Math.max(worstStored, Math.abs(record.stored[i * K + j]! - expected.xtx_over_ct![i]![j]!));
    }
  }
  // flatH and mu were rounded to float32 by the producer: a few ulps of float32 at the matrix's scale.
  assert.ok(worstH < 1e-6 * scale, `|H - XᵀX/ct| = ${worstH} (scale ${scale})`);
  assert.ok(worstStored > 1e-2 * scale, "the fixture's inputs have a non-zero mean, so centring must show");
});

decode("a directory in QuIP#'s naming maps to lmpack linears with q/k/v and gate/up sharing one H", async () => {
  const source = await openQuipHessians(join(FIXTURES, "toy"));
  try {
    assert.equal(source.files.map((f) => `${f.name} [${f.aliases.join(" ")}] ${f.size}`), [
      "model.layers.0.mlp.down_proj [] 10",
      "model.layers.0.self_attn.o_proj [] 6",
      "model.layers.0.self_attn.q_proj [model.layers.0.self_attn.k_proj model.layers.0.self_attn.v_proj] 6",
      "model.layers.0.mlp.gate_proj [model.layers.0.mlp.up_proj] 6",
      "model.layers.1.mlp.down_proj [] 10",
      "model.layers.1.self_attn.o_proj [] 6",
      "model.layers.1.self_attn.q_proj [model.layers.1.self_attn.k_proj model.layers.1.self_attn.v_proj] 6",
      "model.layers.1.mlp.gate_proj [model.layers.1.mlp.up_proj] 6",
    ]);
    assertMatrix((await source.get("model.layers.1.self_attn.v_proj", 6))!.data, EXPECTED.files["toy/1_qkv.pt"]!.uncentred, "1_qkv via v_proj");
    assertMatrix((await source.get("model.layers.0.mlp.up_proj", 6))!.data, EXPECTED.files["toy/0_up.pt"]!.uncentred, "0_up via up_proj");
    assertMatrix((await source.get("model.layers.0.mlp.down_proj", 10))!.data, EXPECTED.files["toy/0_down.pt"]!.uncentred, "0_down");
    assert.is(await source.get("model.layers.2.mlp.down_proj", 10), undefined);
    assertFormatError(await caught(source.get("model.layers.0.mlp.down_proj", 12)), "SHAPE_INVALID", "width differs from the layer");
  } finally {
    await source.close();
  }
});

decode("--hessians: a directory of .pt files or one .pt file goes to the importer; a store directory does not", async () => {
  const viaDir = await hessianSource(join(FIXTURES, "toy"), undefined as never);
  assertMatrix((await viaDir!.get("model.layers.0.self_attn.k_proj", 6))!.data, EXPECTED.files["toy/0_qkv.pt"]!.uncentred, "dir");
  const viaFile = await hessianSource(join(FIXTURES, "single", "3_qkv.pt"), undefined as never);
  assertMatrix((await viaFile!.get("model.layers.3.self_attn.q_proj", 16))!.data, EXPECTED.files["single/3_qkv.pt"]!.uncentred, "file");
  await viaDir!.close?.();
  await viaFile!.close?.();
  const work = await tempDir();
  try {
    await copyFile(join(FIXTURES, "toy", "0_o.pt"), join(work.path, "0_o.pt"));
    assert.ok(await isQuipHessianSpec(work.path));
    await writeFile(join(work.path, HESSIAN_FILE), "");
    assert.not.ok(await isQuipHessianSpec(work.path), "an lmpack store wins");
  } finally {
    await work.cleanup();
  }
});

decode("importQuipHessians feeds writeHessianStore; per-linear file names are read as they are", async () => {
  const work = await tempDir();
  try {
    await copyFile(join(FIXTURES, "toy", "1_down.pt"), join(work.path, "model.layers.1.mlp.down_proj.pt"));
    await copyFile(join(FIXTURES, "toy", "1_qkv.pt"), join(work.path, "1_qkv.pt"));
    await writeFile(join(work.path, "README.md"), "ignored");
    const entries = await importQuipHessians(work.path);
    assert.equal(entries.map((e) => e.name), ["model.layers.1.self_attn.q_proj", "model.layers.1.mlp.down_proj"]);
    await writeHessianStore(join(work.path, HESSIAN_FILE), entries, "quip-test");
    const store = await openHessianStore(work.path);
    try {
      const h = await store.get("model.layers.1.self_attn.v_proj", 6);
      assertMatrix(h!.data, EXPECTED.files["toy/1_qkv.pt"]!.uncentred, "store");
      assert.is(h!.nSamples, 24);
    } finally {
      await store.close();
    }
  } finally {
    await work.cleanup();
  }
});

decode("a set whose files disagree on the hidden width is refused before any quantizer runs", async () => {
  const work = await tempDir();
  try {
    await copyFile(join(FIXTURES, "toy", "0_qkv.pt"), join(work.path, "0_qkv.pt"));
    await copyFile(join(FIXTURES, "toy", "0_down.pt"), join(work.path, "1_up.pt"));
    const error = assertFormatError(await caught(openQuipHessians(work.path)), "SHAPE_INVALID", "qkv vs up width");
    assert.ok(error.file?.endsWith("1_up.pt"));
  } finally {
    await work.cleanup();
  }
});

decode.run();

// ---------------------------------------------------------------------------------------------

const hostile = suite("quip hessians: hostile inputs");

hostile("the byte builders make a file lmpack reads (so each row below differs by its one defect)", async () => {
  const h = await readQuipHessianFile(new BufferSource(small(), "small.pt"));
  assert.equal(Array.from(h.data), [4 + 0.25, 1 - 1, 1 - 1, 9 + 4]);
  assert.is(h.nSamples, 7);
});

const PICKLES: { name: string; bytes: Uint8Array; code: FormatErrorCode; actual?: string; byteOffset?: number }[] = [
  { name: "GLOBAL os.system, REDUCE'd", bytes: pkl(PROTO2, "cos\nsystem\n", unicode("echo pwned"), 0x85, 0x52, 0x2e), code: "LAYOUT_UNKNOWN", actual: "os.system", byteOffset: 2 },
  { name: "STACK_GLOBAL builtins.eval (protocol 4)", bytes: pkl(0x80, 4, 0x8c, 8, "builtins", 0x8c, 4, "eval", 0x93, 0x2e), code: "LAYOUT_UNKNOWN", actual: "builtins.eval", byteOffset: 18 },
  { name: "GLOBAL torch.load (a torch name off the list)", bytes: pkl(PROTO2, "ctorch\nload\n", 0x2e), code: "LAYOUT_UNKNOWN", actual: "torch.load", byteOffset: 2 },
  { name: "REDUCE of a storage class", bytes: pkl(PROTO2, "ctorch\nFloatStorage\n", 0x29, 0x52, 0x2e), code: "LAYOUT_UNKNOWN", actual: "torch.FloatStorage" },
  { name: "unknown opcode 0xff", bytes: pkl(PROTO2, 0x7d, 0xff, 0x2e), code: "LAYOUT_UNKNOWN", actual: "0xff", byteOffset: 3 },
  { name: "BUILD (object state)", bytes: pkl(PROTO2, 0x7d, 0x7d, 0x62, 0x2e), code: "LAYOUT_UNKNOWN", actual: "0x62", byteOffset: 4 },
  { name: "INST (class instantiation)", bytes: pkl(PROTO2, 0x28, "ios\nsystem\n", 0x2e), code: "LAYOUT_UNKNOWN", actual: "0x69", byteOffset: 3 },
  { name: "protocol 6", bytes: pkl(0x80, 6, 0x4e, 0x2e), code: "LAYOUT_UNKNOWN" },
  { name: "SETITEM on an empty stack", bytes: pkl(PROTO2, 0x73, 0x2e), code: "METADATA_INVALID", byteOffset: 2 },
  { name: "SETITEM reaching below the innermost MARK", bytes: pkl(PROTO2, 0x7d, 0x28, 0x75, 0x28, 0x4e, 0x73, 0x2e), code: "METADATA_INVALID" },
  { name: "BINGET of a memo slot never put", bytes: pkl(PROTO2, 0x68, 7, 0x2e), code: "METADATA_INVALID", byteOffset: 2 },
  { name: "two values at STOP", bytes: pkl(PROTO2, 0x4e, 0x4e, 0x2e), code: "METADATA_INVALID" },
  { name: "no STOP", bytes: pkl(PROTO2, 0x7d), code: "DATA_TRUNCATED" },
  { name: "bytes after STOP", bytes: pkl(PROTO2, 0x4e, 0x2e, 0x4e), code: "TRAILING_BYTES" },
  { name: "BINUNICODE longer than the program", bytes: pkl(PROTO2, 0x58, u32(1000), "abc"), code: "DATA_TRUNCATED", byteOffset: 2 },
  { name: "BINUNICODE over the string cap", bytes: pkl(PROTO2, 0x58, u32(0x7fffffff), "abc"), code: "HEADER_TOO_LARGE" },
  { name: "300 nested MARKs", bytes: pkl(PROTO2, ...new Array<number>(300).fill(0x28)), code: "HEADER_TOO_DEEP" },
  { name: "persistent id that is not a storage", bytes: pkl(PROTO2, unicode("x"), 0x51, 0x2e), code: "METADATA_INVALID" },
  { name: "dict key set twice", bytes: pkl(PROTO2, 0x7d, 0x28, unicode("n"), 0x4e, unicode("n"), 0x4e, 0x75, 0x2e), code: "DUPLICATE_KEY" },
];

for (const c of PICKLES) {
  hostile(`pickle: ${c.name} → ${c.code}`, () => {
    let error: unknown;
    try {
      unpickle(c.bytes, "case.pkl");
    } catch (e) {
      error = e;
    }
    const e = assertFormatError(error, c.code, c.name);
    assert.is(e.file, "case.pkl");
    if (c.actual !== undefined) assert.is(e.actual, c.actual);
    if (c.byteOffset !== undefined) assert.is(e.byteOffset, c.byteOffset);
  });
}

hostile("a disallowed global inside a real archive names the file, data.pkl and the global; nothing runs", async () => {
  const bytes = torchArchive(pkl(PROTO2, "cos\nsystem\n", unicode("touch /tmp/lmpack-pwned"), 0x85, 0x52, 0x2e), {});
  const e = assertFormatError(await caught(readQuipHessianFile(new BufferSource(bytes, "evil.pt"))), "LAYOUT_UNKNOWN", "os.system");
  assert.is(e.file, "evil.pt!/archive/data.pkl");
  assert.match(e.message, /os\.system/);
});

const realFile = () => new Uint8Array(readFileSync(join(FIXTURES, "single", "3_qkv.pt")));

const ARCHIVES: { name: string; bytes: () => Uint8Array; code: FormatErrorCode; tensor?: string; actual?: string }[] = [
  { name: "real file cut to 1500 bytes (no end record)", bytes: () => realFile().subarray(0, 1500), code: "DATA_TRUNCATED" },
  { name: "real file missing its last byte", bytes: () => realFile().subarray(0, realFile().length - 1), code: "DATA_TRUNCATED" },
  { name: "central directory running past the end records", bytes: () => patchEocd(small(), 16, 0x7fff0000), code: "OFFSET_PAST_EOF" },
  { name: "real file whose ZIP and ZIP64 end records disagree", bytes: () => patchEocd(realFile(), 16, 0x1234), code: "CONTAINER_HEADER_INVALID" },
  { name: "10 bytes", bytes: () => new Uint8Array(10), code: "FILE_TOO_SMALL" },
  { name: "compressed (deflate) data.pkl", bytes: () => small({}, undefined, [], { pickleMethod: 8 }), code: "LAYOUT_UNKNOWN", actual: "method 8" },
  { name: "mu storage shorter than numel", bytes: () => small({}, { "0": f32(SMALL_FLAT), "1": f32([0.5]) }), code: "DATA_TRUNCATED", tensor: "mu" },
  { name: "flatH storage longer than numel", bytes: () => small({}, { "0": f32([...SMALL_FLAT, 0]), "1": f32(SMALL_MU) }), code: "TRAILING_BYTES", tensor: "flatH" },
  { name: "storage entry missing", bytes: () => small({}, { "0": f32(SMALL_FLAT) }), code: "TENSOR_MISSING", tensor: "mu" },
  { name: "flatH is not n(n+1)/2 long", bytes: () => small({ n: 3, flat: { numel: 3 }, mu: { numel: 3 } }), code: "SHAPE_SIZE_MISMATCH", tensor: "flatH" },
  { name: "tensor view past its storage", bytes: () => small({ flat: { numel: 3, offset: 1, size: 3 } }), code: "SHAPE_SIZE_MISMATCH" },
  { name: "no flatH", bytes: () => torchArchive(pkl(PROTO2, 0x7d, unicode("n"), int(2), 0x73, 0x2e), {}), code: "TENSOR_MISSING", tensor: "flatH" },
  { name: "big-endian byteorder", bytes: () => small({}, undefined, [], { byteorder: "big" }), code: "LAYOUT_UNKNOWN" },
  { name: "entry outside the archive folder", bytes: () => small({}, undefined, [{ name: "other/x", data: Uint8Array.of(1) }]), code: "CONTAINER_HEADER_INVALID" },
  { name: "entry name with ..", bytes: () => small({}, undefined, [{ name: "archive/../x", data: Uint8Array.of(1) }]), code: "CONTAINER_HEADER_INVALID" },
  { name: "two entries with one name", bytes: () => small({}, undefined, [{ name: "archive/version", data: Uint8Array.of(1) }]), code: "DUPLICATE_KEY" },
  { name: "legacy (pre-1.6) torch.save", bytes: () => new Uint8Array(readFileSync(join(FIXTURES, "variants", "legacy.pt"))), code: "LAYOUT_UNKNOWN" },
];

/** Overwrites a u32 field of the 32-bit end record (which ends the file: no comment). */
function patchEocd(bytes: Uint8Array, field: number, value: number): Uint8Array {
  const out = bytes.slice();
  new DataView(out.buffer).setUint32(out.length - 22 + field, value, true);
  return out;
}

for (const c of ARCHIVES) {
  hostile(`archive: ${c.name} → ${c.code}`, async () => {
    const e = assertFormatError(await caught(readQuipHessianFile(new BufferSource(c.bytes(), "case.pt"))), c.code, c.name);
    assert.ok(e.file?.startsWith("case.pt"), `file in error: ${e.message}`);
    if (c.tensor !== undefined) assert.is(e.tensor, c.tensor);
    if (c.actual !== undefined) assert.is(e.actual, c.actual);
  });
}

hostile("a flipped storage byte fails the entry's CRC-32", async () => {
  const bytes = realFile();
  const zip = await ZipArchive.open(new BufferSource(bytes, "flip.pt"));
  const storage = zip.entry("3_qkv/data/0")!;
  bytes[storage.dataOffset + 5]! ^= 0x40;
  const error = await caught(readQuipHessianFile(new BufferSource(bytes, "flip.pt")));
  assert.instance(error, VerificationError);
  assert.is((error as VerificationError).code, "CHECKSUM_MISMATCH");
  assert.is((error as VerificationError).tensor, "3_qkv/data/0");
});

/** Random byte edits: overwrite, cut, or insert. */
function mutate(seed: Uint8Array, rng: () => number): Uint8Array {
  let bytes: Uint8Array = seed.slice();
  const edits = 1 + Math.floor(rng() * 4);
  for (let k = 0; k < edits; k++) {
    const at = Math.floor(rng() * bytes.length);
    const r = rng();
    if (r < 0.7) bytes[at] = Math.floor(rng() * 256);
    else if (r < 0.85) bytes = bytes.subarray(0, at);
    else bytes = concat([bytes.subarray(0, at), Uint8Array.of(Math.floor(rng() * 256)), bytes.subarray(at)]);
  }
  return bytes;
}

hostile(`seeded mutation fuzz (${ITERATIONS} mutants of a real file and ${ITERATIONS} of its data.pkl, seed 0x${SEED.toString(16)}): each reads or is refused with a typed error`, async () => {
  const file = realFile();
  const zip = await ZipArchive.open(new BufferSource(file, "seed.pt"));
  const part = async (name: string) => zip.read(zip.entry(`3_qkv/${name}`)!);
  const [pickle, flat, mu] = [await part("data.pkl"), await part("data/0"), await part("data/1")];
  const outcomes = new Map<string, number>();
  for (let i = 0; i < 2 * ITERATIONS; i++) {
    const rng = mulberry32(SEED ^ Math.imul(i + 1, 0x9e3779b9));
    // Odd mutants keep the archive valid around a mutated pickle (CRCs recomputed), so the pickle machine sees them.
    const bytes = i % 2 === 0 ? mutate(file, rng) : torchArchive(mutate(pickle, rng), { "0": flat, "1": mu });
    let outcome = "ok";
    try {
      await readQuipHessianFile(new BufferSource(bytes, "fuzz.pt"));
    } catch (error) {
      if (!isLmpackError(error) || !(error instanceof FormatError || error instanceof VerificationError)) {
        assert.unreachable(`mutant ${i} (seed 0x${SEED.toString(16)}) threw ${String(error)}`);
      }
      outcome = (error as FormatError).code;
    }
    outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
  }
  if (process.env["LMPACK_FUZZ_VERBOSE"] === "1") console.log(Object.fromEntries(outcomes));
  assert.ok((outcomes.get("METADATA_INVALID") ?? 0) > 0 && (outcomes.get("LAYOUT_UNKNOWN") ?? 0) > 0, "pickle mutants reach the machine");
});

hostile.run();
