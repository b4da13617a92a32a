import { suite } from "uvu";
import * as assert from "uvu/assert";
import { readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { DTYPES, dtypeBytes, type DType } from "../../formats/dtype.js";
import { UsageError } from "../../formats/errors.js";
import { SafetensorsFile } from "../../converters/safetensors/reader.js";
import { buildHeader, planByteLength, SafetensorsWriter, type TensorPlan } from "../../converters/safetensors/writer.js";
import { FIXTURE_MODEL, tempDir } from "../helpers/paths.js";
import { mulberry32, type Rng } from "../helpers/prng.js";

/**
 * SafetensorsWriter ↔ SafetensorsFile: random plans written in random chunks read back byte
 * for byte; the writer refuses misuse and never leaves a partial file; and rewriting the
 * committed fixture (written by Python safetensors) reproduces it byte for byte.
 */

const SEED = Number(process.env["LMPACK_ROUNDTRIP_SEED"] ?? 0x0dd5eed) >>> 0;
const ALL_DTYPES = Object.keys(DTYPES) as DType[];


const int = (rng: Rng, n: number): number => Math.floor(rng() * n);

/** Names a reader or a JS object might trip on, next to ordinary ones. */
const ODD_NAMES = ["__proto__", "constructor", "hasOwnProperty", "model.layers.0.mlp.up_proj.weight", "ünïcödé ☕", 'quote"and\\slash', ""];

/** Random plan: every dtype shows up across cases; shapes include scalars, 1-D, and zero-sized. */
function randomPlan(rng: Rng, caseIndex: number): TensorPlan[] {
  const count = 1 + int(rng, 8);
  const plan: TensorPlan[] = [];
  const names = new Set<string>();
  for (let i = 0; i < count; i++) {
    let name = rng() < 0.2 ? ODD_NAMES[int(rng, ODD_NAMES.length)]! : `t${caseIndex}.${i}`;
    if (names.has(name)) name = `t${caseIndex}.${i}`;
    names.add(name);
    const dtype = i === 0 ? ALL_DTYPES[caseIndex % ALL_DTYPES.length]! : ALL_DTYPES[int(rng, ALL_DTYPES.length)]!;
    const rank = int(rng, 5);
    const shape = Array.from({ length: rank }, () => (rng() < 0.1 ? 0 : 1 + int(rng, 7)));
    plan.push({ name, dtype, shape });
  }
  return plan;
}

function randomBytes(rng: Rng, n: number): Uint8Array {
  return Uint8Array.from({ length: n }, () => int(rng, 256));
}

/** Splits `bytes` at random points (empty chunks included) to exercise chunked writes. */
function randomChunks(rng: Rng, bytes: Uint8Array): Uint8Array[] {
  const chunks: Uint8Array[] = [];
  let at = 0;
  while (at < bytes.length) {
    const n = rng() < 0.1 ? 0 : 1 + int(rng, Math.max(1, bytes.length - at));
    chunks.push(bytes.subarray(at, at + n));
    at += n;
  }
  return chunks;
}

async function expectUsageError(action: () => Promise<unknown>, what: string): Promise<void> {
  try {
    await action();
  } catch (error) {
    assert.instance(error, UsageError, what);
    assert.is((error as UsageError).code, "BAD_ARGUMENT", what);
    return;
  }
  assert.unreachable(`${what}: no UsageError`);
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

const roundtrip = suite("safetensors: writer ↔ reader");

roundtrip("40 random plans (every dtype, zero-sized, scalar and 1-D tensors) round-trip byte for byte", async () => {
  const dir = await tempDir();
  try {
    const rng = mulberry32(SEED);
    let zeroSized = 0;
    let oneD = 0;
    for (let c = 0; c < 40; c++) {
      const plan = randomPlan(rng, c);
      const data = plan.map((t) => randomBytes(rng, planByteLength(t)));
      const metadata = c % 3 === 0 ? undefined : { format: "pt", case: String(c), note: c % 2 === 0 ? "" : "ünï ☕ \"q\"" };
      const path = join(dir.path, `case-${c}.safetensors`);
      const where = `seed ${SEED} case ${c}`;

      const writer = await SafetensorsWriter.create(path, plan, metadata);
      for (const [i, t] of plan.entries()) {
        for (const chunk of randomChunks(rng, data[i]!)) await writer.write(t.name, chunk);
      }
      await writer.finish();

      const bytes = await readFile(path);
      const headerLength = Number(bytes.readBigUInt64LE(0));
      assert.is((8 + headerLength) % 8, 0, `data section 8-byte aligned: ${where}`);
      const file = await SafetensorsFile.open(path);
      try {
        assert.is(file.header.dataStart, 8 + headerLength);
        assert.equal(
          file.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape })),
          plan.map((t) => ({ name: t.name, dtype: t.dtype, shape: [...t.shape] })),
          `tensors in plan order: ${where}`,
        );
        assert.equal(file.metadata === undefined ? undefined : { ...file.metadata }, metadata, `metadata: ${where}`);
        for (const [i, t] of plan.entries()) {
          assert.ok(Buffer.compare(await file.read(t.name), data[i]!) === 0, `bytes of "${t.name}": ${where}`);
          if (planByteLength(t) === 0) zeroSized++;
          if (t.shape.length === 1) oneD++;
        }
        assert.is(bytes.length, file.header.dataStart + data.reduce((s, d) => s + d.length, 0), `file size: ${where}`);
      } finally {
        await file.close();
      }
    }
    assert.ok(zeroSized > 0 && oneD > 0, `covered zero-sized (${zeroSized}) and 1-D (${oneD}) tensors`);
    assert.equal((await readdir(dir.path)).filter((n) => n.startsWith(".")), [], "no temporary files left");
  } finally {
    await dir.cleanup();
  }
});

roundtrip("zero-sized tensors need no write, first, middle or last in the plan", async () => {
  const dir = await tempDir();
  try {
    const plan: TensorPlan[] = [
      { name: "z0", dtype: "F32", shape: [0] },
      { name: "a", dtype: "F16", shape: [3] },
      { name: "z1", dtype: "BF16", shape: [2, 0] },
      { name: "b", dtype: "U8", shape: [2] },
      { name: "z2", dtype: "I64", shape: [0, 5] },
    ];
    const path = join(dir.path, "zeros.safetensors");
    const writer = await SafetensorsWriter.create(path, plan);
    await writer.write("a", Uint8Array.of(1, 2, 3, 4, 5, 6));
    await writer.write("b", Uint8Array.of(7, 8));
    await writer.finish();
    const file = await SafetensorsFile.open(path);
    assert.equal(file.tensors.map((t) => t.name), ["z0", "a", "z1", "b", "z2"]);
    assert.equal([...(await file.read("b"))], [7, 8]);
    await file.close();
  } finally {
    await dir.cleanup();
  }
});

roundtrip(`tensors named "__proto__" and "constructor" are written as ordinary keys`, async () => {
  const dir = await tempDir();
  try {
    const plan: TensorPlan[] = [
      { name: "__proto__", dtype: "U8", shape: [4] },
      { name: "constructor", dtype: "U8", shape: [2] },
    ];
    const path = join(dir.path, "proto.safetensors");
    const writer = await SafetensorsWriter.create(path, plan);
    await writer.write("__proto__", Uint8Array.of(1, 2, 3, 4));
    await writer.write("constructor", Uint8Array.of(5, 6));
    await writer.finish();
    const file = await SafetensorsFile.open(path);
    assert.equal(file.tensors.map((t) => t.name), ["__proto__", "constructor"]);
    assert.equal([...(await file.read("__proto__"))], [1, 2, 3, 4]);
    await file.close();
  } finally {
    await dir.cleanup();
  }
});

roundtrip("the header is space-padded so the data starts on an 8-byte boundary, for every JSON length", () => {
  for (let nameLength = 1; nameLength <= 16; nameLength++) {
    const header = buildHeader([{ name: "n".repeat(nameLength), dtype: "F64", shape: [1] }]);
    assert.is(header.length % 8, 0, `name of ${nameLength} chars`);
    const n = Number(new DataView(header.buffer).getBigUint64(0, true));
    assert.is(n, header.length - 8);
    const json = new TextDecoder().decode(header.subarray(8));
    assert.ok(/^\{.*\} {0,7}$/.test(json), `JSON then at most 7 spaces: ${JSON.stringify(json)}`);
  }
});

roundtrip("writing out of plan order, or more bytes than the shape holds, throws UsageError", async () => {
  const dir = await tempDir();
  try {
    const plan: TensorPlan[] = [
      { name: "a", dtype: "F32", shape: [2] },
      { name: "b", dtype: "U8", shape: [1] },
    ];
    const path = join(dir.path, "misuse.safetensors");
    const writer = await SafetensorsWriter.create(path, plan);
    await expectUsageError(() => writer.write("b", Uint8Array.of(1)), "b before a");
    await expectUsageError(() => writer.write("nope", Uint8Array.of(1)), "unknown tensor");
    await expectUsageError(() => writer.write("a", new Uint8Array(9)), "9 bytes into an 8-byte tensor");
    await writer.write("a", new Uint8Array(5));
    await expectUsageError(() => writer.write("a", new Uint8Array(4)), "5 + 4 bytes into an 8-byte tensor");
    await writer.write("a", new Uint8Array(3));
    await expectUsageError(() => writer.write("a", new Uint8Array(1)), "a again after it is complete");
    await writer.write("b", Uint8Array.of(9));
    await expectUsageError(() => writer.write("b", Uint8Array.of(9)), "past the end of the plan");
    await writer.abort();
    assert.not.ok(await exists(path), "aborted writer leaves no file");
    assert.equal(await readdir(dir.path), [], "nor a temporary file");
  } finally {
    await dir.cleanup();
  }
});

roundtrip("duplicate or reserved tensor names are refused when planning", async () => {
  await expectUsageError(async () => buildHeader([{ name: "a", dtype: "U8", shape: [1] }, { name: "a", dtype: "U8", shape: [1] }]), "duplicate");
  await expectUsageError(async () => buildHeader([{ name: "__metadata__", dtype: "U8", shape: [1] }]), "reserved");
});

roundtrip("finish() before every byte is written throws and leaves no file (and no temporary)", async () => {
  const dir = await tempDir();
  try {
    const plan: TensorPlan[] = [
      { name: "a", dtype: "BF16", shape: [4] },
      { name: "b", dtype: "F32", shape: [1] },
    ];
    for (const written of [0, 3, 8, 11]) {
      const path = join(dir.path, `partial-${written}.safetensors`);
      const writer = await SafetensorsWriter.create(path, plan);
      if (written > 0) await writer.write("a", new Uint8Array(Math.min(written, 8)));
      if (written > 8) await writer.write("b", new Uint8Array(written - 8));
      await expectUsageError(() => writer.finish(), `finish after ${written} of 12 bytes`);
      assert.not.ok(await exists(path), `no file after ${written} of 12 bytes`);
      assert.equal(await readdir(dir.path), [], `no temporary after ${written} of 12 bytes`);
    }
  } finally {
    await dir.cleanup();
  }
});

roundtrip.run();

const reference = suite("safetensors: byte-identical to Python safetensors");

reference("rewriting the committed fixture in the same order with the same metadata reproduces it exactly", async () => {
  const fixture = join(FIXTURE_MODEL, "model.safetensors");
  const original = await readFile(fixture);
  const dir = await tempDir();
  const source = await SafetensorsFile.open(fixture);
  try {
    assert.ok(source.tensors.length > 1 && source.metadata !== undefined, "the fixture has tensors and metadata");
    const plan: TensorPlan[] = source.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape }));
    const header = buildHeader(plan, source.metadata);
    assert.is(header.length, source.header.dataStart, "same header length");
    assert.ok(Buffer.compare(header, original.subarray(0, header.length)) === 0, "buildHeader output = Python's header bytes");

    const path = join(dir.path, "model.safetensors");
    const writer = await SafetensorsWriter.create(path, plan, source.metadata);
    for (const t of source.tensors) {
      for await (const chunk of source.readChunks(t.name, 100_000 - (100_000 % dtypeBytes(t.dtype)))) await writer.write(t.name, chunk);
    }
    await writer.finish();
    const rewritten = await readFile(path);
    assert.is(rewritten.length, original.length);
    assert.ok(Buffer.compare(rewritten, original) === 0, "byte-identical file");
  } finally {
    await source.close();
    await dir.cleanup();
  }
});

reference.run();
