import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import type { Checkpoint } from "../../converters/checkpoint.js";
import { quantizeCheckpoint } from "../../converters/int-group/quantize-checkpoint.js";
import { exportLmpack } from "../../converters/lmpack/export.js";
import { EXTERNAL_ALIGNMENT_BYTES } from "../../converters/onnx/decoder-builder.js";
import { DATA_FILE, exportOnnxDecoder, GENAI_CONFIG_FILE, MODEL_FILE } from "../../converters/onnx/export-decoder.js";
import { importMatMulNBits } from "../../converters/onnx/import.js";
import { decodeModel, int64, MS_DOMAIN } from "../../converters/onnx/model.js";
import { openCheckpoint } from "../../converters/open.js";
import { isLmpackError } from "../../formats/errors.js";
import { LlamaForward } from "../../model/llama-forward.js";
import { loadLlamaWeights } from "../../model/llama-weights.js";
import { loadTokenizer } from "../../model/tokenizer.js";
import { CLI, FIXTURE_MODEL, SHARED_DIR, tempDir } from "../helpers/paths.js";
import { checkOnnxModels, type ModelToCheck } from "../helpers/onnx-checker.js";
import { EMBEDDING_PROXY, hessianSource } from "../../cli/commands/quantize.js";
import { loadOnnxRuntime, type OrtSession, type OrtTensor } from "../runtimes/onnxruntime.js";

/**
 * The whole-decoder ONNX export (converters/onnx/export-decoder.ts) run by onnxruntime-node on
 * the CPU, held to lmpack's own forward (model/llama-forward.ts, itself within 1.3e-5 of
 * transformers fp32) on the embedded fixture model: one 64-token window in one call, the same
 * window through the KV cache (48 + 16 tokens), and a 4-bit RTN export whose MatMulNBits layers
 * must compute what lmpack computes from the same dequantized weights.
 *
 * Tolerance: 1e-4 absolute on logits (|logits| ≤ ~19 here). onnxruntime computes in float32,
 * lmpack in float64 on the same float32 weights; measured 1.5e-5 for the dense and the 4-bit
 * export alike, and the KV-cache path gives bit-identical logits to the single pass.
 */

const TOLERANCE = 1e-4;
const WINDOW = 64;
const PREFIX = 48;
const TEXT =
  "The kernel keeps a list of every open file. When a process calls read(), the file position is advanced by the number of bytes returned, " +
  "and the page cache is consulted before any request reaches the block layer. Python's import system first searches sys.modules, then the " +
  "finders on sys.meta_path, and finally raises ModuleNotFoundError when no finder returns a spec.";

type TensorCtor = new (type: string, data: BigInt64Array | Float32Array, dims: readonly number[]) => OrtTensor;
/** onnxruntime's Tensor, typed for the int64 inputs the shared runtime types leave out. */
const tensor = (type: "int64" | "float32", data: BigInt64Array | Float32Array, dims: readonly number[]): OrtTensor => {
  const Tensor = loadOnnxRuntime().Tensor as unknown as TensorCtor;
  return new Tensor(type, data, dims);
};
const int64Tensor = (values: readonly number[] | Int32Array, dims: readonly number[]) => tensor("int64", BigInt64Array.from(Array.from(values), BigInt), dims);
const createSession = (path: string): Promise<OrtSession> => loadOnnxRuntime().InferenceSession.create(path, { executionProviders: ["cpu"], logSeverityLevel: 3, intraOpNumThreads: 1 });

interface Shape { numLayers: number; numKvHeads: number; headDim: number; hiddenSize: number; vocabSize: number }

/** One decoder call on `ids` after `pastLength` cached tokens (`past`: a previous call's outputs). */
async function runDecoder(session: OrtSession, shape: Shape, ids: Int32Array, pastLength = 0, past: Record<string, OrtTensor> = {}): Promise<Record<string, OrtTensor>> {
  const total = pastLength + ids.length;
  const feeds: Record<string, OrtTensor> = { input_ids: int64Tensor(ids, [1, ids.length]), attention_mask: int64Tensor(new Array<number>(total).fill(1), [1, total]) };
  const empty = tensor("float32", new Float32Array(0), [1, shape.numKvHeads, 0, shape.headDim]);
  for (let i = 0; i < shape.numLayers; i++) {
    feeds[`past_key_values.${i}.key`] = past[`present.${i}.key`] ?? empty;
    feeds[`past_key_values.${i}.value`] = past[`present.${i}.value`] ?? empty;
  }
  return session.run(feeds);
}

/** Largest |a[offset + i] − b[i]|. */
function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>, offset = 0): number {
  let worst = 0;
  for (let i = 0; i < b.length; i++) worst = Math.max(worst, Math.abs(a[offset + i]! - b[i]!));
  return worst;
}

function expectCode(error: unknown, name: string, code: string): void {
  assert.ok(isLmpackError(error), `not an lmpack error: ${String(error)}`);
  assert.is(`${error.name}/${error.code}`, `${name}/${code}`, error.message);
}

/** Opens the fixture, hands it to `use`, closes it. */
async function withFixture<T>(use: (checkpoint: Checkpoint) => Promise<T>): Promise<T> {
  const checkpoint = await openCheckpoint(FIXTURE_MODEL);
  try {
    return await use(checkpoint);
  } finally {
    await checkpoint.close();
  }
}

const RTN4 = { method: "rtn", bits: 4, groupSize: 32, sym: true, scaleDtype: "F32" } as const;
const logged: string[] = [];

const decoder = suite("onnx: whole decoder in onnxruntime-node (CPU)", {} as { dir: string; cleanup: () => Promise<void>; ids: Int32Array; shape: Shape; reference: Float64Array });

decoder.before(async (context) => {
  const dir = await tempDir("lmpack-onnx-decoder-");
  context.dir = dir.path;
  context.cleanup = dir.cleanup;
  context.ids = (await loadTokenizer(FIXTURE_MODEL)).encode(TEXT).slice(0, WINDOW);
  assert.is(context.ids.length, WINDOW);
  context.reference = await withFixture(async (checkpoint) => {
    context.shape = checkpoint.config!;
    // Dense export with every weight in model.onnx.data, so that the external-data path is what runs.
    await exportOnnxDecoder(checkpoint, join(context.dir, "dense"), { externalData: "always" });
    return new LlamaForward(await loadLlamaWeights(checkpoint), WINDOW).run(context.ids);
  });
});
decoder.after(async (context) => {
  await context.cleanup();
  console.log(`  measured |Δ logits|: ${logged.join("; ")}`);
});

decoder("dense f32: logits of one 64-token window equal lmpack's forward within 1e-4", async ({ dir, ids, shape, reference }) => {
  const session = await createSession(join(dir, "dense", MODEL_FILE));
  const out = await runDecoder(session, shape, ids);
  await session.release();
  assert.equal(out["logits"]?.dims, [1, WINDOW, shape.vocabSize]);
  const worst = maxAbsDiff(out["logits"]!.data as Float32Array, reference);
  logged.push(`dense ${worst.toExponential(2)}`);
  assert.ok(worst < TOLERANCE, `max |Δ| ${worst}`);
});

decoder("KV cache: 48 tokens, then 16 with present.* as past, give the single pass's logits for the 16", async ({ dir, ids, shape, reference }) => {
  const session = await createSession(join(dir, "dense", MODEL_FILE));
  const whole = await runDecoder(session, shape, ids);
  const first = await runDecoder(session, shape, ids.subarray(0, PREFIX));
  assert.equal(first["present.0.key"]?.dims, [1, shape.numKvHeads, PREFIX, shape.headDim]);
  const second = await runDecoder(session, shape, ids.subarray(PREFIX), PREFIX, first);
  await session.release();
  assert.equal(second["logits"]?.dims, [1, WINDOW - PREFIX, shape.vocabSize]);
  assert.equal(second[`present.${shape.numLayers - 1}.value`]?.dims, [1, shape.numKvHeads, WINDOW, shape.headDim]);
  const cached = second["logits"]!.data as Float32Array;
  const vsForward = maxAbsDiff(reference, cached, PREFIX * shape.vocabSize);
  const vsSinglePass = maxAbsDiff(whole["logits"]!.data as Float32Array, cached, PREFIX * shape.vocabSize);
  logged.push(`KV cache ${vsForward.toExponential(2)} (vs the single pass ${vsSinglePass.toExponential(2)})`);
  assert.ok(vsForward < TOLERANCE, `vs lmpack: max |Δ| ${vsForward}`);
  assert.ok(vsSinglePass < TOLERANCE, `vs single pass: max |Δ| ${vsSinglePass}`);
});

decoder("4-bit RTN sym g32: MatMulNBits carries the quantized codes; logits equal lmpack's forward on the dequantized weights", async ({ dir, ids, shape }) => {
  const path = join(dir, "rtn4");
  const { reference, codes } = await withFixture(async (source) => {
    const quantized = quantizeCheckpoint(source, RTN4);
    const result = await exportOnnxDecoder(quantized, path);
    assert.is(result.external, false);
    assert.is(result.linears.filter((l) => l.how === "matmul-nbits" && l.bits === 4 && l.blockSize === 32).length, 7 * shape.numLayers);
    const q = quantized.tensors.find((t) => t.name === "model.layers.2.mlp.down_proj.weight")!;
    const tensor = q.packed?.representation === "int-group" ? await q.packed.load() : undefined;
    return { reference: new LlamaForward(await loadLlamaWeights(quantized), WINDOW).run(ids), codes: tensor?.codes };
  });
  // The importer reads the same integers back out of the decoder model (inline data).
  const imported = importMatMulNBits(await readFile(join(path, MODEL_FILE)));
  assert.is(imported.length, 7 * shape.numLayers);
  const down = imported.find((l) => l.name === "model.layers.2.mlp.down_proj")!.tensor;
  assert.equal(down.params, { bits: 4, groupSize: 32, sym: true, scaleDtype: "F32" });
  assert.ok(codes !== undefined && down.codes.every((c, i) => c === codes[i]), "codes differ from the quantized checkpoint's");
  const session = await createSession(join(path, MODEL_FILE));
  const out = await runDecoder(session, shape, ids);
  await session.release();
  const worst = maxAbsDiff(out["logits"]!.data as Float32Array, reference);
  logged.push(`4-bit ${worst.toExponential(2)}`);
  assert.ok(worst < TOLERANCE, `max |Δ| ${worst}`);
});

decoder("3-bit GPTQ act-order g32 (embedding-proxy Hessians): 4-bit fields and regrouped columns; logits equal lmpack's forward; import gives back codes and g_idx", async ({ dir, ids, shape }) => {
  const path = join(dir, "gptq3-act-order");
  const { reference, source } = await withFixture(async (checkpoint) => {
    const hessians = await hessianSource(EMBEDDING_PROXY, checkpoint);
    // F32 scales: MatMulNBits computes (q − z)·s in float32, where lmpack's reference for F16 scales rounds W to fp16 as the GPTQ kernels do.
    const quantized = quantizeCheckpoint(checkpoint, { method: "gptq", bits: 3, groupSize: 32, sym: false, scaleDtype: "F32", actOrder: true, hessians: hessians! });
    const result = await exportOnnxDecoder(quantized, path);
    const linears = result.linears.filter((l) => l.how === "matmul-nbits");
    assert.is(linears.length, 7 * shape.numLayers);
    assert.ok(linears.every((l) => l.bits === 3 && l.fieldBits === 4 && l.actOrder === true), JSON.stringify(linears[0]));
    const q = quantized.tensors.find((t) => t.name === "model.layers.1.self_attn.k_proj.weight")!;
    const tensor = q.packed?.representation === "int-group" ? await q.packed.load() : undefined;
    return { reference: new LlamaForward(await loadLlamaWeights(quantized), WINDOW).run(ids), source: tensor! };
  });
  const back = importMatMulNBits(await readFile(join(path, MODEL_FILE))).find((l) => l.name === "model.layers.1.self_attn.k_proj")!.tensor;
  assert.equal(back.params, source.params);
  assert.ok(source.gIdx !== undefined && back.gIdx !== undefined && back.gIdx.every((g, k) => g === source.gIdx![k]), "g_idx differs");
  assert.ok(back.codes.every((c, i) => c === source.codes[i]), "codes differ");
  const session = await createSession(join(path, MODEL_FILE));
  const out = await runDecoder(session, shape, ids);
  await session.release();
  const worst = maxAbsDiff(out["logits"]!.data as Float32Array, reference);
  logged.push(`3-bit act-order ${worst.toExponential(2)}`);
  assert.ok(worst < TOLERANCE, `max |Δ| ${worst}`);
});

for (const format of ["vptq", "spqr", "fp6"] as const) {
  decoder(`${format} checkpoint (../shared/checkpoints/tinystories-656K-${format}): every linear a dequantization subgraph; logits equal lmpack's forward on the same checkpoint`, async ({ dir }) => {
    const sourceDir = join(SHARED_DIR, "checkpoints", `tinystories-656K-${format}`);
    const path = join(dir, `packed-${format}`);
    const checkpoint = await openCheckpoint(sourceDir);
    let reference: Float64Array;
    let ids: Int32Array;
    let packedShape: Shape;
    try {
      packedShape = checkpoint.config!;
      ids = (await loadTokenizer(sourceDir)).encode(TEXT).slice(0, WINDOW);
      const result = await exportOnnxDecoder(checkpoint, path);
      const kinds = new Set(result.linears.map((l) => `${l.how}:${l.format ?? ""}`));
      assert.equal([...kinds], [`dequant-graph:${format === "fp6" ? "fpx" : format}`]);
      assert.is(result.linears.length, 7 * packedShape.numLayers);
      reference = new LlamaForward(await loadLlamaWeights(checkpoint), WINDOW).run(ids);
    } finally {
      await checkpoint.close();
    }
    const session = await createSession(join(path, MODEL_FILE));
    const out = await runDecoder(session, packedShape, ids);
    await session.release();
    const worst = maxAbsDiff(out["logits"]!.data as Float32Array, reference);
    logged.push(`${format} ${worst.toExponential(2)}`);
    assert.ok(worst < TOLERANCE, `max |Δ| ${worst}`);
  });
}

decoder("model.onnx: IR 8, opsets ai.onnx 17 + com.microsoft 1, typed I/O with symbolic dims, external data aligned and in bounds", async ({ dir, shape }) => {
  const model = decodeModel(await readFile(join(dir, "dense", MODEL_FILE)));
  const graph = model.graph!;
  const [inputs, outputs, initializers] = [graph.input ?? [], graph.output ?? [], graph.initializer ?? []];
  assert.is(int64(model.irVersion), 8);
  assert.equal(model.opsetImport.map((o) => [o.domain, int64(o.version)]), [["", 17], [MS_DOMAIN, 1]]);
  const io = (list: typeof inputs) => list.map((v) => [v.name, v.type?.tensorType?.elemType, v.type?.tensorType?.shape?.dim?.map((d) => (d.value === "dimParam" ? d.dimParam : int64(d.dimValue)))]);
  const [kvh, hd] = [shape.numKvHeads, shape.headDim];
  assert.equal(io(inputs).slice(0, 4), [
    ["input_ids", 7, ["batch_size", "sequence_length"]],
    ["attention_mask", 7, ["batch_size", "total_sequence_length"]],
    ["past_key_values.0.key", 1, ["batch_size", kvh, "past_sequence_length", hd]],
    ["past_key_values.0.value", 1, ["batch_size", kvh, "past_sequence_length", hd]],
  ]);
  assert.equal(io(outputs).slice(0, 2), [
    ["logits", 1, ["batch_size", "sequence_length", shape.vocabSize]],
    ["present.0.key", 1, ["batch_size", kvh, "total_sequence_length", hd]],
  ]);
  assert.is(inputs.length, 2 + 2 * shape.numLayers);
  assert.is(outputs.length, 1 + 2 * shape.numLayers);
  const ops = new Set((graph.node ?? []).map((n) => `${n.domain ?? ""}:${n.opType}`));
  assert.ok(ops.has(`${MS_DOMAIN}:GroupQueryAttention`) && !ops.has(`${MS_DOMAIN}:MatMulNBits`), [...ops].join(" "));
  // The tied head reuses the embedding initialiser: one [vocab, hidden] matrix in the file.
  assert.is(initializers.filter((t) => (t.dims ?? []).map(int64).join() === `${shape.vocabSize},${shape.hiddenSize}`).length, 1);
  const dataBytes = (await stat(join(dir, "dense", DATA_FILE))).size;
  const external = initializers.filter((t) => t.dataLocation === 1);
  assert.ok(external.length > 7 * shape.numLayers, `${external.length} external initialisers`);
  for (const t of external) {
    const entry = new Map((t.externalData ?? []).map((e) => [e.key, e.value]));
    const [offset, length] = [Number(entry.get("offset")), Number(entry.get("length"))];
    assert.is(entry.get("location"), DATA_FILE);
    assert.is(offset % EXTERNAL_ALIGNMENT_BYTES, 0, `${t.name} at ${offset}`);
    assert.is(length, (t.dims ?? []).map(int64).reduce((a, b) => a * b, 1) * 4, t.name ?? "");
    assert.ok(offset + length <= dataBytes, `${t.name ?? ""} ends past ${DATA_FILE}`);
  }
});

decoder("genai_config.json has onnxruntime-genai's fields; tokenizer and side files are copied byte for byte", async ({ dir, shape }) => {
  const out = join(dir, "dense");
  const genai = JSON.parse(await readFile(join(out, GENAI_CONFIG_FILE), "utf8")) as { model: Record<string, unknown> & { decoder: Record<string, unknown> }; search: Record<string, unknown> };
  const { decoder: d, ...model } = genai.model;
  assert.equal(model, { bos_token_id: 0, context_length: 512, eos_token_id: 1, pad_token_id: 2, type: "llama", vocab_size: shape.vocabSize });
  assert.equal([d["filename"], d["head_size"], d["hidden_size"], d["num_attention_heads"], d["num_hidden_layers"], d["num_key_value_heads"]], [MODEL_FILE, 48, 192, 4, 4, 2]);
  assert.equal(d["inputs"], { input_ids: "input_ids", attention_mask: "attention_mask", past_key_names: "past_key_values.%d.key", past_value_names: "past_key_values.%d.value" });
  assert.equal(d["outputs"], { logits: "logits", present_key_names: "present.%d.key", present_value_names: "present.%d.value" });
  assert.equal([genai.search["max_length"], genai.search["past_present_share_buffer"]], [512, true]);
  for (const name of ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]) {
    assert.ok((await readFile(join(out, name))).equals(await readFile(join(FIXTURE_MODEL, name))), name);
  }
  assert.equal((await readdir(out)).sort(), [DATA_FILE, GENAI_CONFIG_FILE, "generation_config.json", MODEL_FILE, "tokenizer.json", "tokenizer_config.json"].sort());
});

decoder("refusals: groups of 48 columns (no MatMulNBits block size) and an existing output leave nothing behind", async ({ dir }) => {
  await withFixture(async (source) => {
    const odd = quantizeCheckpoint(source, { ...RTN4, groupSize: 48, select: (name) => name === "model.layers.0.self_attn.q_proj.weight" });
    const path = join(dir, "group-48");
    await exportOnnxDecoder(odd, path).then(() => assert.unreachable("group 48 exported"), (error: unknown) => expectCode(error, "ConversionError", "UNSUPPORTED_TARGET"));
    assert.not.ok(existsSync(path));
    assert.equal((await readdir(dir)).filter((name) => name.includes("group-48")), []);
    await exportOnnxDecoder(source, join(dir, "dense")).then(() => assert.unreachable("overwrote"), (error: unknown) => expectCode(error, "IoError", "OUTPUT_EXISTS"));
  });
});

decoder("CLI: convert --to onnx writes the decoder folder; --per-layer one MatMulNBits model per integer linear", async ({ dir }) => {
  const packed = join(dir, "rtn4.lmpack");
  await withFixture((source) => exportLmpack(quantizeCheckpoint(source, RTN4), packed));
  const run = (...args: string[]) => spawnSync(process.execPath, [CLI, "convert", ...args, "--json"], { encoding: "utf8" });
  const whole = run(packed, "--to", "onnx", "--out", join(dir, "cli-decoder"));
  assert.is(whole.status, 0, whole.stderr);
  const summary = JSON.parse(whole.stdout) as { ok: boolean; external: boolean; linears: { how: string }[] };
  assert.equal([summary.ok, summary.external, summary.linears.filter((l) => l.how === "matmul-nbits").length], [true, false, 28]);
  assert.ok(existsSync(join(dir, "cli-decoder", GENAI_CONFIG_FILE)));
  const perLayer = run(packed, "--to", "onnx", "--per-layer", "--out", join(dir, "cli-layers"));
  assert.is(perLayer.status, 0, perLayer.stderr);
  const files = await readdir(join(dir, "cli-layers"));
  assert.is(files.length, 28);
  const [layer] = importMatMulNBits(await readFile(join(dir, "cli-layers", "model.layers.0.mlp.up_proj.onnx")));
  assert.equal([layer?.name, layer?.tensor.params.bits, layer?.tensor.outFeatures], ["model.layers.0.mlp.up_proj", 4, 512]);
  const dense = run(FIXTURE_MODEL, "--to", "onnx", "--per-layer", "--out", join(dir, "cli-none"));
  assert.is(dense.status, 1, "a float checkpoint has no layers for --per-layer");
  assert.is((JSON.parse(dense.stdout) as { error: { code: string } }).error.code, "BAD_SOURCE");
});

decoder("onnx.checker (full check) accepts every decoder model written above, external data included", async ({ dir }) => {
  const models: ModelToCheck[] = [];
  for (const name of (await readdir(dir)).sort()) {
    const path = join(dir, name, MODEL_FILE);
    if (existsSync(path)) models.push({ name, path });
  }
  assert.ok(models.length >= 7, models.map((m) => m.name).join(", "));
  const outcome = await checkOnnxModels(models);
  if (outcome.skipped !== undefined) console.log(`  note: onnx.checker not run: ${outcome.skipped}`);
  else console.log(`  onnx.checker (full check) accepted ${outcome.checked - outcome.failures.length} of ${outcome.checked} models`);
  assert.equal(outcome.failures, [], outcome.failures.join("\n"));
});

decoder.run();
