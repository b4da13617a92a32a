import { copyFile, mkdir, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { validatePath } from "../../converters/validate/index.js";
import { FIXTURE_MODEL, sharedModel, tempDir } from "../helpers/paths.js";
import { appendBytes, copyCheckpoint, cutBytes, expectFound, patchBytes, patchJson, relativeBegin, rewriteHeader, tensorAt, tensorNames, u16le, u32le, type Expected } from "./plant.js";

/**
 * The corrupted suite, part 1: a bare .safetensors file (tinystories-656K's, F32) and dense HF
 * directories (the fixture model, BF16), each copy with one planted defect, each reported with
 * its code at its file, tensor and byte offset. Expected offsets come from the clean file.
 */
const test = suite("validate: safetensors and dense HF directories");

let work: Awaited<ReturnType<typeof tempDir>>;
test.before(async () => {
  work = await tempDir("lmpack-validate-dense-");
});
test.after(() => work.cleanup());

const TINY = join(sharedModel("tinystories-656K"), "model.safetensors");
const UP = "model.layers.0.mlp.up_proj.weight";
const V1 = "model.layers.1.self_attn.v_proj.weight";
const NORM = "model.norm.weight";

interface Case {
  name: string;
  /** "file": a copy of tinystories-656K's model.safetensors; "dir": a copy of the fixture model's folder. */
  kind: "file" | "dir";
  deep?: boolean;
  plant(target: string, dir: string): Promise<Expected>;
}

const weights = (dir: string) => join(dir, "model.safetensors");

const cases: Case[] = [
  {
    name: "header length past the end of the file",
    kind: "file",
    plant: async (f) => {
      await patchBytes(f, 0, [0xff, 0xff, 0xff, 0x00, 0, 0, 0, 0]);
      return { code: "HEADER_LENGTH_PAST_EOF", file: f, byteOffset: 0 };
    },
  },
  {
    name: "header JSON syntax error",
    kind: "file",
    plant: async (f) => {
      const { json } = await rewriteHeader(f, () => undefined, (text) => text.replace('"dtype":', '"dtype";'));
      return { code: "HEADER_INVALID_JSON", file: f, byteOffset: 8 + json.indexOf('"dtype";') + '"dtype"'.length };
    },
  },
  {
    name: "unknown dtype in one entry (at the entry's key in the header)",
    kind: "file",
    plant: async (f) => {
      const { json } = await rewriteHeader(f, (h) => void (h[UP].dtype = "F33"));
      return { code: "UNKNOWN_DTYPE", file: f, tensor: UP, byteOffset: 8 + json.indexOf(`"${UP}":`), count: 1 };
    },
  },
  {
    name: "shape disagrees with the byte length",
    kind: "file",
    plant: async (f) => {
      const { dataStart } = await rewriteHeader(f, (h) => void (h[UP].shape = [384, 127]));
      return { code: "SHAPE_SIZE_MISMATCH", file: f, tensor: UP, byteOffset: dataStart + (await relativeBegin(f, UP)), count: 1 };
    },
  },
  {
    name: "file cut short inside the last tensor",
    kind: "file",
    plant: async (f) => {
      const norm = await tensorAt(f, NORM);
      await cutBytes(f, 100);
      return { code: "DATA_TRUNCATED", file: f, tensor: NORM, byteOffset: norm.byteOffset, count: 1 };
    },
  },
  {
    name: "two tensors share bytes",
    kind: "file",
    plant: async (f) => {
      const norm = await tensorAt(f, NORM);
      const { dataStart } = await rewriteHeader(f, (h) => {
        const end = h[V1].data_offsets[1] as number;
        h[NORM].data_offsets = [end - norm.byteLength, end];
      });
      // The last tensor now ends where v_proj does: the file ends there too, so only the overlap is wrong.
      await cutBytes(f, norm.byteLength);
      return { code: "OFFSETS_OVERLAP", file: f, tensor: NORM, byteOffset: dataStart + (await relativeBegin(f, NORM)), count: 1 };
    },
  },
  {
    name: "bytes after the last tensor",
    kind: "file",
    plant: async (f) => {
      const norm = await tensorAt(f, NORM);
      await appendBytes(f, new Array(16).fill(0));
      return { code: "TRAILING_BYTES", file: f, byteOffset: norm.byteOffset + norm.byteLength };
    },
  },
  {
    name: "__metadata__ value that is not a string",
    kind: "file",
    plant: async (f) => {
      const { json } = await rewriteHeader(f, (h) => void (h["__metadata__"].format = 1));
      return { code: "METADATA_INVALID", file: f, byteOffset: 8 + json.indexOf('"__metadata__":') };
    },
  },
  {
    name: "deep: a NaN in a dense weight",
    kind: "file",
    deep: true,
    plant: async (f) => {
      const up = await tensorAt(f, UP);
      await patchBytes(f, up.byteOffset + 4 * 1000, u32le(0x7fc00000));
      return { code: "NONFINITE_VALUE", file: f, tensor: UP, byteOffset: up.byteOffset + 4 * 1000 };
    },
  },
  {
    name: "config.json that is not JSON",
    kind: "dir",
    plant: async (_t, dir) => {
      await appendBytes(join(dir, "config.json"), [0x7b]);
      return { code: "CONFIG_INVALID", file: join(dir, "config.json") };
    },
  },
  {
    name: "config: fewer layers than stored (tensors the config does not account for)",
    kind: "dir",
    plant: async (_t, dir) => {
      await patchJson(join(dir, "config.json"), (c) => void (c["num_hidden_layers"] = 3));
      const first = (await tensorNames(weights(dir))).find((n) => n.startsWith("model.layers.3."))!;
      return { code: "TENSOR_UNEXPECTED", file: weights(dir), tensor: first, byteOffset: (await tensorAt(weights(dir), first)).byteOffset, count: 9 };
    },
  },
  {
    name: "config: more layers than stored (tensors missing)",
    kind: "dir",
    plant: async (_t, dir) => {
      await patchJson(join(dir, "config.json"), (c) => void (c["num_hidden_layers"] = 5));
      return { code: "TENSOR_MISSING", file: join(dir, "config.json"), tensor: "model.layers.4.input_layernorm.weight", count: 9 };
    },
  },
  {
    name: "config: intermediate_size disagrees with the MLP shapes",
    kind: "dir",
    plant: async (_t, dir) => {
      await patchJson(join(dir, "config.json"), (c) => void (c["intermediate_size"] = 256));
      const gate = "model.layers.0.mlp.gate_proj.weight";
      return { code: "CONFIG_SHAPE_MISMATCH", file: weights(dir), tensor: gate, byteOffset: (await tensorAt(weights(dir), gate)).byteOffset, count: 12 };
    },
  },
  {
    name: "index names a shard that is not there",
    kind: "dir",
    plant: async (_t, dir) => {
      const names = await tensorNames(weights(dir));
      const weightMap = Object.fromEntries(names.map((n) => [n, n === NORM ? "model-00002-of-00002.safetensors" : "model.safetensors"]));
      await writeFile(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: {}, weight_map: weightMap }));
      return { code: "INDEX_INVALID", file: join(dir, "model.safetensors.index.json"), tensor: NORM, count: 2 };
    },
  },
  {
    name: "the same tensors in two shards",
    kind: "dir",
    plant: async (_t, dir) => {
      await rename(weights(dir), join(dir, "model-00001-of-00002.safetensors"));
      await copyFile(join(dir, "model-00001-of-00002.safetensors"), join(dir, "model-00002-of-00002.safetensors"));
      const second = join(dir, "model-00002-of-00002.safetensors");
      const first = (await tensorNames(second))[0]!;
      return { code: "TENSOR_DUPLICATE", file: second, tensor: first, byteOffset: (await tensorAt(second, first)).byteOffset, count: 38 };
    },
  },
  {
    name: "deep: an infinity in a BF16 weight",
    kind: "dir",
    deep: true,
    plant: async (_t, dir) => {
      const down = await tensorAt(weights(dir), "model.layers.2.mlp.down_proj.weight");
      await patchBytes(weights(dir), down.byteOffset + 2 * 77, u16le(0xff80));
      return { code: "NONFINITE_VALUE", file: weights(dir), tensor: "model.layers.2.mlp.down_proj.weight", byteOffset: down.byteOffset + 2 * 77 };
    },
  },
];

cases.forEach((c, i) => {
  test(c.name, async () => {
    const dir = join(work.path, `case-${i}`);
    let target: string;
    if (c.kind === "file") {
      await mkdir(dir, { recursive: true });
      target = join(dir, "model.safetensors");
      await copyFile(TINY, target);
    } else {
      target = await copyCheckpoint(FIXTURE_MODEL, join(dir, "lmpack-fixture-2m"));
    }
    const expected = await c.plant(target, target);
    await expectFound(target, expected, { deep: c.deep ?? false });
  });
});

test("every bad entry of one header is reported, not only the first", async () => {
  const dir = join(work.path, "many");
  await mkdir(dir);
  const f = join(dir, "model.safetensors");
  await copyFile(TINY, f);
  const { json } = await rewriteHeader(f, (h) => {
    h[UP].dtype = "F33";
    h[V1].shape = [64, 129];
  });
  const report = await validatePath(f);
  const codes = report.findings.map((x) => `${x.code} ${x.tensor}`);
  assert.equal(codes, [`UNKNOWN_DTYPE ${UP}`, `SHAPE_SIZE_MISMATCH ${V1}`]);
  assert.is(report.findings[0]!.byteOffset, 8 + json.indexOf(`"${UP}":`));
});

test.run();
