import { copyFile, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { crc32 } from "node:zlib";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { openCheckpoint } from "../../converters/open.js";
import { exportLmpack } from "../../converters/lmpack/export.js";
import { LmpackFile } from "../../converters/lmpack/reader.js";
import { decodeTrailer, TRAILER_BYTES } from "../../converters/lmpack/layout.js";
import { validatePath } from "../../converters/validate/index.js";
import { FIXTURE_MODEL, SHARED_DIR, tempDir } from "../helpers/paths.js";
import { cutBytes, expectFound, lmpackCli, patchBytes, readBytes, rewriteLmpackHeader, u16le, u32le, type Expected } from "./plant.js";

/**
 * The corrupted suite, part 3: lmpack containers made here (the fixture model through the CLI,
 * the shared SpQR and FP6 checkpoints through the library), each copy with one planted defect
 * in its preamble, trailer, header (rewritten with a matching CRC unless the CRC is the defect),
 * blobs or packed values; then the collect-all case (two corrupt blobs, two findings).
 * GGUF and ONNX cases are in formats.test.ts.
 */
const test = suite("validate: lmpack containers");

let work: Awaited<ReturnType<typeof tempDir>>;
const made = { fixture: "", spqr: "", fp6: "" };
test.before(async () => {
  work = await tempDir("lmpack-validate-lmpack-");
  made.fixture = join(work.path, "lmpack-fixture-2m.lmpack");
  const r = lmpackCli("convert", FIXTURE_MODEL, "--to", "lmpack", "--out", made.fixture);
  assert.is(r.code, 0, r.stderr);
  for (const kind of ["spqr", "fp6"] as const) {
    const checkpoint = await openCheckpoint(join(SHARED_DIR, "checkpoints", `tinystories-656K-${kind}`));
    made[kind] = join(work.path, `tinystories-656K-${kind}.lmpack`);
    await exportLmpack(checkpoint, made[kind]);
    await checkpoint.close();
  }
});
test.after(() => work.cleanup());

const Q = "model.layers.0.self_attn.q_proj.weight";
const UP1 = "model.layers.1.mlp.up_proj.weight";

/** A blob's place in the container, from lmpack's reader. */
async function blobOf(path: string, tensor: string, role: string): Promise<{ byteOffset: number; byteLength: number }> {
  const file = await LmpackFile.open(path);
  try {
    return file.tensors.find((t) => t.name === tensor)!.blobs.find((b) => b.role === role)!;
  } finally {
    await file.close();
  }
}

/** Patches a blob's bytes and stores the CRC-32 of the result, so that only the planted value is wrong. */
async function patchBlob(path: string, tensor: string, role: string, at: number, bytes: number[]): Promise<number> {
  const blob = await blobOf(path, tensor, role);
  await patchBytes(path, blob.byteOffset + at, bytes);
  const digest = Buffer.alloc(4);
  digest.writeUInt32BE(crc32(await readBytes(path, blob.byteOffset, blob.byteLength)));
  await rewriteLmpackHeader(path, (h) => void (h.tensors.find((t) => t.name === tensor)!.blobs!.find((b) => b.role === role)!.checksum = digest));
  return blob.byteOffset + at;
}

interface Case {
  name: string;
  from: keyof typeof made;
  deep?: boolean;
  plant(path: string): Promise<Expected>;
}

const cases: Case[] = [
  {
    name: "a corrupt blob (checksum)",
    from: "fixture",
    plant: async (f) => {
      const blob = await blobOf(f, UP1, "data");
      const [b] = await readBytes(f, blob.byteOffset + 100, 1);
      await patchBytes(f, blob.byteOffset + 100, [b! ^ 0x01]);
      return { code: "CHECKSUM_MISMATCH", file: f, tensor: UP1, byteOffset: blob.byteOffset, count: 1 };
    },
  },
  {
    name: "a corrupt header (CRC)",
    from: "fixture",
    plant: async (f) => {
      const bytes = await readBytes(f, 0, Number.MAX_SAFE_INTEGER);
      const trailer = decodeTrailer(bytes.subarray(bytes.length - TRAILER_BYTES), bytes.length, f);
      // An indent of the embedded config.json: the header still decodes, only its CRC is wrong.
      const at = Buffer.from(bytes).indexOf('\n  "', trailer.headerOffset) + 1;
      await patchBytes(f, at, [0x09]);
      return { code: "CONTAINER_HEADER_INVALID", file: f, byteOffset: trailer.headerOffset, count: 1 };
    },
  },
  {
    name: "bad magic (the rest still checked)",
    from: "fixture",
    plant: async (f) => {
      await patchBytes(f, 1, [0x58]);
      return { code: "CONTAINER_BAD_MAGIC", file: f, byteOffset: 0, count: 1 };
    },
  },
  {
    name: "cut short (trailer magic missing)",
    from: "fixture",
    plant: async (f) => {
      const size = await cutBytes(f, 10);
      return { code: "CONTAINER_TRUNCATED", file: f, byteOffset: size - 8, count: 1 };
    },
  },
  {
    name: "a blob off the 64-byte grid",
    from: "fixture",
    plant: async (f) => {
      const blob = await blobOf(f, UP1, "data");
      await rewriteLmpackHeader(f, (h) => void (h.tensors.find((t) => t.name === UP1)!.blobs![0]!.byteOffset = blob.byteOffset + 1));
      return { code: "CONTAINER_BLOB_INVALID", file: f, tensor: UP1, byteOffset: blob.byteOffset + 1, count: 1 };
    },
  },
  {
    name: "a blob whose shape disagrees with its length",
    from: "fixture",
    plant: async (f) => {
      const norm = "model.layers.2.input_layernorm.weight";
      const blob = await blobOf(f, norm, "data");
      await rewriteLmpackHeader(f, (h) => void (h.tensors.find((t) => t.name === norm)!.blobs![0]!.shape = [96]));
      return { code: "SHAPE_SIZE_MISMATCH", file: f, tensor: norm, byteOffset: blob.byteOffset, count: 1 };
    },
  },
  {
    name: "two blobs sharing bytes",
    from: "fixture",
    plant: async (f) => {
      const [a, b] = ["model.layers.0.input_layernorm.weight", "model.layers.1.input_layernorm.weight"];
      const first = await blobOf(f, a, "data");
      await rewriteLmpackHeader(f, (h) => {
        const source = h.tensors.find((t) => t.name === a)!.blobs![0]!;
        Object.assign(h.tensors.find((t) => t.name === b)!.blobs![0]!, { byteOffset: source.byteOffset, checksum: source.checksum });
      });
      return { code: "OFFSETS_OVERLAP", file: f, tensor: b, byteOffset: first.byteOffset, count: 1 };
    },
  },
  {
    name: "a blob of unknown dtype",
    from: "fixture",
    plant: async (f) => {
      const blob = await blobOf(f, UP1, "data");
      await rewriteLmpackHeader(f, (h) => void (h.tensors.find((t) => t.name === UP1)!.blobs![0]!.dtype = 999 as never));
      return { code: "UNKNOWN_DTYPE", file: f, tensor: UP1, byteOffset: blob.byteOffset, count: 1 };
    },
  },
  {
    name: "the embedded config.json has fewer layers than the tensors",
    from: "fixture",
    plant: async (f) => {
      await rewriteLmpackHeader(f, (h) => void (h.rawConfigJson = h.rawConfigJson.replace('"num_hidden_layers": 4', '"num_hidden_layers": 3')));
      const file = await LmpackFile.open(f);
      const first = file.tensors.find((t) => t.name.startsWith("model.layers.3."))!;
      await file.close();
      return { code: "TENSOR_UNEXPECTED", file: f, tensor: first.name, byteOffset: first.blobs[0]!.byteOffset, count: 9 };
    },
  },
  {
    name: "spqr: parameters the layout cannot hold (bits 4)",
    from: "spqr",
    plant: async (f) => {
      await rewriteLmpackHeader(f, (h) => void (h.tensors.find((t) => t.name === Q)!.spqr!.bits = 4));
      return { code: "CONTAINER_HEADER_INVALID", file: f, tensor: Q, count: 1 };
    },
  },
  {
    name: "spqr: in_perm blob is not a permutation (checksum kept valid)",
    from: "spqr",
    plant: async (f) => {
      const blob = await blobOf(f, Q, "in_perm");
      const [a, b] = await readBytes(f, blob.byteOffset, 2);
      const at = await patchBlob(f, Q, "in_perm", 2, [a!, b!]);
      return { code: "PACKED_VALUE_INVALID", file: f, tensor: Q, byteOffset: at, count: 1 };
    },
  },
  {
    name: "fp6 deep: a NaN scale (checksum kept valid)",
    from: "fp6",
    deep: true,
    plant: async (f) => {
      const at = await patchBlob(f, Q, "scales", 2 * 7, u16le(0x7e01));
      return { code: "NONFINITE_VALUE", file: f, tensor: Q, byteOffset: at, count: 1 };
    },
  },
  {
    name: "fp6 deep: a zero scale (checksum kept valid)",
    from: "fp6",
    deep: true,
    plant: async (f) => {
      const at = await patchBlob(f, Q, "scales", 2 * 11, u16le(0));
      return { code: "DEGENERATE_SCALE", file: f, tensor: Q, byteOffset: at, count: 1 };
    },
  },
];

cases.forEach((c, i) => {
  test(c.name, async () => {
    const dir = join(work.path, `case-${i}`);
    await mkdir(dir);
    const path = join(dir, `copy.lmpack`);
    await copyFile(made[c.from], path);
    await expectFound(path, await c.plant(path), { deep: c.deep ?? false });
  });
});

test("two corrupt blobs in different tensors: both reported", async () => {
  const path = join(work.path, "two.lmpack");
  await copyFile(made.fixture, path);
  const names = ["model.layers.0.mlp.gate_proj.weight", "model.norm.weight"];
  const blobs = await Promise.all(names.map((n) => blobOf(path, n, "data")));
  for (const blob of blobs) await patchBytes(path, blob.byteOffset, u32le(0xdeadbeef));
  const report = await validatePath(path);
  assert.equal(report.findings.map((f) => [f.code, f.tensor, f.byteOffset]), names.map((n, i) => ["CHECKSUM_MISMATCH", n, blobs[i]!.byteOffset]));
});

test.run();
