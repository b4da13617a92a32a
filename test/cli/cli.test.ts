import { spawnSync } from "node:child_process";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { CLI, FIXTURE_MODEL, REPO_ROOT, sharedModel, tempDir } from "../helpers/paths.js";

const test = suite("cli");

let work: Awaited<ReturnType<typeof tempDir>>;
test.before(async () => {
  work = await tempDir();
});
test.after(() => work.cleanup());

/** The environment a user's shell would give: without the color variables the test runner sets. */
const userEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== "FORCE_COLOR" && k !== "NO_COLOR"));

function lmpack(...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", cwd: work.path, env: userEnv });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

function json(...args: string[]): { code: number; body: Record<string, any> } {
  const r = lmpack(...args, "--json");
  return { code: r.code, body: JSON.parse(r.stdout) };
}

async function same(a: string, b: string): Promise<boolean> {
  return Buffer.compare(await readFile(a), await readFile(b)) === 0;
}

test("npx lmpack runs the built bin, as the README says (executable, with a shebang)", async () => {
  const r = spawnSync("npx", ["--no-install", "lmpack", "--version"], { encoding: "utf8", cwd: REPO_ROOT, env: userEnv });
  assert.is(r.status, 0, r.stderr);
  const pkg = JSON.parse(await readFile(join(REPO_ROOT, "package.json"), "utf8")) as { version: string };
  assert.is(r.stdout.trim(), pkg.version);
});

test("inspect --json: docs-llama-16m (transformers 5 config)", () => {
  const { code, body } = json("inspect", sharedModel("docs-llama-16m"));
  assert.is(code, 0);
  assert.is(body["parameters"], 15_735_168);
  assert.equal(body["dtypes"], { BF16: 15_735_168 });
  assert.is(body["config"].numLayers, 8);
  assert.is(body["config"].numHeads, 6);
  assert.is(body["config"].numKvHeads, 2);
  assert.is(body["config"].ropeTheta, 10000);
  assert.is(body["config"].ropeThetaSource, "rope_parameters");
  assert.is(body["tensors"].length, 74);
  assert.is(body["bitsPerWeight"], 16);
});

test("inspect --json: tinystories-656K (fp32, tied, no embed_tokens tensor)", () => {
  const { code, body } = json("inspect", sharedModel("tinystories-656K"));
  assert.is(code, 0);
  assert.equal(body["dtypes"], { F32: 656_000 });
  assert.is(body["config"].tiedEmbeddings, true);
  assert.is(body["embeddings"].embedTokensStored, false);
  assert.ok(!body["tensors"].some((t: { name: string }) => t.name.includes("embed_tokens")));
});

test("inspect text output names the layout and parameter count", () => {
  const r = lmpack("inspect", FIXTURE_MODEL);
  assert.is(r.code, 0);
  assert.match(r.stdout, /hf-safetensors/);
  assert.match(r.stdout, /2,410,176/);
  assert.match(r.stdout, /rope theta 10000 \(from rope_theta\)/);
});

test("convert to f32 (sharded) and back to bf16 is bit-exact with the source", async () => {
  const src = sharedModel("docs-llama-16m");
  assert.is(lmpack("convert", src, "--to", "safetensors", "--dtype", "f32", "--max-shard-size", "20MB", "--out", "f32").code, 0);
  const shards = (await readdir(join(work.path, "f32"))).filter((n) => n.endsWith(".safetensors"));
  assert.ok(shards.length >= 3, `expected shards, got ${shards}`);
  const f32 = json("inspect", join(work.path, "f32"));
  assert.equal(f32.body["dtypes"], { F32: 15_735_168 });
  assert.match(await readFile(join(work.path, "f32", "config.json"), "utf8"), /"dtype": "float32"/);
  assert.is(lmpack("convert", "f32", "--to", "safetensors", "--dtype", "bf16", "--out", "bf16").code, 0);
  for (const name of ["model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"]) {
    assert.ok(await same(join(src, name), join(work.path, "bf16", name)), name);
  }
});

test("convert to .lmpack and back is bit-exact; sha256 checksums too", async () => {
  for (const checksum of ["crc32", "sha256"]) {
    assert.is(lmpack("convert", FIXTURE_MODEL, "--to", "lmpack", "--checksum", checksum, "--out", `m-${checksum}.lmpack`).code, 0);
    const verify = json("inspect", `m-${checksum}.lmpack`, "--verify");
    assert.is(verify.code, 0);
    assert.is(verify.body["layout"], "lmpack");
    assert.is(verify.body["parameters"], 2_410_176);
    assert.is(lmpack("convert", `m-${checksum}.lmpack`, "--to", "safetensors", "--out", `back-${checksum}`).code, 0);
    for (const name of ["model.safetensors", "config.json", "tokenizer.json"]) {
      assert.ok(await same(join(FIXTURE_MODEL, name), join(work.path, `back-${checksum}`, name)), name);
    }
  }
});

test("a flipped byte in a .lmpack blob: checksum error naming the tensor, exit 3, no output", async () => {
  assert.is(lmpack("convert", FIXTURE_MODEL, "--to", "lmpack", "--out", "flip.lmpack").code, 0);
  const layout = json("inspect", "flip.lmpack");
  const bytes = await readFile(join(work.path, "flip.lmpack"));
  // Byte 100 lies inside the first blob (blobs start at 64), which holds the first tensor.
  bytes[100]! ^= 0x80;
  await writeFile(join(work.path, "flip.lmpack"), bytes);
  const firstTensor = layout.body["tensors"][0].name as string;

  const verify = json("inspect", "flip.lmpack", "--verify");
  assert.is(verify.code, 3);
  assert.is(verify.body["verification"].failures.length, 1);
  assert.is(verify.body["verification"].failures[0].code, "CHECKSUM_MISMATCH");
  assert.is(verify.body["verification"].failures[0].tensor, firstTensor);

  const convert = json("convert", "flip.lmpack", "--to", "safetensors", "--out", "flip-out");
  assert.is(convert.code, 3);
  assert.is(convert.body["error"].code, "CHECKSUM_MISMATCH");
  assert.is(convert.body["error"].tensor, firstTensor);
  assert.equal((await readdir(work.path)).filter((n) => n.startsWith("flip-out") || n.includes("lmpack-tmp")), []);
});

test("exit codes: 1 for usage, 2 for invalid input, 2 for an existing output without --force", async () => {
  assert.is(lmpack("convert", FIXTURE_MODEL, "--out", "x").code, 1);
  assert.is(lmpack("convert", FIXTURE_MODEL, "--to", "safetensors", "--dtype", "f8", "--out", "x").code, 1);
  assert.is(lmpack("convert", FIXTURE_MODEL, "--to", "lmpack", "--max-shard-size", "1GB", "--out", "x.lmpack").code, 1);
  assert.is(lmpack("nonsense").code, 1);
  const missing = json("inspect", "does/not/exist/here");
  assert.is(missing.code, 2);
  for (const method of ["gptq", "spqr", "vptq"]) {
    const noStore = json("quantize", FIXTURE_MODEL, "--method", method, "--hessians", "no/such/hessians.safetensors", "--to", "lmpack", "--out", `nostore-${method}.lmpack`);
    assert.is(noStore.code, 2, `${method}: a missing Hessian store is invalid input, not an internal error`);
    assert.is(noStore.body["error"].code, "NOT_FOUND");
    assert.match(noStore.body["error"].file, /no\/such\/hessians\.safetensors$/);
  }
  await writeFile(join(work.path, "junk.safetensors"), Buffer.from([1, 0, 0, 0, 0, 0, 0, 0, 0x5b]));
  const junk = json("inspect", "junk.safetensors");
  assert.is(junk.code, 2);
  assert.is(junk.body["error"].code, "HEADER_NOT_OBJECT");
  const junkText = lmpack("inspect", "junk.safetensors");
  assert.is(junkText.stderr.trim().split("\n").length, 1, `one line, no stack trace: ${junkText.stderr}`);
  assert.match(junkText.stderr, /junk\.safetensors/);

  assert.is(lmpack("convert", FIXTURE_MODEL, "--to", "safetensors", "--out", "exists").code, 0);
  const again = json("convert", FIXTURE_MODEL, "--to", "safetensors", "--out", "exists");
  assert.is(again.code, 2);
  assert.is(again.body["error"].code, "OUTPUT_EXISTS");
  assert.is(lmpack("convert", FIXTURE_MODEL, "--to", "safetensors", "--dtype", "f16", "--out", "exists", "--force").code, 0);
  // quantize refuses an existing output before it opens anything: here before the (missing)
  // Hessian store, which it would otherwise read first and fail on.
  for (const method of ["gptq", "spqr", "vptq", "fp6"]) {
    const early = json("quantize", FIXTURE_MODEL, "--method", method, "--hessians", "no/such/hessians.safetensors", "--to", "lmpack", "--out", "exists");
    assert.is(early.code, 2, method);
    assert.is(early.body["error"].code, "OUTPUT_EXISTS", `${method}: ${JSON.stringify(early.body["error"])}`);
  }
  assert.equal(json("inspect", "exists").body["dtypes"], { F16: 2_410_176 });
});

test("single-file output and input: .safetensors in, .safetensors out", async () => {
  assert.is(lmpack("convert", join(FIXTURE_MODEL, "model.safetensors"), "--to", "safetensors", "--out", "one.safetensors").code, 0);
  assert.ok(await same(join(FIXTURE_MODEL, "model.safetensors"), join(work.path, "one.safetensors")));
  assert.is(json("inspect", "one.safetensors").body["layout"], "safetensors");
});

test.run();
