import { copyFile, cp, mkdir, readFile, stat } from "node:fs/promises";
import { basename, join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { openCheckpoint } from "../../converters/open.js";
import { validatePath } from "../../converters/validate/index.js";
import { exportOnnxDecoder } from "../../converters/onnx/export-decoder.js";
import { exportOnnxLayers } from "../../converters/onnx/export-per-layer.js";
import { onnx } from "../../schemas/gen/onnx.js";
import { SHARED_DIR, tempDir } from "../helpers/paths.js";
import { cutBytes, expectFound, ggufHeader, ggufInfoFields, lmpackCli, patchBytes, patchJson, rewriteOnnx, u16le, u32le, type Expected } from "./plant.js";

/**
 * The corrupted suite, part 4: the shared GGUF files (F16, Q8_0) and ONNX exports made here from
 * the shared GPTQ checkpoint (per-layer MatMulNBits models and a decoder with external data
 * through the library, an inline decoder through the CLI), each copy with one planted defect.
 */
const test = suite("validate: GGUF and ONNX");

const GGUF = join(SHARED_DIR, "checkpoints", "gguf");
let work: Awaited<ReturnType<typeof tempDir>>;
const made = { layers: "", decoder: "", external: "" };
test.before(async () => {
  work = await tempDir("lmpack-validate-formats-");
  const gptq = join(SHARED_DIR, "checkpoints", "tinystories-656K-gptq-4bit");
  made.decoder = join(work.path, "onnx-decoder");
  const r = lmpackCli("convert", gptq, "--to", "onnx", "--out", made.decoder);
  assert.is(r.code, 0, r.stderr);
  const checkpoint = await openCheckpoint(gptq);
  made.layers = join(work.path, "onnx-layers");
  made.external = join(work.path, "onnx-external");
  await exportOnnxLayers(checkpoint, made.layers);
  await exportOnnxDecoder(checkpoint, made.external, { externalData: "always" });
  await checkpoint.close();
});
test.after(() => work.cleanup());

const MM = "model.layers.0.self_attn.q_proj";
const UP_LAYER = "model.layers.0.mlp.up_proj.onnx";
type Model = onnx.ModelProto;
const initializer = (m: Model, name: string) => m.graph!.initializer!.find((t) => t.name === name)!;

interface Case {
  name: string;
  /** A shared GGUF file (renamed to `as` when given), or an ONNX export made above. */
  from: "f16.gguf" | "q8_0.gguf" | keyof typeof made;
  as?: string;
  deep?: boolean;
  plant(path: string): Promise<Expected>;
}

const cases: Case[] = [
  {
    name: "gguf: bad magic",
    from: "f16.gguf",
    plant: async (f) => {
      await patchBytes(f, 0, [0x46]);
      return { code: "GGUF_BAD_MAGIC", file: f, byteOffset: 0, count: 1 };
    },
  },
  {
    name: "gguf: a key longer than the cap",
    from: "f16.gguf",
    plant: async (f) => {
      await patchBytes(f, 24, [0, 0, 0x10, 0]);
      return { code: "GGUF_STRING_TOO_LONG", file: f, byteOffset: 24, count: 1 };
    },
  },
  {
    name: "gguf: an unknown ggml type in one tensor info (the others still checked)",
    from: "f16.gguf",
    plant: async (f) => {
      const { typeAt } = ggufInfoFields(await ggufHeader(f), "blk.0.ffn_up.weight");
      await patchBytes(f, typeAt, u32le(99));
      return { code: "UNKNOWN_DTYPE", file: f, tensor: "blk.0.ffn_up.weight", byteOffset: typeAt, count: 1 };
    },
  },
  {
    name: "gguf: a misaligned data offset",
    from: "q8_0.gguf",
    plant: async (f) => {
      const header = await ggufHeader(f);
      const { offsetAt } = ggufInfoFields(header, "blk.1.attn_v.weight");
      await patchBytes(f, offsetAt, u32le(header.tensors.find((t) => t.name === "blk.1.attn_v.weight")!.offset + 1));
      return { code: "GGUF_OFFSET_MISALIGNED", file: f, tensor: "blk.1.attn_v.weight", byteOffset: offsetAt, count: 1 };
    },
  },
  {
    name: "gguf: a data offset past the end of the file",
    from: "f16.gguf",
    plant: async (f) => {
      const header = await ggufHeader(f);
      const { offsetAt, infoAt } = ggufInfoFields(header, "blk.0.attn_k.weight");
      await patchBytes(f, offsetAt, u32le((await stat(f)).size + 4096 - ((await stat(f)).size % 32)));
      return { code: "OFFSET_PAST_EOF", file: f, tensor: "blk.0.attn_k.weight", byteOffset: infoAt, count: 1 };
    },
  },
  {
    name: "gguf: two tensors' data overlap",
    from: "f16.gguf",
    plant: async (f) => {
      const header = await ggufHeader(f);
      const [a, b] = header.tensors;
      const { offsetAt, infoAt } = ggufInfoFields(header, b!.name);
      await patchBytes(f, offsetAt, u32le(a!.offset));
      return { code: "OFFSETS_OVERLAP", file: f, tensor: b!.name, byteOffset: infoAt, count: 1 };
    },
  },
  {
    name: "gguf: cut short inside the data",
    from: "q8_0.gguf",
    plant: async (f) => {
      const header = await ggufHeader(f);
      const size = await cutBytes(f, 64);
      const cut = header.tensors.filter((t) => t.byteOffset + t.byteLength > size);
      return { code: "OFFSET_PAST_EOF", file: f, tensor: cut[0]!.name, byteOffset: cut[0]!.infoByteOffset, count: cut.length };
    },
  },
  {
    name: "gguf: llama.block_count says 3 layers, the file has 2",
    from: "f16.gguf",
    plant: async (f) => {
      const at = (await ggufHeader(f)).kvOffsets.get("llama.block_count")!;
      await patchBytes(f, at + 8 + "llama.block_count".length + 4, u32le(3));
      return { code: "TENSOR_MISSING", file: f, tensor: "blk.2.attn_norm.weight", count: 9 };
    },
  },
  {
    name: "gguf deep: a Q8_0 block whose scale is NaN",
    from: "q8_0.gguf",
    deep: true,
    plant: async (f) => {
      const t = (await ggufHeader(f)).tensors.find((x) => x.name === "blk.1.ffn_down.weight")!;
      await patchBytes(f, t.byteOffset + 5 * 34, u16le(0x7e00));
      return { code: "NONFINITE_VALUE", file: f, tensor: t.name, byteOffset: t.byteOffset + 5 * 34, count: 1 };
    },
  },
  {
    name: "gguf deep: general.file_type declares Q4_0 over Q8_0 tensors",
    from: "q8_0.gguf",
    as: "model.gguf",
    deep: true,
    plant: async (f) => {
      const at = (await ggufHeader(f)).kvOffsets.get("general.file_type")!;
      await patchBytes(f, at + 8 + "general.file_type".length + 4, u32le(2));
      return { code: "BITS_MISMATCH", file: f, tensor: "general.file_type", byteOffset: at, count: 1 };
    },
  },
  {
    name: "gguf deep: the file name claims Q8_0, the file is F16",
    from: "f16.gguf",
    as: "tinystories-656K-q8_0.gguf",
    deep: true,
    plant: async (f) => ({ code: "NAME_CLAIM_MISMATCH", file: f, count: 1 }),
  },
  {
    name: "onnx: a model file cut short",
    from: "layers",
    plant: async (d) => {
      const f = join(d, UP_LAYER);
      await cutBytes(f, 100);
      return { code: "DATA_TRUNCATED", file: f, count: 1 };
    },
  },
  {
    name: "onnx: an initializer with fewer bytes than its dims",
    from: "layers",
    plant: async (d) => {
      const f = join(d, UP_LAYER);
      const b = "model.layers.0.mlp.up_proj.B";
      await rewriteOnnx(f, (m) => void (initializer(m, b).rawData = initializer(m, b).rawData!.subarray(1)));
      return { code: "SHAPE_SIZE_MISMATCH", file: f, tensor: b, count: 1 };
    },
  },
  {
    name: "onnx: two initializers of one name",
    from: "layers",
    plant: async (d) => {
      const f = join(d, UP_LAYER);
      const scales = "model.layers.0.mlp.up_proj.scales";
      await rewriteOnnx(f, (m) => void m.graph!.initializer!.push(onnx.TensorProto.create(initializer(m, scales))));
      return { code: "TENSOR_DUPLICATE", file: f, tensor: scales, count: 1 };
    },
  },
  {
    name: "onnx deep: a NaN MatMulNBits scale (inline, at its byte in the .onnx file)",
    from: "layers",
    deep: true,
    plant: async (d) => {
      const f = join(d, UP_LAYER);
      const scales = "model.layers.0.mlp.up_proj.scales";
      const bytes = await readFile(f);
      const raw = initializer(onnx.ModelProto.decode(bytes), scales).rawData;
      const at = bytes.indexOf(Buffer.from(raw!)) + 4 * 3;
      await patchBytes(f, at, u32le(0x7fc00000));
      return { code: "NONFINITE_VALUE", file: f, tensor: scales, byteOffset: at, count: 1 };
    },
  },
  {
    name: "onnx: a node reads a value nothing produces",
    from: "decoder",
    plant: async (d) => {
      let node = "";
      await rewriteOnnx(join(d, "model.onnx"), (m) => {
        const n = m.graph!.node!.find((x) => x.opType === "Pow")!;
        n.input![0] = "nowhere";
        node = n.name!;
      });
      return { code: "GRAPH_INPUT_UNDEFINED", file: join(d, "model.onnx"), tensor: node, count: 1 };
    },
  },
  {
    name: "onnx: a graph output nothing produces",
    from: "decoder",
    plant: async (d) => {
      await rewriteOnnx(join(d, "model.onnx"), (m) => void (m.graph!.output![0]!.name = "logits_nowhere"));
      return { code: "GRAPH_OUTPUT_UNDEFINED", file: join(d, "model.onnx"), tensor: "logits_nowhere", count: 1 };
    },
  },
  {
    name: "onnx: MatMulNBits bits 3 (not a width onnxruntime runs)",
    from: "decoder",
    plant: async (d) => {
      await rewriteOnnx(join(d, "model.onnx"), (m) => void (m.graph!.node!.find((n) => n.name === MM)!.attribute!.find((a) => a.name === "bits")!.i = 3));
      return { code: "QUANT_CONFIG_INVALID", file: join(d, "model.onnx"), tensor: MM, count: 1 };
    },
  },
  {
    name: "onnx: genai_config.json counts 3 layers, the graph has 2",
    from: "decoder",
    plant: async (d) => {
      await patchJson(join(d, "genai_config.json"), (c) => void (c["model"].decoder.num_hidden_layers = 3));
      return { code: "CONFIG_SHAPE_MISMATCH", file: join(d, "genai_config.json"), count: 1 };
    },
  },
  {
    name: "onnx: external data past the end of model.onnx.data",
    from: "external",
    plant: async (d) => {
      const data = join(d, "model.onnx.data");
      const offset = (await stat(data)).size + 4096;
      await rewriteOnnx(join(d, "model.onnx"), (m) => void (initializer(m, `${MM}.B`).externalData!.find((e) => e.key === "offset")!.value = String(offset)));
      return { code: "OFFSET_PAST_EOF", file: data, tensor: `${MM}.B`, byteOffset: offset, count: 1 };
    },
  },
  {
    name: "onnx deep: a NaN MatMulNBits scale in external data",
    from: "external",
    deep: true,
    plant: async (d) => {
      const model = onnx.ModelProto.decode(await readFile(join(d, "model.onnx")));
      const offset = Number(initializer(model, `${MM}.scales`).externalData!.find((e) => e.key === "offset")!.value);
      await patchBytes(join(d, "model.onnx.data"), offset + 4 * 9, u32le(0xff800000));
      return { code: "NONFINITE_VALUE", file: join(d, "model.onnx.data"), tensor: `${MM}.scales`, byteOffset: offset + 4 * 9, count: 1 };
    },
  },
];

cases.forEach((c, i) => {
  test(c.name, async () => {
    const dir = join(work.path, `case-${i}`);
    await mkdir(dir);
    let path: string;
    if (c.from.endsWith(".gguf")) {
      path = join(dir, c.as ?? `tinystories-656K-${c.from}`);
      await copyFile(join(GGUF, `tinystories-656K-${c.from}`), path);
    } else {
      path = join(dir, basename(made[c.from as keyof typeof made]));
      await cp(made[c.from as keyof typeof made], path, { recursive: true });
    }
    await expectFound(path, await c.plant(path), { deep: c.deep ?? false });
  });
});

test("gguf: every bad tensor info is reported, and the infos after them are still read", async () => {
  const path = join(work.path, "many.gguf");
  await copyFile(join(GGUF, "tinystories-656K-f16.gguf"), path);
  const header = await ggufHeader(path);
  const [a, b, c] = ["blk.0.attn_q.weight", "blk.1.ffn_gate.weight", "output_norm.weight"].map((n) => ggufInfoFields(header, n));
  await patchBytes(path, a!.typeAt, u32le(99));
  await patchBytes(path, b!.offsetAt, u32le(header.tensors.find((t) => t.name === "blk.1.ffn_gate.weight")!.offset + 2));
  await patchBytes(path, c!.typeAt, u32le(1234));
  const report = await validatePath(path);
  assert.equal(report.findings.map((f) => [f.code, f.tensor, f.byteOffset]), [
    ["UNKNOWN_DTYPE", "blk.0.attn_q.weight", a!.typeAt],
    ["GGUF_OFFSET_MISALIGNED", "blk.1.ffn_gate.weight", b!.offsetAt],
    ["UNKNOWN_DTYPE", "output_norm.weight", c!.typeAt],
  ]);
});

test.run();
