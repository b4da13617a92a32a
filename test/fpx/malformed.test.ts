import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { exportLmpack } from "../../converters/lmpack/export.js";
import { decodeTrailer, encodeTrailer, TRAILER_BYTES } from "../../converters/lmpack/layout.js";
import { pb } from "../../converters/lmpack/proto.js";
import { openCheckpoint } from "../../converters/open.js";
import { FormatError, isLmpackError, type LmpackError } from "../../formats/errors.js";
import { SHARED_DIR, tempDir } from "../helpers/paths.js";
import { writeHfDir, type ArraySpec } from "../helpers/packed-checkpoint.js";
import { readAllArrays } from "../helpers/safetensors-arrays.js";

/**
 * Corrupted copies of ../shared/checkpoints/tinystories-656K-fp6 (and of a .lmpack made from it)
 * are refused with a typed error whose code is the documented one and whose message names the
 * file and, for tensor faults, the tensor: one row per way an fp6_tc layer or config can be wrong.
 */
const FP6 = join(SHARED_DIR, "checkpoints", "tinystories-656K-fp6");
const MODULE = "model.layers.1.mlp.down_proj"; // [128, 384]: packed [128, 288], scale [128]
const PACKED = `${MODULE}.weight_packed`;
const SCALE = `${MODULE}.weight_scale`;
const test = suite("fpx: malformed checkpoints");

type Arrays = Map<string, ArraySpec>;
let work: Awaited<ReturnType<typeof tempDir>>;
let golden: Arrays;
let goldenConfig: Record<string, unknown>;
test.before(async () => {
  work = await tempDir("lmpack-fpx-bad-");
  const { arrays } = await readAllArrays(join(FP6, "model.safetensors"));
  golden = new Map([...arrays].map(([name, a]) => [name, { name, dtype: a.dtype, shape: a.shape, bytes: a.bytes }]));
  goldenConfig = JSON.parse(await readFile(join(FP6, "config.json"), "utf8")) as Record<string, unknown>;
});
test.after(() => work.cleanup());

const edit = (arrays: Arrays, name: string, change: Partial<ArraySpec>) => arrays.set(name, { ...arrays.get(name)!, ...change });
/** Each row of a row-major [rows, cols] byte matrix cut to its first `keep` bytes. */
const cutColumns = (bytes: Uint8Array, rows: number, cols: number, keep: number) => {
  const out = new Uint8Array(rows * keep);
  for (let r = 0; r < rows; r++) out.set(bytes.subarray(r * cols, r * cols + keep), r * keep);
  return out;
};

interface Case {
  name: string;
  mutate?: (arrays: Arrays) => void;
  quant?: (q: Record<string, unknown>) => void;
  code: string;
  /** The tensor the error names; undefined for config faults (which name config.json). */
  tensor?: string;
}

const cases: Case[] = [
  { name: "weight_packed stored as I8", mutate: (a) => edit(a, PACKED, { dtype: "I8" }), code: "PACKED_DTYPE_MISMATCH", tensor: PACKED },
  { name: "weight_scale stored as F32", mutate: (a) => edit(a, SCALE, { dtype: "F32", bytes: new Uint8Array(128 * 4) }), code: "PACKED_DTYPE_MISMATCH", tensor: SCALE },
  { name: "weight_scale one entry short", mutate: (a) => edit(a, SCALE, { shape: [127], bytes: a.get(SCALE)!.bytes.subarray(0, 127 * 2) }), code: "PACKED_SHAPE_MISMATCH", tensor: SCALE },
  { name: "weight_scale of rank 2", mutate: (a) => edit(a, SCALE, { shape: [128, 1] }), code: "PACKED_SHAPE_MISMATCH", tensor: SCALE },
  // 287 · 8 / 6 is not an integer number of input columns.
  { name: "weight_packed columns not a multiple of 6/8", mutate: (a) => edit(a, PACKED, { shape: [128, 287], bytes: cutColumns(a.get(PACKED)!.bytes, 128, 288, 287) }), code: "PACKED_SHAPE_MISMATCH", tensor: PACKED },
  // 264 · 8 / 6 = 352 input columns: whole, but not a multiple of 64.
  { name: "weight_packed of 352 input columns (not a 64-multiple)", mutate: (a) => edit(a, PACKED, { shape: [128, 264], bytes: cutColumns(a.get(PACKED)!.bytes, 128, 288, 264) }), code: "PACKED_SHAPE_MISMATCH", tensor: PACKED },
  { name: "weight_packed of 96 rows (not a 64-multiple)", mutate: (a) => { edit(a, PACKED, { shape: [96, 288], bytes: a.get(PACKED)!.bytes.subarray(0, 96 * 288) }); edit(a, SCALE, { shape: [96], bytes: a.get(SCALE)!.bytes.subarray(0, 96 * 2) }); }, code: "PACKED_SHAPE_MISMATCH", tensor: PACKED },
  { name: "weight_packed of rank 1", mutate: (a) => edit(a, PACKED, { shape: [128 * 288] }), code: "PACKED_SHAPE_MISMATCH", tensor: PACKED },
  { name: "weight_scale missing", mutate: (a) => a.delete(SCALE), code: "TENSOR_MISSING", tensor: SCALE },
  { name: "layout fp6_llm_4+1 with ebits 3, mbits 2", quant: (q) => (q["layout"] = "fp6_llm_4+1"), code: "QUANT_CONFIG_INVALID" },
  { name: "ebits 9", quant: (q) => (q["ebits"] = 9), code: "QUANT_CONFIG_INVALID" },
  { name: "ebits as a string", quant: (q) => (q["ebits"] = "3"), code: "QUANT_CONFIG_INVALID" },
  { name: "modules_to_not_convert not a list of strings", quant: (q) => (q["modules_to_not_convert"] = "lm_head"), code: "QUANT_CONFIG_INVALID" },
  { name: "modules_to_not_convert lists a module stored packed", quant: (q) => (q["modules_to_not_convert"] = ["lm_head", MODULE]), code: "QUANT_CONFIG_INVALID", tensor: PACKED },
];

/** Opens `source` and loads every packed layer (faults found only on load surface too); returns the error. */
async function openAndLoad(source: string): Promise<unknown> {
  try {
    const checkpoint = await openCheckpoint(source);
    try {
      for (const t of checkpoint.tensors) await t.packed?.load();
    } finally {
      await checkpoint.close();
    }
  } catch (error) {
    return error;
  }
  return undefined;
}

for (const c of cases) {
  test(`${c.name} → ${c.code}`, async () => {
    const arrays: Arrays = new Map([...golden].map(([name, a]) => [name, { ...a }]));
    c.mutate?.(arrays);
    const quant = { ...(goldenConfig["quantization_config"] as Record<string, unknown>) };
    c.quant?.(quant);
    const dir = await writeHfDir(join(work.path, c.name.replace(/\W+/g, "-")), { ...goldenConfig, quantization_config: quant }, [...arrays.values()]);
    const error = await openAndLoad(dir);
    assert.ok(isLmpackError(error), `expected a typed error, got ${String(error)}`);
    const e = error as LmpackError;
    assert.instance(e, FormatError);
    assert.is(e.code, c.code, e.message);
    const file = join(dir, c.tensor === undefined ? "config.json" : "model.safetensors");
    assert.is(e.file, file, e.message);
    assert.ok(e.message.includes(file), `message names the file: ${e.message}`);
    if (c.tensor !== undefined) {
      assert.is(e.tensor, c.tensor, e.message);
      assert.ok(e.message.includes(`"${c.tensor}"`), `message names the tensor: ${e.message}`);
    }
  });
}

test("the unmodified copy opens and loads (the cases above fail for their fault alone)", async () => {
  const dir = await writeHfDir(join(work.path, "intact"), goldenConfig, [...golden.values()]);
  assert.is(await openAndLoad(dir), undefined);
});

function decodeHeader(bytes: Uint8Array) {
  const trailer = decodeTrailer(bytes.subarray(bytes.length - TRAILER_BYTES), bytes.length, "x");
  return { trailer, header: pb.Header.decode(bytes.subarray(trailer.headerOffset, trailer.headerOffset + trailer.headerLength)) };
}

/** Re-encodes a container with its header edited (valid trailer and header CRC, so only the edit is wrong). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- tests poke invalid values into the decoded message
function withHeader(bytes: Uint8Array, edit: (header: any) => void): Uint8Array {
  const { trailer, header } = decodeHeader(bytes);
  edit(header);
  const encoded = pb.Header.encode(header).finish();
  const out = new Uint8Array(trailer.headerOffset + encoded.length + TRAILER_BYTES);
  out.set(bytes.subarray(0, trailer.headerOffset));
  out.set(encoded, trailer.headerOffset);
  out.set(encodeTrailer(trailer.headerOffset, encoded), trailer.headerOffset + encoded.length);
  return out;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- decoded protobuf messages
const fpxTensor = (header: any) => header.tensors.find((t: any) => t.name === `${MODULE}.weight`);
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- decoded protobuf messages
const blobOf = (tensor: any, role: string) => tensor.blobs.find((b: any) => b.role === role);

const containerCases: [string, (header: unknown) => void, string][] = [
  // Shape and length agree (so the generic blob check passes); only the fpx size rule is broken.
  ["an fpx \"packed\" blob 64 bytes short", (h) => { const b = blobOf(fpxTensor(h), "packed"); b.shape = [128 * 288 - 64]; b.byteLength = 128 * 288 - 64; }, "CONTAINER_BLOB_INVALID"],
  ["an fpx \"scales\" blob of 127 entries", (h) => { const b = blobOf(fpxTensor(h), "scales"); b.shape = [127]; b.byteLength = 254; }, "CONTAINER_BLOB_INVALID"],
  ["an fpx tensor without its \"scales\" blob", (h) => { const t = fpxTensor(h); t.blobs = t.blobs.filter((b: { role: string }) => b.role !== "scales"); }, "CONTAINER_BLOB_INVALID"],
  ["an fpx message with ebits 9", (h) => { fpxTensor(h).fpx.ebits = 9; }, "CONTAINER_HEADER_INVALID"],
  ["an fpx message whose in_features disagree with the shape", (h) => { fpxTensor(h).fpx.inFeatures = 320; }, "CONTAINER_HEADER_INVALID"],
];

let container: Uint8Array | undefined;
async function fp6Container(): Promise<Uint8Array> {
  if (container !== undefined) return container;
  const path = join(work.path, "fp6.lmpack");
  const checkpoint = await openCheckpoint(FP6);
  await exportLmpack(checkpoint, path);
  await checkpoint.close();
  return (container = new Uint8Array(await readFile(path)));
}

test("the .lmpack made from the checkpoint holds the layer as fpx and opens cleanly", async () => {
  const bytes = await fp6Container();
  const { header } = decodeHeader(bytes);
  assert.ok(fpxTensor(header)?.fpx != null, "the layer is stored as an fpx tensor");
  assert.is(blobOf(fpxTensor(header), "packed").shape.map(Number).join(), String(128 * 288));
  assert.is(await openAndLoad(join(work.path, "fp6.lmpack")), undefined);
});

for (const [name, edit, code] of containerCases) {
  test(`.lmpack with ${name} → ${code}`, async () => {
    const path = join(work.path, `${name.replace(/\W+/g, "-")}.lmpack`);
    await writeFile(path, withHeader(await fp6Container(), edit));
    const error = await openAndLoad(path);
    assert.instance(error, FormatError, `expected a FormatError, got ${String(error)}`);
    const e = error as FormatError;
    assert.is(e.code, code, e.message);
    assert.is(e.file, path, e.message);
    assert.is(e.tensor, `${MODULE}.weight`, e.message);
    assert.ok(e.message.includes(path) && e.message.includes(`"${MODULE}.weight"`), `message names the file and tensor: ${e.message}`);
  });
}

test.run();
