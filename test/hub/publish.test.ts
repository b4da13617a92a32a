import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { frontMatterBlock } from "../../converters/hub-publish/front-matter.js";
import { inspect } from "node:util";
import { publishFolder } from "../../converters/hub-publish/publish.js";
import { IoError, isLmpackError } from "../../formats/errors.js";
import { CLI, FIXTURE_MODEL, tempDir } from "../helpers/paths.js";
import { mulberry32 } from "../helpers/prng.js";
import { commitSha, FakeHub, sha256Hex, type FakeFile, type UploadRefusal } from "./fake-hub-server.js";

/**
 * `lmpack publish` end to end against the Hub-compatible server on 127.0.0.1 (fake-hub-server.ts),
 * through the CLI as a user runs it: repo creation, preupload, LFS batch, uploads (basic and
 * multipart), commit. The folder is made here by lmpack itself (an hf-gptq folder, an .lmpack
 * container, and an 11 MiB file that must go through LFS). The token is random per run and is
 * looked for in every output and every file.
 */

const test = suite("hub publish");

/** eemeli/yaml, a devDependency: an independent parser for the front matter lmpack writes. */
const YAML_PACKAGE = "yaml";
type YamlParse = (text: string, options?: { version?: "1.1" | "1.2"; uniqueKeys?: boolean }) => unknown;
const BIG_FILE_BYTES = 11 * 1024 * 1024;
const PART_BYTES = 4 * 1024 * 1024;
const BASE_README = "---\nlicense: apache-2.0 # the base model's\nlanguage:\n- en\n---\n\n# fixture base\n";

let work: Awaited<ReturnType<typeof tempDir>>;
let hub: FakeHub;
let token: string;
let folder: string;
let yamlParse: YamlParse;
const outputs: string[] = [];

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** The CLI in a child process; async, because the server answering it lives in this process. */
function lmpack(args: string[], env: Record<string, string> = {}): Promise<Run> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("HF_") && k !== "LMPACK_DEBUG"));
  const child = spawn(process.execPath, [CLI, ...args], { cwd: work.path, env: { ...clean, HF_ENDPOINT: hub.endpoint, HF_TOKEN: token, HF_HOME: join(work.path, "hf-home"), ...env } });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  return new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code) => {
      outputs.push(stdout, stderr);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

async function ok(args: string[], env?: Record<string, string>): Promise<Run> {
  const r = await lmpack(args, env);
  assert.is(r.code, 0, `lmpack ${args.join(" ")}: ${r.stderr}`);
  return r;
}

/** Every file under `dir`, by path relative to it. */
async function filesUnder(dir: string, prefix = ""): Promise<Map<string, Uint8Array>> {
  const out = new Map<string, Uint8Array>();
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = prefix === "" ? entry.name : `${prefix}/${entry.name}`;
    if (entry.isDirectory()) for (const [p, c] of await filesUnder(join(dir, entry.name), path)) out.set(p, c);
    else if (entry.isFile()) out.set(path, new Uint8Array(await readFile(join(dir, entry.name))));
  }
  return out;
}

function head(repo: string, branch = "main"): Map<string, FakeFile> {
  return new Map(hub.headFiles(repo, branch).map((f) => [f.path, f]));
}

/** Storage PUTs (whole objects and parts) since request `mark`. */
function uploadsSince(mark: number) {
  return hub.requests.slice(mark).filter((r) => r.server === "cdn" && r.method === "PUT");
}

/** The published folder arrived whole: every file byte-identical, big and binary ones through LFS. */
async function assertPublished(repo: string): Promise<Map<string, FakeFile>> {
  const remote = head(repo);
  for (const [path, content] of await filesUnder(folder)) {
    const file = remote.get(path);
    assert.ok(file !== undefined, `${path} is on the branch`);
    assert.ok(Buffer.from(file!.content).equals(Buffer.from(content)), `${path} is byte-identical`);
    if (path.endsWith(".safetensors") || path.endsWith(".lmpack") || path.endsWith(".bin")) assert.ok(file!.lfs, `${path} went through LFS`);
  }
  assert.is(remote.get("config.json")?.lfs, false);
  return remote;
}

test.before(async () => {
  work = await tempDir("lmpack-publish-");
  token = `hf_test_${randomBytes(16).toString("hex")}`;
  yamlParse = ((await import(YAML_PACKAGE)) as { parse: YamlParse }).parse;
  const readme: FakeFile = { path: "README.md", content: new TextEncoder().encode(BASE_README), lfs: false };
  const baseSha = commitSha([readme], "base");
  hub = await FakeHub.start([{ id: "owner/fixture-base", refs: { main: baseSha }, commits: { [baseSha]: [readme] } }]);
  hub.writeToken = token;
  hub.multipartChunkBytes = PART_BYTES;
  folder = join(work.path, "pub");
  await ok(["quantize", FIXTURE_MODEL, "--method", "rtn", "--bits", "4", "--group-size", "64", "--to", "hf-gptq", "--out", folder]);
  await ok(["quantize", FIXTURE_MODEL, "--method", "rtn", "--bits", "4", "--group-size", "64", "--sym", "--to", "lmpack", "--out", join(folder, "model-w4.lmpack")]);
  const random = mulberry32(11);
  const big = new Uint8Array(BIG_FILE_BYTES).map(() => Math.floor(random() * 256));
  await mkdir(join(folder, "extra"));
  await writeFile(join(folder, "extra", "blob.bin"), big);
  const verify = await ok(["verify", folder, "--against", FIXTURE_MODEL, "--device", "cpu", "--json"]);
  await writeFile(join(work.path, "verify.json"), verify.stdout);
  const text = (await readFile(join(FIXTURE_MODEL, "tokenizer.json"), "utf8")).slice(0, 2500);
  await writeFile(join(work.path, "eval.txt"), text);
  await writeFile(join(work.path, "eval-base.json"), (await ok(["eval", FIXTURE_MODEL, "--text", "eval.txt", "--json"])).stdout);
  await writeFile(join(work.path, "eval-w4.json"), (await ok(["eval", folder, "--text", "eval.txt", "--json"])).stdout);
});

test.after(async () => {
  await hub.close();
  await work.cleanup();
});

test("publish creates the repo, every file arrives byte-identical, LFS for the large ones (multipart above the part size)", async () => {
  const mark = hub.requests.length;
  await ok(["publish", "pub", "--repo", "me/fixture-w4", "--base", "owner/fixture-base", "--verify-report", "verify.json", "--eval", "eval-w4.json", "--base-eval", "eval-base.json"]);
  const remote = await assertPublished("me/fixture-w4");
  assert.ok(remote.has("README.md") && remote.has(".gitattributes"));
  const parts = uploadsSince(mark).filter((r) => r.path.includes("/part/"));
  assert.is(parts.length, Math.ceil(BIG_FILE_BYTES / PART_BYTES));
  assert.is(hub.commitLog.filter((c) => c.repo === "me/fixture-w4").length, 1);
});

test("the generated card: YAML front matter with the required keys, facts from the files and reports", async () => {
  const card = new TextDecoder().decode(head("me/fixture-w4").get("README.md")!.content);
  const block = frontMatterBlock(card);
  assert.ok(block !== undefined, "the card opens with front matter");
  for (const version of ["1.1", "1.2"] as const) {
    const meta = yamlParse(block!, { version, uniqueKeys: true }) as Record<string, unknown>;
    assert.is(meta["base_model"], "owner/fixture-base");
    assert.is(meta["base_model_relation"], "quantized");
    assert.is(meta["library_name"], "transformers");
    assert.is(meta["license"], "apache-2.0");
    assert.is(meta["pipeline_tag"], "text-generation");
    const tags = meta["tags"] as string[];
    for (const tag of ["lmpack", "gptq", "rtn", "4-bit"]) assert.ok(tags.includes(tag), `tag ${tag} in ${JSON.stringify(tags)}`);
  }
  const inspect = JSON.parse((await ok(["inspect", "pub", "--json"])).stdout) as { quantization: { effectiveBitsPerWeight: number }; bitsPerWeight: number };
  assert.ok(card.includes(`by the method's own count`) && card.includes(String(inspect.quantization.effectiveBitsPerWeight)), "the method's bits per weight");
  assert.ok(card.includes(String(Number(inspect.bitsPerWeight.toFixed(4)))), "the whole model's bits per weight");
  const [before, after] = await Promise.all(["eval-base.json", "eval-w4.json"].map(async (f) => (JSON.parse(await readFile(join(work.path, f), "utf8")) as { perplexity: number }).perplexity));
  assert.ok(card.includes(`| base model | ${before!.toFixed(4)} |`) && card.includes(`| this model | ${after!.toFixed(4)} (`), "perplexity before/after");
  assert.ok(card.includes("**PASS** (38 tensors"), "the verify verdict");
  for (const runtime of ["AutoModelForCausalLM.from_pretrained(\"me/fixture-w4\"", "GPTQModel.load", "npx lmpack inspect model-w4.lmpack --verify"]) assert.ok(card.includes(runtime), runtime);
});

test("a second publish of the same folder sends nothing and makes no commit", async () => {
  const mark = hub.requests.length;
  const commits = hub.commitLog.length;
  const r = await ok(["publish", "pub", "--repo", "me/fixture-w4", "--base", "owner/fixture-base", "--verify-report", "verify.json", "--eval", "eval-w4.json", "--base-eval", "eval-base.json", "--json"]);
  const result = JSON.parse(r.stdout) as { commit?: string; lfsBytesSent: number; created: boolean; files: { status: string }[] };
  assert.is(result.commit, undefined);
  assert.is(result.created, false);
  assert.is(result.lfsBytesSent, 0);
  assert.ok(result.files.every((f) => f.status === "unchanged"));
  assert.is(hub.commitLog.length, commits);
  assert.equal(uploadsSince(mark), []);
  assert.ok(!hub.requests.slice(mark).some((r) => r.path.includes("/preupload/") || r.path.includes("/commit/")));
});

test("an upload cut off mid-file fails the run; the rerun sends only the objects that had not arrived", async () => {
  const lmpackOid = sha256Hex(await readFile(join(folder, "model-w4.lmpack")));
  hub.interruptions.push({ oid: lmpackOid, afterBytes: 1_000_000 });
  const first = await lmpack(["publish", "pub", "--repo", "me/resume", "--private", "--retries", "0"]);
  assert.is(first.code, 2, first.stderr);
  assert.match(first.stderr, /NETWORK.*run the same command again to resume/);
  assert.is(hub.commitLog.filter((c) => c.repo === "me/resume").length, 0);
  assert.ok(hub.repos.get("me/resume")!.token !== undefined, "created private");
  const mark = hub.requests.length;
  const second = await ok(["publish", "pub", "--repo", "me/resume", "--json"]);
  assert.equal(uploadsSince(mark).map((r) => r.path), [`/upload/me/resume/${lmpackOid}`]);
  assert.is((JSON.parse(second.stdout) as { lfsBytesSent: number }).lfsBytesSent, (await readFile(join(folder, "model-w4.lmpack"))).length);
  await assertPublished("me/resume");
});

test("a connection dropped mid-part is retried within the run, re-sending that part only", async () => {
  const blobOid = sha256Hex(await readFile(join(folder, "extra", "blob.bin")));
  hub.interruptions.push({ oid: blobOid, part: 2, afterBytes: 100_000 });
  const mark = hub.requests.length;
  const r = await ok(["publish", "pub", "--repo", "me/retry"]);
  assert.match(r.stderr, /retry 1 in/);
  const parts = uploadsSince(mark).filter((q) => q.path.includes(blobOid)).map((q) => `${q.path.slice(q.path.lastIndexOf("/") + 1)}${q.dropped === true ? " dropped" : ""}`);
  assert.equal(parts.sort(), ["1", "2", "2 dropped", "3"]);
  await assertPublished("me/retry");
});

test("a README.md in the folder is published as it is; --revision makes the branch from main", async () => {
  const own = join(work.path, "own-card");
  await mkdir(own);
  await writeFile(join(own, "README.md"), "# mine\n");
  await writeFile(join(own, "notes.txt"), "hello\n");
  await ok(["publish", "own-card", "--repo", "me/own-card", "--revision", "dev"]);
  assert.is(new TextDecoder().decode(head("me/own-card", "dev").get("README.md")!.content), "# mine\n");
  assert.equal(hub.headFiles("me/own-card", "main").map((f) => f.path), [".gitattributes"]);
});

test("dry run: GGUF and ONNX files, a local base folder in the HF cache; nothing is contacted", async () => {
  const dir = join(work.path, "gguf-onnx");
  await mkdir(dir);
  await ok(["convert", FIXTURE_MODEL, "--to", "gguf", "--type", "Q4_0", "--out", join(dir, "fixture-q4_0.gguf")]);
  await ok(["convert", "pub", "--to", "onnx", "--out", join(dir, "onnx")]);
  const base = join(work.path, "hf-home", "hub", "models--acme--tiny", "snapshots", "a".repeat(40));
  await mkdir(base, { recursive: true });
  await writeFile(join(base, "README.md"), '---\nlicense: "mit"\n---\n');
  const mark = hub.requests.length;
  const r = await ok(["publish", "gguf-onnx", "--repo", "me/gguf", "--base", base, "--dry-run", "--json"]);
  assert.is(hub.requests.length, mark);
  const card = (JSON.parse(r.stdout) as { card: string }).card;
  const meta = yamlParse(frontMatterBlock(card)!) as Record<string, unknown>;
  assert.equal([meta["base_model"], meta["license"], meta["library_name"]], ["acme/tiny", "mit", "gguf"]);
  for (const tag of ["gguf", "q4_0", "4-bit", "onnx"]) assert.ok((meta["tags"] as string[]).includes(tag), tag);
  assert.ok(card.includes("llama-cli --hf-repo me/gguf --hf-file fixture-q4_0.gguf"));
  assert.ok(card.includes("| Q4_0 | 1,622,016 |"), "ggml types from the file");
  assert.ok(card.includes("`com.microsoft.MatMulNBits` linears: 28, 4-bit fields, block sizes 64"), "MatMulNBits nodes from the graph");
  assert.ok(card.includes('model = og.Model(f"{local}/onnx")'), "onnxruntime-genai for a folder with genai_config.json");
});

test("refusals are typed and carry no token, even when the server echoes it (LMPACK_DEBUG=1, --json)", async () => {
  hub.echoAuthorization = true;
  const realToken = hub.writeToken;
  hub.writeToken = "hf_someone_else";
  try {
    for (const extra of [[], ["--json"]]) {
      const r = await lmpack(["publish", "pub", "--repo", "me/refused", ...extra], { LMPACK_DEBUG: "1" });
      assert.is(r.code, 2);
      assert.match(r.stdout + r.stderr, /HUB_AUTH/);
      assert.match(r.stdout + r.stderr, /You sent: Bearer hf_\*\*\*/);
    }
  } finally {
    hub.writeToken = realToken;
    hub.echoAuthorization = false;
  }
  const noToken = await lmpack(["publish", "pub", "--repo", "me/no-token"], { HF_TOKEN: "" });
  assert.is(noToken.code, 2);
  assert.match(noToken.stderr, /HUB_AUTH: .*HF_TOKEN/);
  const stale = JSON.stringify({ ok: true, device: "cpu", maxRelativeRms: 0.8, rows: [{ name: "not.in.this.model", representation: "dense", bitsPerWeight: 16, maxAbsError: 0, relativeRmsError: 0, snrDb: "Infinity", device: "cpu" }], failures: [] });
  await writeFile(join(work.path, "stale.json"), stale);
  const refused = await lmpack(["publish", "pub", "--repo", "me/stale", "--verify-report", "stale.json", "--json"]);
  assert.is(refused.code, 2);
  assert.is((JSON.parse(refused.stdout) as { error: { code: string } }).error.code, "TENSOR_MISSING");
});

/** `text` holds no presigned-URL secret the storage handed out, and not the token. */
function assertNoUploadSecrets(text: string, what: string): void {
  assert.ok(hub.storage.issuedSignatures.size > 0, "the storage handed out presigned URLs");
  for (const signature of hub.storage.issuedSignatures) assert.not.ok(text.includes(signature), `an X-Amz-Signature in ${what}`);
  assert.not.ok(text.includes(hub.storage.accessKeyId), `the X-Amz-Credential's key id in ${what}`);
  assert.not.ok(text.includes(token), `the token in ${what}`);
}

const uploadRefusals: UploadRefusal[] = ["s3-xml", "echo-json"];

for (const refusal of uploadRefusals) {
  test(`storage answering an upload 403 (${refusal}): a typed error, with no signature, credential or token in it or in the CLI output`, async () => {
    hub.refuseUploads = refusal;
    try {
      for (const extra of [[], ["--json"]]) {
        const repo = `me/refused-${refusal}${extra.length === 0 ? "" : "-json"}`;
        const mark = hub.requests.length;
        const r = await lmpack(["publish", "pub", "--repo", repo, "--retries", "0", ...extra], { LMPACK_DEBUG: "1" });
        assert.is(r.code, 2, r.stderr);
        assert.ok(hub.requests.slice(mark).some((q) => q.server === "cdn" && q.method === "PUT" && q.status === 403), "the storage refused an upload");
        assertNoUploadSecrets(r.stdout + r.stderr, "the CLI output");
        // The failing URL is still named, without its query.
        assert.match(r.stdout + r.stderr, new RegExp(`/upload/${repo}/[0-9a-f]{64}(/part/\\d+)?\\?\\*\\*\\*`));
        if (extra.length === 0) assert.match(r.stderr, /error HUB_AUTH: .*LFS storage refused the upload \(403\)/);
        else assert.is((JSON.parse(r.stdout) as { error: { code: string } }).error.code, "HUB_AUTH");
        assert.is(hub.commitLog.filter((c) => c.repo === repo).length, 0);
      }
      const error = await publishFolder({ dir: folder, repo: `me/refused-${refusal}-lib`, endpoint: hub.endpoint, token, retry: { retries: 0 } }).then(
        () => assert.unreachable("the publish should have failed"),
        (e: unknown) => e,
      );
      assert.ok(isLmpackError(error) && error instanceof IoError, `a typed error: ${String(error)}`);
      assert.is((error as IoError).code, "HUB_AUTH");
      assert.is((error as IoError).cause, undefined, "no cause to print the Hub error's URL and data");
      const e = error as IoError;
      assertNoUploadSecrets([e.message, e.detail, e.file, JSON.stringify(e.toJSON()), e.stack, inspect(e, { depth: 8, showHidden: true })].join("\n"), "the error");
    } finally {
      hub.refuseUploads = undefined;
    }
  });
}

test("the token appears in no output and no file: CLI output, files written, the repos, commit titles", async () => {
  assert.ok(outputs.length > 10);
  for (const text of outputs) assert.not.ok(text.includes(token), "token in CLI output");
  for (const [path, content] of await filesUnder(work.path)) assert.not.ok(Buffer.from(content).includes(token), `token in ${path}`);
  for (const repo of hub.repos.values()) for (const files of Object.values(repo.commits)) for (const f of files) assert.not.ok(Buffer.from(f.content).includes(token), `token in ${repo.id}/${f.path}`);
  assert.not.ok(hub.commitLog.some((c) => c.summary.includes(token)));
  // Storage hosts (S3 behind the LFS batch) never receive it; only the Hub endpoint does.
  assert.ok(hub.requests.filter((r) => r.server === "cdn").every((r) => r.authorization === undefined));
});

test.run();
