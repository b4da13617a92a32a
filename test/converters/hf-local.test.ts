import { copyFile, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { FormatError } from "../../formats/errors.js";
import { normaliseConfig } from "../../converters/hf/config.js";
import { openCheckpoint } from "../../converters/open.js";
import { exportSafetensors } from "../../converters/safetensors/export.js";
import { SafetensorsFile } from "../../converters/safetensors/reader.js";
import { inspectCheckpoint } from "../../converters/inspect.js";
import { FIXTURE_MODEL, sharedModel, tempDir } from "../helpers/paths.js";

const test = suite("hf directory import");

let work: Awaited<ReturnType<typeof tempDir>>;
test.before(async () => {
  work = await tempDir();
});
test.after(() => work.cleanup());

// Parameter counts from the models' own eval.json / README (shared/models), not from our code.
const models = [
  { name: "docs-llama-16m", params: 15_735_168, dtype: "BF16", layers: 8, heads: 6, kv: 2, headDim: 64, theta: 10000, source: "rope_parameters", tied: true, embed: true },
  { name: "lmpack-fixture-2m", params: 2_410_176, dtype: "BF16", layers: 4, heads: 4, kv: 2, headDim: 48, theta: 10000, source: "rope_theta", tied: true, embed: true },
  { name: "tinystories-656K", params: 656_000, dtype: "F32", layers: 2, heads: 8, kv: 4, headDim: 16, theta: 10000, source: "rope_theta", tied: true, embed: false },
] as const;

for (const m of models) {
  test(`${m.name}: parameters, dtype and normalised config`, async () => {
    const checkpoint = await openCheckpoint(sharedModel(m.name));
    const report = inspectCheckpoint(checkpoint);
    assert.is(report.layout, "hf-safetensors");
    assert.is(report.parameters, m.params);
    assert.equal(Object.keys(report.dtypes), [m.dtype]);
    const c = report.config!;
    assert.is(c.numLayers, m.layers);
    assert.is(c.numHeads, m.heads);
    assert.is(c.numKvHeads, m.kv);
    assert.is(c.headDim, m.headDim);
    assert.is(c.ropeTheta, m.theta);
    assert.is(c.ropeThetaSource, m.source);
    assert.is(c.tiedEmbeddings, m.tied);
    assert.is(report.embeddings.embedTokensStored, m.embed);
    assert.is(report.embeddings.lmHeadStored, !m.embed);
    assert.ok(checkpoint.sideFiles.has("tokenizer.json"));
    await checkpoint.close();
  });
}

test("config: rope theta from rope_parameters, rope_theta, per-attention-type sets, or the default", () => {
  const base = { hidden_size: 64, num_attention_heads: 4, num_hidden_layers: 1, vocab_size: 10 };
  assert.is(normaliseConfig({ ...base, rope_parameters: { rope_theta: 500000, rope_type: "default" } }, "c").ropeTheta, 500000);
  assert.is(normaliseConfig({ ...base, rope_theta: 1e6 }, "c").ropeTheta, 1e6);
  assert.is(normaliseConfig({ ...base, rope_parameters: { full_attention: { rope_theta: 1e6, rope_type: "default" }, sliding_attention: { rope_theta: 1e4 } } }, "c").ropeTheta, 1e6);
  const scaled = normaliseConfig({ ...base, rope_parameters: { rope_theta: 5e5, rope_type: "llama3", factor: 8 } }, "c");
  assert.is(scaled.ropeScaling?.["factor"], 8);
  const defaults = normaliseConfig(base, "c");
  assert.is(defaults.ropeTheta, 10000);
  assert.is(defaults.ropeThetaSource, "default");
  assert.is(defaults.numKvHeads, 4);
  assert.is(defaults.headDim, 16);
  assert.is(defaults.tiedEmbeddings, false);
});

for (const [name, raw] of [
  ["heads not dividing hidden without head_dim", { hidden_size: 10, num_attention_heads: 3, num_hidden_layers: 1, vocab_size: 10 }],
  ["kv heads not dividing heads", { hidden_size: 64, num_attention_heads: 4, num_key_value_heads: 3, num_hidden_layers: 1, vocab_size: 10 }],
  ["missing hidden_size", { num_attention_heads: 4, num_hidden_layers: 1, vocab_size: 10 }],
  ["string layer count", { hidden_size: 64, num_attention_heads: 4, num_hidden_layers: "2", vocab_size: 10 }],
  ["negative rope theta", { hidden_size: 64, num_attention_heads: 4, num_hidden_layers: 1, vocab_size: 10, rope_theta: -1 }],
] as const) {
  test(`config rejects ${name} (CONFIG_INVALID)`, () => {
    try {
      normaliseConfig(raw as Record<string, unknown>, "config.json");
      assert.unreachable();
    } catch (error) {
      assert.instance(error, FormatError);
      assert.is((error as FormatError).code, "CONFIG_INVALID");
      assert.is((error as FormatError).file, "config.json");
    }
  });
}

async function shardedCopy(): Promise<string> {
  const source = await openCheckpoint(FIXTURE_MODEL);
  const dir = join(work.path, `sharded-${Math.random().toString(36).slice(2)}`);
  await exportSafetensors(source, dir, { maxShardBytes: 1_500_000 });
  await source.close();
  return dir;
}

test("sharded directory: index is followed, tensors come back identical and in order", async () => {
  const dir = await shardedCopy();
  const index = JSON.parse(await readFile(join(dir, "model.safetensors.index.json"), "utf8")) as { weight_map: Record<string, string>; metadata: { total_size: number } };
  const shards = new Set(Object.values(index.weight_map));
  assert.ok(shards.size >= 3, `expected several shards, got ${shards.size}`);
  const sharded = await openCheckpoint(dir);
  const single = await openCheckpoint(FIXTURE_MODEL);
  assert.is(sharded.files.length, shards.size);
  assert.is(index.metadata.total_size, single.tensors.reduce((s, t) => s + t.byteLength, 0));
  assert.equal(sharded.tensors.map((t) => t.name).sort(), single.tensors.map((t) => t.name).sort());
  for (const t of sharded.tensors) {
    const other = single.tensors.find((s) => s.name === t.name)!;
    assert.ok(Buffer.from(await t.read()).equals(Buffer.from(await other.read())), t.name);
  }
  await sharded.close();
  await single.close();
});

async function expectFormatError(dir: string, code: string): Promise<void> {
  try {
    const c = await openCheckpoint(dir);
    await c.close();
    assert.unreachable(`expected ${code}`);
  } catch (error) {
    assert.instance(error, FormatError, String(error));
    assert.is((error as FormatError).code, code);
  }
}

test("index mapping a tensor to a shard that lacks it → TENSOR_MISSING", async () => {
  const dir = await shardedCopy();
  const path = join(dir, "model.safetensors.index.json");
  const index = JSON.parse(await readFile(path, "utf8"));
  index.weight_map["model.ghost.weight"] = Object.values(index.weight_map)[0];
  await writeFile(path, JSON.stringify(index));
  await expectFormatError(dir, "TENSOR_MISSING");
});

test("index that does not list a stored tensor → INDEX_INVALID", async () => {
  const dir = await shardedCopy();
  const path = join(dir, "model.safetensors.index.json");
  const index = JSON.parse(await readFile(path, "utf8"));
  delete index.weight_map["model.norm.weight"];
  await writeFile(path, JSON.stringify(index));
  await expectFormatError(dir, "INDEX_INVALID");
});

test("index pointing outside the directory → INDEX_INVALID", async () => {
  const dir = await shardedCopy();
  const path = join(dir, "model.safetensors.index.json");
  const index = JSON.parse(await readFile(path, "utf8"));
  index.weight_map["model.norm.weight"] = "../../etc/passwd.safetensors";
  await writeFile(path, JSON.stringify(index));
  await expectFormatError(dir, "INDEX_INVALID");
});

test("the same tensor in two unindexed files → TENSOR_DUPLICATE", async () => {
  const dir = join(work.path, "dup");
  await mkdir(dir);
  await copyFile(join(FIXTURE_MODEL, "model.safetensors"), join(dir, "a.safetensors"));
  await copyFile(join(FIXTURE_MODEL, "model.safetensors"), join(dir, "b.safetensors"));
  await expectFormatError(dir, "TENSOR_DUPLICATE");
});

test("a directory with only pickle weights → LAYOUT_UNKNOWN (never unpickled)", async () => {
  const dir = join(work.path, "pickle");
  await mkdir(dir);
  await writeFile(join(dir, "pytorch_model.bin"), "not really a pickle");
  await copyFile(join(FIXTURE_MODEL, "config.json"), join(dir, "config.json"));
  await expectFormatError(dir, "LAYOUT_UNKNOWN");
});

test("a weights file cut short names the tensor it ends in and the whole file's expected size", async () => {
  const dir = join(work.path, "truncated");
  await mkdir(dir);
  const full = await readFile(join(FIXTURE_MODEL, "model.safetensors"));
  const cut = full.length - 100_000;
  await writeFile(join(dir, "model.safetensors"), full.subarray(0, cut));
  const original = await SafetensorsFile.open(join(FIXTURE_MODEL, "model.safetensors"));
  const holder = original.tensors.find((t) => t.byteOffset < cut && t.byteOffset + t.byteLength > cut)!;
  await original.close();
  try {
    await openCheckpoint(dir);
    assert.unreachable();
  } catch (error) {
    const e = error as FormatError;
    assert.is(e.code, "DATA_TRUNCATED");
    assert.is(e.expected, `file of ${full.length} bytes`);
    assert.is(e.actual, `${cut} bytes`);
    assert.is(e.tensor, holder.name);
  }
});

test("config.json that is not JSON → CONFIG_INVALID naming the file", async () => {
  const dir = join(work.path, "badconfig");
  await mkdir(dir);
  await copyFile(join(FIXTURE_MODEL, "model.safetensors"), join(dir, "model.safetensors"));
  await writeFile(join(dir, "config.json"), "{ not json");
  await expectFormatError(dir, "CONFIG_INVALID");
});

test.run();
