import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { crc32 } from "node:zlib";
import { FormatError, VerificationError } from "../../formats/errors.js";
import { BufferSource } from "../../converters/io/random-access.js";
import { exportLmpack } from "../../converters/lmpack/export.js";
import { openLmpackCheckpoint } from "../../converters/lmpack/import.js";
import { decodeTrailer, TRAILER_BYTES, encodeTrailer } from "../../converters/lmpack/layout.js";
import { LmpackFile } from "../../converters/lmpack/reader.js";
import { pb } from "../../converters/lmpack/proto.js";
import { openCheckpoint } from "../../converters/open.js";
import { FIXTURE_MODEL, tempDir } from "../helpers/paths.js";

const test = suite("lmpack container");

let work: Awaited<ReturnType<typeof tempDir>>;
let packed: Uint8Array;
let packedSha: Uint8Array;

test.before(async () => {
  work = await tempDir();
  const source = await openCheckpoint(FIXTURE_MODEL);
  await exportLmpack(source, join(work.path, "crc.lmpack"));
  await exportLmpack(source, join(work.path, "sha.lmpack"), { checksum: "sha256" });
  await source.close();
  packed = new Uint8Array(await readFile(join(work.path, "crc.lmpack")));
  packedSha = new Uint8Array(await readFile(join(work.path, "sha.lmpack")));
});
test.after(() => work.cleanup());

async function openBytes(bytes: Uint8Array): Promise<LmpackFile> {
  return LmpackFile.fromSource(new BufferSource(bytes, "case.lmpack"));
}

/** Decodes the header of `bytes`, lets `edit` change it, and re-encodes with a valid trailer and CRC. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- tests poke arbitrary (even invalid) values into the decoded message
function withHeader(bytes: Uint8Array, edit: (header: any) => void): Uint8Array {
  const trailer = decodeTrailer(bytes.subarray(bytes.length - TRAILER_BYTES), bytes.length, "x");
  const header = pb.Header.decode(bytes.subarray(trailer.headerOffset, trailer.headerOffset + trailer.headerLength));
  edit(header);
  const encoded = pb.Header.encode(header).finish();
  const out = new Uint8Array(trailer.headerOffset + encoded.length + TRAILER_BYTES);
  out.set(bytes.subarray(0, trailer.headerOffset));
  out.set(encoded, trailer.headerOffset);
  out.set(encodeTrailer(trailer.headerOffset, encoded), trailer.headerOffset + encoded.length);
  return out;
}

async function expectCode(promise: Promise<unknown>, code: string): Promise<FormatError | VerificationError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof FormatError || error instanceof VerificationError, `unexpected ${String(error)}`);
    assert.is((error as FormatError).code, code);
    return error as FormatError;
  }
  assert.unreachable(`expected ${code}`);
  throw new Error("unreachable");
}

test("every tensor reads back byte-identical to the source, with either checksum", async () => {
  const source = await openCheckpoint(FIXTURE_MODEL);
  for (const path of ["crc.lmpack", "sha.lmpack"]) {
    const container = await openLmpackCheckpoint(join(work.path, path));
    assert.equal(container.tensors.map((t) => t.name), source.tensors.map((t) => t.name));
    for (const [i, t] of container.tensors.entries()) {
      assert.equal(t.shape, source.tensors[i]!.shape);
      assert.is(t.dtype, source.tensors[i]!.dtype);
      assert.ok(Buffer.from(await t.read()).equals(Buffer.from(await source.tensors[i]!.read())), t.name);
    }
    assert.equal([...container.sideFiles.keys()].sort(), [...source.sideFiles.keys()].sort());
    assert.is(container.rawConfigText, source.rawConfigText);
    assert.equal(container.config, source.config);
    await container.close();
  }
  await source.close();
});

test("blobs are 64-byte aligned and the header records the checksum algorithm", async () => {
  for (const [bytes, algorithm] of [[packed, "crc32"], [packedSha, "sha256"]] as const) {
    const file = await openBytes(bytes);
    for (const t of file.tensors) {
      assert.is(t.blobs[0]!.byteOffset % 64, 0);
      assert.is(t.blobs[0]!.checksumAlgorithm, algorithm);
    }
    assert.equal(await file.verifyAll(), []);
  }
});

test("a flipped byte inside a blob is a checksum error naming the tensor", async () => {
  const file = await openBytes(packed);
  const victim = file.tensors[5]!;
  const blob = victim.blobs[0]!;
  for (const bytes of [packed, packedSha]) {
    const bad = bytes.slice();
    const opened = await openBytes(bad);
    const b = opened.tensors[5]!.blobs[0]!;
    bad[b.byteOffset + Math.floor(b.byteLength / 2)]! ^= 0x01;
    const corrupt = await openBytes(bad);
    const failures = await corrupt.verifyAll();
    assert.is(failures.length, 1);
    assert.is(failures[0]!.code, "CHECKSUM_MISMATCH");
    assert.is(failures[0]!.tensor, victim.name);
    const error = await expectCode(corrupt.readBlob(corrupt.tensors[5]!.blobs[0]!), "CHECKSUM_MISMATCH");
    assert.is(error.byteOffset, blob.byteOffset);
  }
});

test("a flipped header byte is caught by the header CRC", async () => {
  const trailer = decodeTrailer(packed.subarray(packed.length - TRAILER_BYTES), packed.length, "x");
  const bad = packed.slice();
  bad[trailer.headerOffset + 10]! ^= 0x20;
  await expectCode(openBytes(bad), "CONTAINER_HEADER_INVALID");
});

const structural: [string, () => Uint8Array, string][] = [
  ["bad magic", () => Object.assign(packed.slice(), { 0: 0x50 }), "CONTAINER_BAD_MAGIC"],
  ["unknown layout version", () => { const b = packed.slice(); b[8] = 9; return b; }, "CONTAINER_BAD_VERSION"],
  ["truncated (trailer gone)", () => packed.slice(0, packed.length - 100), "CONTAINER_TRUNCATED"],
  ["tiny file", () => packed.slice(0, 20), "CONTAINER_TRUNCATED"],
  ["header offset not where the trailer says", () => {
    const b = packed.slice();
    new DataView(b.buffer).setBigUint64(b.length - TRAILER_BYTES, 64n, true);
    return b;
  }, "CONTAINER_HEADER_INVALID"],
  ["header length over the cap", () => {
    const b = packed.slice();
    new DataView(b.buffer).setBigUint64(b.length - TRAILER_BYTES + 8, 1n << 40n, true);
    return b;
  }, "CONTAINER_HEADER_INVALID"],
  ["header bytes that are not protobuf", () => {
    const trailer = decodeTrailer(packed.subarray(packed.length - TRAILER_BYTES), packed.length, "x");
    const b = packed.slice();
    const junk = new Uint8Array(trailer.headerLength).fill(0xff);
    b.set(junk, trailer.headerOffset);
    new DataView(b.buffer).setUint32(b.length - TRAILER_BYTES + 16, crc32(junk), true);
    return b;
  }, "CONTAINER_HEADER_INVALID"],
  ["unknown header schema version", () => withHeader(packed, (h) => { h.schemaVersion = 99; }), "CONTAINER_BAD_VERSION"],
  ["misaligned blob", () => withHeader(packed, (h) => { h.tensors[1]!.blobs[0]!.byteOffset = Number(h.tensors[1]!.blobs[0]!.byteOffset) + 2; }), "CONTAINER_BLOB_INVALID"],
  ["blob past the blob area", () => withHeader(packed, (h) => { h.tensors[0]!.blobs[0]!.byteLength = 1e12; h.tensors[0]!.blobs[0]!.shape = [1e12 / 2]; h.tensors[0]!.shape = [1e12 / 2]; }), "CONTAINER_BLOB_INVALID"],
  ["blob shape disagrees with its length", () => withHeader(packed, (h) => { h.tensors[0]!.blobs[0]!.shape = [3]; h.tensors[0]!.shape = [3]; }), "SHAPE_SIZE_MISMATCH"],
  ["two blobs sharing bytes", () => withHeader(packed, (h) => { h.tensors[1]!.blobs[0] = { ...h.tensors[0]!.blobs[0]! } as never; h.tensors[1]!.shape = h.tensors[0]!.shape; h.tensors[1]!.dense!.dtype = h.tensors[0]!.dense!.dtype; }), "OFFSETS_OVERLAP"],
  ["duplicate tensor name", () => withHeader(packed, (h) => { h.tensors[1]!.name = h.tensors[0]!.name; }), "TENSOR_DUPLICATE"],
  ["unknown dtype", () => withHeader(packed, (h) => { h.tensors[0]!.dense!.dtype = 77; }), "UNKNOWN_DTYPE"],
  ["tensor without a representation", () => withHeader(packed, (h) => { h.tensors[0]!.dense = null; }), "CONTAINER_HEADER_INVALID"],
  ["wrong checksum length", () => withHeader(packed, (h) => { h.tensors[0]!.blobs[0]!.checksum = new Uint8Array(3); }), "CONTAINER_BLOB_INVALID"],
];

for (const [name, build, code] of structural) {
  test(`rejects ${name} (${code})`, async () => {
    const error = await expectCode(openBytes(build()), code);
    assert.is(error.file, "case.lmpack");
  });
}

test("per-tensor notes: the source dtype is recorded when a conversion changes it", async () => {
  const source = await openCheckpoint(FIXTURE_MODEL);
  await exportLmpack(source, join(work.path, "f32.lmpack"), { dtype: "F32" });
  await source.close();
  const f32 = await openLmpackCheckpoint(join(work.path, "f32.lmpack"));
  assert.equal(f32.tensors[0]!.notes, { sourceDtype: "BF16" });
  // A second conversion keeps the original provenance rather than the intermediate dtype.
  await exportLmpack(f32, join(work.path, "f16.lmpack"), { dtype: "F16" });
  const f16 = await openLmpackCheckpoint(join(work.path, "f16.lmpack"));
  assert.equal(f16.tensors[0]!.notes, { sourceDtype: "BF16" });
  const plain = await openLmpackCheckpoint(join(work.path, "crc.lmpack"));
  assert.is(plain.tensors[0]!.notes, undefined);
  await Promise.all([f32.close(), f16.close(), plain.close()]);
});

test("tensor notes that are not msgpack are rejected as a header error", async () => {
  const bad = withHeader(packed, (h) => {
    h.tensors[0]!.notesMsgpack = new Uint8Array([0xc1, 0xc1, 0xc1]);
  });
  await expectCode(openLmpackCheckpoint(await writeTemp(bad)), "CONTAINER_HEADER_INVALID");
});

async function writeTemp(bytes: Uint8Array): Promise<string> {
  const path = join(work.path, `case-${Math.random().toString(36).slice(2)}.lmpack`);
  await writeFile(path, bytes);
  return path;
}

test("a failed export leaves no file and no temporary behind", async () => {
  const source = await openCheckpoint(FIXTURE_MODEL);
  const broken = { ...source, tensors: [...source.tensors.slice(0, 3), { ...source.tensors[3]!, readChunks: async function* () { yield new Uint8Array(2); throw new Error("disk on fire"); } }] };
  const out = join(work.path, "failed.lmpack");
  await writeFile(join(work.path, "keep.txt"), "x");
  try {
    await exportLmpack(broken, out);
    assert.unreachable("export should fail");
  } catch (error) {
    assert.is((error as Error).message, "disk on fire");
  }
  const { readdir } = await import("node:fs/promises");
  assert.equal((await readdir(work.path)).filter((n) => n.includes("failed") || n.includes("tmp")), []);
  await source.close();
});

test.run();
