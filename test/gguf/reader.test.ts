import { suite } from "uvu";
import * as assert from "uvu/assert";
import { createHash } from "node:crypto";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { gguf as hfGguf } from "@huggingface/gguf";
import { FormatError, IoError, UsageError } from "../../formats/errors.js";
import { GgufFile } from "../../converters/gguf/reader.js";
import { encodeGgufHeader, writeGguf, type GgufTensorToWrite } from "../../converters/gguf/writer.js";
import { GgufType, type GgufArray, type GgufValue } from "../../converters/gguf/layout.js";
import { SHARED_DIR, tempDir } from "../helpers/paths.js";

/**
 * The GGUF reader on real files (v1 and v3), the writer's byte-exact reproduction of files
 * gguf-py wrote, and an independent parser (@huggingface/gguf 0.4.6) agreeing with ours on every
 * KV (value and type) and every tensor info (name, dims, type, offset).
 */

const F16 = join(SHARED_DIR, "checkpoints", "gguf", "tinystories-656K-f16.gguf");
const Q8 = join(SHARED_DIR, "checkpoints", "gguf", "tinystories-656K-q8_0.gguf");
const V1 = join(SHARED_DIR, "models", "stories260K", "stories260K-f32.gguf");

/** The error `run` rejects with (fails when it resolves). */
async function rejection(run: () => Promise<unknown>): Promise<unknown> {
  try {
    await run();
  } catch (error) {
    return error;
  }
  assert.unreachable("expected a rejection");
}

const sha256 = async (path: string): Promise<string> => createHash("sha256").update(await readFile(path)).digest("hex");

function tensorsOf(file: GgufFile): GgufTensorToWrite[] {
  return file.tensors.map((t) => ({ name: t.name, type: t.type, shape: t.shape, data: () => file.readChunks(t.name, 4096) }));
}

/** Our value as the plain JS value @huggingface/gguf produces (arrays as JS arrays, 64-bit as bigint). */
function plain(v: GgufValue): unknown {
  if (v.type !== GgufType.ARRAY) return v.value;
  return v.itemType === GgufType.ARRAY ? (v.items as GgufArray[]).map(plain) : Array.from(v.items as ArrayLike<unknown>);
}

async function assertAgreesWithHf(path: string): Promise<void> {
  const ours = await GgufFile.open(path);
  try {
    const theirs = await hfGguf(path, { allowLocalFile: true, typedMetadata: true });
    assert.is(theirs.metadata.version, ours.header.version, "version");
    assert.is(theirs.tensorDataOffset, BigInt(ours.header.dataStart), "data offset");
    const { version: _v, tensor_count: tc, kv_count: kc, ...kvs } = theirs.typedMetadata;
    assert.is(tc.value, BigInt(ours.tensors.length));
    assert.is(kc.value, BigInt(ours.header.metadata.size));
    assert.equal(Object.keys(kvs), [...ours.header.metadata.keys()], "keys in file order");
    for (const [key, value] of ours.header.metadata) {
      const their = kvs[key]!;
      assert.is(their.type as number, value.type, `type of ${key}`);
      if (value.type === GgufType.ARRAY) assert.is(their.subType as number | undefined, value.itemType, `item type of ${key}`);
      assert.equal(their.value, plain(value), `value of ${key}`);
    }
    assert.equal(
      theirs.tensorInfos.map((t) => ({ name: t.name, n_dims: t.n_dims, shape: t.shape, dtype: t.dtype as number, offset: t.offset })),
      ours.tensors.map((t) => ({ name: t.name, n_dims: t.ne.length, shape: t.ne.map(BigInt), dtype: t.type, offset: BigInt(t.offset) })),
    );
  } finally {
    await ours.close();
  }
}

/** A file exercising every value type, nested arrays, non-ASCII text, alignment 64 and several tensor types. */
function kitchenSink(): { metadata: Map<string, GgufValue>; tensors: GgufTensorToWrite[] } {
  const arr = (itemType: GgufArray["itemType"], items: GgufArray["items"]): GgufArray => ({ type: GgufType.ARRAY, itemType, items }) as GgufArray;
  const metadata = new Map<string, GgufValue>([
    ["general.architecture", { type: GgufType.STRING, value: "llama" }],
    ["general.alignment", { type: GgufType.UINT32, value: 64 }],
    ["t.u8", { type: GgufType.UINT8, value: 255 }],
    ["t.i8", { type: GgufType.INT8, value: -128 }],
    ["t.u16", { type: GgufType.UINT16, value: 65535 }],
    ["t.i16", { type: GgufType.INT16, value: -32768 }],
    ["t.u32", { type: GgufType.UINT32, value: 4294967295 }],
    ["t.i32", { type: GgufType.INT32, value: -2147483648 }],
    ["t.f32", { type: GgufType.FLOAT32, value: Math.fround(0.1) }],
    ["t.bool", { type: GgufType.BOOL, value: true }],
    ["t.str", { type: GgufType.STRING, value: "héllo ✓ 🦙" }],
    ["t.u64", { type: GgufType.UINT64, value: 2n ** 64n - 1n }],
    ["t.i64", { type: GgufType.INT64, value: -(2n ** 63n) }],
    ["t.f64", { type: GgufType.FLOAT64, value: 1e-300 }],
    ["t.empty", arr(GgufType.STRING, [])],
    ["t.strs", arr(GgufType.STRING, ["a", "", "ünï"])],
    ["t.bools", arr(GgufType.BOOL, [true, false])],
    ["t.f32s", arr(GgufType.FLOAT32, Float32Array.of(1.5, -0, 3e38))],
    ["t.u64s", arr(GgufType.UINT64, BigUint64Array.of(0n, 2n ** 64n - 1n))],
    ["t.i16s", arr(GgufType.INT16, Int16Array.of(-1, 2))],
    ["t.nested", arr(GgufType.ARRAY, [arr(GgufType.INT32, Int32Array.of(1, 2)), arr(GgufType.ARRAY, [arr(GgufType.STRING, ["deep"])])])],
  ]);
  const bytes = (n: number, seed: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 37 + seed) & 0x7f);
  const tensor = (name: string, type: number, shape: number[], n: number): GgufTensorToWrite => ({ name, type, shape, data: () => [bytes(n, name.length)] });
  const q8 = bytes(2 * 34, 3);
  for (let b = 0; b < 2; b++) q8[b * 34 + 1] = 0x3c; // fp16 scales of 1.0-ish, not NaN
  return {
    metadata,
    tensors: [
      tensor("a.f32", 0, [3, 5], 60),
      tensor("b.f16", 1, [7], 14),
      tensor("c.bf16", 30, [2, 1, 2, 3], 24),
      { name: "d.q8_0", type: 8, shape: [2, 32], data: () => [q8] },
      tensor("e.empty", 0, [0, 4], 0),
    ],
  };
}

const reader = suite("gguf reader on real files");

reader("v3 files written by gguf-py: header as the README describes", async () => {
  for (const path of [F16, Q8]) {
    const file = await GgufFile.open(path);
    try {
      assert.is(file.header.version, 3);
      assert.is(file.header.alignment, 32);
      assert.is(file.header.metadata.size, 29);
      assert.is(file.tensors.length, 20);
      assert.is(file.metadata.string("general.architecture"), "llama");
      assert.is(file.metadata.integer("llama.attention.head_count_kv"), 4);
      assert.is(file.metadata.array("tokenizer.ggml.tokens")?.items.length, 2048);
      assert.equal(file.tensors[0]!.ne, [128, 2048]);
      assert.equal(file.tensors[0]!.shape, [2048, 128]);
      assert.is(file.tensors.at(-1)!.name, "output_norm.weight");
      assert.ok(!file.has("output.weight"), "tied: no output.weight");
    } finally {
      await file.close();
    }
  }
});

reader("v1 file (u32 counts, lengths and dims): stories260K", async () => {
  const file = await GgufFile.open(V1);
  try {
    assert.is(file.header.version, 1);
    assert.is(file.tensors.length, 48);
    assert.is(file.header.metadata.size, 18);
    assert.is(file.header.dataStart, 11456);
    assert.is(file.metadata.string("llama.tensor_data_layout"), "Meta AI original pth");
    assert.equal(file.tensor("blk.0.ffn_gate.weight").shape, [172, 64]);
    const last = file.tensors.at(-1)!;
    assert.is(last.byteOffset + last.byteLength, (await readFile(V1)).length, "the last tensor ends the file");
  } finally {
    await file.close();
  }
});

reader("typed accessors refuse a key of the wrong type", async () => {
  const file = await GgufFile.open(F16);
  try {
    assert.throws(() => file.metadata.integer("general.architecture"), (e: unknown) => e instanceof FormatError && e.code === "METADATA_INVALID" && e.tensor === "general.architecture");
    assert.throws(() => file.metadata.string("tokenizer.ggml.tokens"), (e: unknown) => e instanceof FormatError && e.code === "METADATA_INVALID");
    assert.is(file.metadata.number("llama.rope.freq_base"), 10000);
    assert.is(file.metadata.boolean("tokenizer.ggml.add_bos_token"), true);
    assert.is(file.metadata.string("no.such.key"), undefined);
  } finally {
    await file.close();
  }
});

const writer = suite("gguf writer");

writer("re-writing gguf-py's F16 and Q8_0 files reproduces them byte for byte", async () => {
  const dir = await tempDir("lmpack-gguf-");
  try {
    for (const path of [F16, Q8]) {
      const file = await GgufFile.open(path);
      const out = join(dir.path, "copy.gguf");
      try {
        const size = await writeGguf(out, file.header.metadata, tensorsOf(file), { overwrite: true });
        assert.is(size, (await readFile(path)).length);
      } finally {
        await file.close();
      }
      assert.is(await sha256(out), await sha256(path), path);
    }
  } finally {
    await dir.cleanup();
  }
});

writer("v1 stories260K re-written as v3 parses back with the same KVs and tensor bytes", async () => {
  const dir = await tempDir("lmpack-gguf-");
  const v1 = await GgufFile.open(V1);
  const out = join(dir.path, "v3.gguf");
  try {
    await writeGguf(out, v1.header.metadata, tensorsOf(v1));
    const v3 = await GgufFile.open(out);
    try {
      assert.is(v3.header.version, 3);
      assert.equal([...v3.header.metadata], [...v1.header.metadata]);
      assert.equal(v3.tensors.map((t) => [t.name, t.ne, t.type, t.offset]), v1.tensors.map((t) => [t.name, t.ne, t.type, t.offset]));
      for (const t of v1.tensors) assert.ok(Buffer.from(await v3.read(t.name)).equals(await v1.read(t.name)), t.name);
    } finally {
      await v3.close();
    }
  } finally {
    await v1.close();
    await dir.cleanup();
  }
});

writer("every value type, nested arrays, alignment 64: written, read back equal", async () => {
  const dir = await tempDir("lmpack-gguf-");
  const { metadata, tensors } = kitchenSink();
  const out = join(dir.path, "sink.gguf");
  try {
    await writeGguf(out, metadata, tensors);
    const file = await GgufFile.open(out);
    try {
      assert.is(file.header.alignment, 64);
      assert.equal([...file.header.metadata], [...metadata]);
      assert.equal(file.tensors.map((t) => t.offset % 64), [0, 0, 0, 0, 0]);
      assert.equal(file.tensors.map((t) => t.shape), tensors.map((t) => t.shape));
      for (const t of tensors) {
        const written = new Uint8Array(Buffer.concat([...(t.data() as Iterable<Uint8Array>)]));
        assert.equal(new Uint8Array(await file.read(t.name)), written, t.name);
      }
    } finally {
      await file.close();
    }
  } finally {
    await dir.cleanup();
  }
});

writer("refuses an existing output unless overwrite; a short tensor leaves nothing behind", async () => {
  const dir = await tempDir("lmpack-gguf-");
  const out = join(dir.path, "x.gguf");
  const meta = new Map<string, GgufValue>([["k", { type: GgufType.UINT32, value: 1 }]]);
  try {
    await writeFile(out, "keep");
    const exists = await rejection(() => writeGguf(out, meta, []));
    assert.ok(exists instanceof IoError && exists.code === "OUTPUT_EXISTS", String(exists));
    assert.is(await readFile(out, "utf8"), "keep");
    const short: GgufTensorToWrite = { name: "t", type: 0, shape: [4], data: () => [new Uint8Array(12)] };
    const shortError = await rejection(() => writeGguf(out, meta, [short], { overwrite: true }));
    assert.ok(shortError instanceof UsageError && shortError.tensor === "t", String(shortError));
    assert.is(await readFile(out, "utf8"), "keep", "destination untouched");
    assert.equal(await readdir(dir.path), ["x.gguf"], "temporary removed");
    await writeGguf(out, meta, [], { overwrite: true });
    const written = await GgufFile.open(out);
    assert.is(written.header.metadata.size, 1);
    await written.close();
  } finally {
    await dir.cleanup();
  }
});

writer("refuses what a strict reader would refuse", () => {
  const none = new Map<string, GgufValue>();
  const cases: [string, () => unknown][] = [
    ["duplicate tensor", () => encodeGgufHeader(none, [{ name: "a", type: 0, shape: [1] }, { name: "a", type: 0, shape: [1] }])],
    ["name over 63 bytes", () => encodeGgufHeader(none, [{ name: "n".repeat(64), type: 0, shape: [1] }])],
    ["five dims", () => encodeGgufHeader(none, [{ name: "a", type: 0, shape: [1, 1, 1, 1, 1] }])],
    ["row not whole Q8_0 blocks", () => encodeGgufHeader(none, [{ name: "a", type: 8, shape: [2, 33] }])],
    ["unknown type", () => encodeGgufHeader(none, [{ name: "a", type: 99, shape: [1] }])],
    ["alignment not UINT32", () => encodeGgufHeader(new Map([["general.alignment", { type: GgufType.UINT64, value: 32n }]]), [])],
    ["alignment not a power of two", () => encodeGgufHeader(none, [], { alignment: 48 })],
    ["UINT8 out of range", () => encodeGgufHeader(new Map([["k", { type: GgufType.UINT8, value: 256 }]]), [])],
  ];
  for (const [name, run] of cases) assert.throws(run, (e: unknown) => e instanceof UsageError && e.code === "BAD_ARGUMENT", name);
});

const oracle = suite("gguf reader vs @huggingface/gguf");

for (const path of [F16, Q8, V1]) oracle(`agrees on ${path.split("/").at(-1)}`, () => assertAgreesWithHf(path));

oracle("agrees on a file our writer wrote (every value type, nested arrays)", async () => {
  const dir = await tempDir("lmpack-gguf-");
  try {
    const { metadata, tensors } = kitchenSink();
    const out = join(dir.path, "sink.gguf");
    await writeGguf(out, metadata, tensors);
    await assertAgreesWithHf(out);
  } finally {
    await dir.cleanup();
  }
});

reader.run();
writer.run();
oracle.run();
