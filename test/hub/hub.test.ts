import { lstat, mkdir, readdir, readFile, readlink, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { basename, join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { FormatError, IoError, UsageError, VerificationError } from "../../formats/errors.js";
import { linkBlob, repoCacheDir } from "../../converters/hf/hub-cache.js";
import { hubSettings, openHubCheckpoint, type HubOptions } from "../../converters/hf/hub.js";
import { openHfDirectory } from "../../converters/hf/import-local.js";
import { openCheckpoint } from "../../converters/open.js";
import { buildSafetensors, contiguousHeader } from "../helpers/build-safetensors.js";
import { FIXTURE_MODEL, tempDir } from "../helpers/paths.js";
import { commitSha, FakeHub, gitBlobSha1, sha256Hex, type FakeFile, type FakeRepo } from "./fake-hub-server.js";

/**
 * The Hub importer against a Hub-compatible server on 127.0.0.1 (fake-hub-server.ts); nothing
 * here touches the internet. Cache layout assertions spell out what Python's huggingface_hub
 * writes, so the two tools share downloads.
 */

const test = suite("hub import");

const HF_VARIABLES = ["HF_TOKEN", "HF_HUB_OFFLINE", "HF_ENDPOINT", "HF_HUB_CACHE", "HF_HOME"] as const;
const FIXTURE_NAMES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"];
const RESUME_AT = 1_000_000;

let work: Awaited<ReturnType<typeof tempDir>>;
let hub: FakeHub;
let fixture: FakeFile[];
let caches = 0;
const savedEnv = new Map<string, string | undefined>();

test.before(async () => {
  for (const name of HF_VARIABLES) {
    savedEnv.set(name, process.env[name]);
    delete process.env[name];
  }
  work = await tempDir("lmpack-hub-");
  fixture = await Promise.all(FIXTURE_NAMES.map(async (path) => ({ path, content: new Uint8Array(await readFile(join(FIXTURE_MODEL, path))), lfs: path.endsWith(".safetensors") })));
  hub = await FakeHub.start([repoOf("owner/tiny", fixture)]);
});

test.after(async () => {
  await hub.close();
  await work.cleanup();
  for (const [name, value] of savedEnv) if (value !== undefined) process.env[name] = value;
});

function repoOf(id: string, files: FakeFile[], extra: Partial<FakeRepo> = {}): FakeRepo {
  const sha = commitSha(files, id);
  return { id, refs: { main: sha }, commits: { [sha]: files }, ...extra };
}

function mainSha(id: string): string {
  return hub.repos.get(id)!.refs["main"]!;
}

async function freshCache(): Promise<string> {
  const dir = join(work.path, `cache-${caches++}`);
  await mkdir(dir);
  return dir;
}

function online(cacheDir: string, extra: HubOptions = {}): HubOptions {
  return { endpoint: hub.endpoint, cacheDir, offline: false, ...extra };
}

/** The etag huggingface_hub names a blob by: sha256 for LFS files, git blob sha1 otherwise. */
function etagOf(file: FakeFile): string {
  return file.lfs ? sha256Hex(file.content) : gitBlobSha1(file.content);
}

async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    return error as Error;
  }
  throw new Error("expected a rejection, got a result");
}

async function exists(path: string): Promise<boolean> {
  return lstat(path).then(() => true, () => false);
}

function fixtureFile(path: string): FakeFile {
  return fixture.find((f) => f.path === path)!;
}

test("owner/name lands in the huggingface_hub cache layout and opens as the fixture", async () => {
  const cacheDir = await freshCache();
  const checkpoint = await openCheckpoint("owner/tiny", { hub: online(cacheDir) });
  const local = await openHfDirectory(FIXTURE_MODEL);
  try {
    assert.is(checkpoint.location, "owner/tiny");
    assert.is(checkpoint.tensors.length, 38);
    assert.equal(checkpoint.tensors.map((t) => t.name), local.tensors.map((t) => t.name));
    assert.equal(checkpoint.rawConfig, local.rawConfig);
    assert.is(checkpoint.config?.numLayers, 4);
    assert.equal(await checkpoint.tensors[37]!.read(), await local.tensors[37]!.read());
    assert.equal([...checkpoint.sideFiles.keys()].sort(), ["generation_config.json", "tokenizer.json", "tokenizer_config.json"]);
  } finally {
    await checkpoint.close();
    await local.close();
  }
  const repoDir = join(cacheDir, "models--owner--tiny");
  const sha = mainSha("owner/tiny");
  assert.is(await readFile(join(repoDir, "refs", "main"), "utf8"), sha);
  assert.equal(await readdir(join(repoDir, "refs")), ["main"]);
  assert.equal((await readdir(join(repoDir, "blobs"))).sort(), fixture.map(etagOf).sort());
  assert.equal((await readdir(join(repoDir, "snapshots", sha))).sort(), [...FIXTURE_NAMES].sort());
  for (const file of fixture) {
    const pointer = join(repoDir, "snapshots", sha, file.path);
    assert.ok((await lstat(pointer)).isSymbolicLink(), `${file.path} is a symlink`);
    assert.is(await readlink(pointer), `../../blobs/${etagOf(file)}`);
    assert.equal(new Uint8Array(await readFile(pointer)), file.content);
  }
});

test("@branch, @nested/branch and @sha resolve to their commits; shared blobs are fetched once", async () => {
  const devConfig = { path: "generation_config.json", content: new TextEncoder().encode('{"max_new_tokens": 7}\n'), lfs: false };
  const devFiles = fixture.map((f) => (f.path === devConfig.path ? devConfig : f));
  const [mainCommit, devCommit] = [commitSha(fixture, "main"), commitSha(devFiles, "dev")];
  hub.addRepo({ id: "owner/revs", refs: { main: mainCommit, dev: devCommit, "release/v1": devCommit }, commits: { [mainCommit]: fixture, [devCommit]: devFiles } });
  const cacheDir = await freshCache();
  const repoDir = join(cacheDir, "models--owner--revs");

  const dev = await openHubCheckpoint("owner/revs@dev", online(cacheDir));
  await dev.close();
  assert.equal(dev.sideFiles.get("generation_config.json"), devConfig.content);
  assert.is(await readFile(join(repoDir, "refs", "dev"), "utf8"), devCommit);
  const nested = await openHubCheckpoint("owner/revs@release/v1", online(cacheDir));
  await nested.close();
  assert.is(await readFile(join(repoDir, "refs", "release", "v1"), "utf8"), devCommit);

  const mark = hub.fileRequests().length;
  const bySha = await openHubCheckpoint(`owner/revs@${mainCommit}`, online(cacheDir));
  await bySha.close();
  assert.equal(bySha.sideFiles.get("generation_config.json"), fixtureFile("generation_config.json").content);
  assert.is(bySha.files[0], join(repoDir, "snapshots", mainCommit, "model.safetensors"));
  // A sha is its own ref: huggingface_hub writes no refs/<sha> file.
  assert.equal((await readdir(join(repoDir, "refs"))).sort(), ["dev", "release"]);
  assert.equal(hub.fileRequests().slice(mark).map((r) => r.path), [`/owner/revs/resolve/${mainCommit}/generation_config.json`]);
});

test("a partial blob is resumed with a Range request from its size", async () => {
  const cacheDir = await freshCache();
  const weights = fixtureFile("model.safetensors");
  const blob = join(cacheDir, "models--owner--tiny", "blobs", etagOf(weights));
  await mkdir(join(blob, ".."), { recursive: true });
  await writeFile(`${blob}.incomplete`, weights.content.subarray(0, RESUME_AT));
  const mark = hub.requests.length;
  await (await openHubCheckpoint("owner/tiny", online(cacheDir))).close();
  const cdn = hub.requests.slice(mark).filter((r) => r.server === "cdn");
  assert.equal(cdn.map((r) => [r.range, r.status, r.nBytes]), [[`bytes=${RESUME_AT}-`, 206, weights.content.length - RESUME_AT]]);
  assert.equal(new Uint8Array(await readFile(blob)), weights.content);
  assert.not.ok(await exists(`${blob}.incomplete`));
});

test("a partial blob that fails verification is discarded and fetched again from byte 0", async () => {
  const cacheDir = await freshCache();
  const weights = fixtureFile("model.safetensors");
  const blob = join(cacheDir, "models--owner--tiny", "blobs", etagOf(weights));
  await mkdir(join(blob, ".."), { recursive: true });
  const badPrefix = weights.content.slice(0, RESUME_AT);
  badPrefix[10]! ^= 0xff;
  await writeFile(`${blob}.incomplete`, badPrefix);
  const mark = hub.requests.length;
  await (await openHubCheckpoint("owner/tiny", online(cacheDir))).close();
  const cdn = hub.requests.slice(mark).filter((r) => r.server === "cdn");
  assert.equal(cdn.map((r) => [r.range, r.status]), [[`bytes=${RESUME_AT}-`, 206], [undefined, 200]]);
  assert.equal(new Uint8Array(await readFile(blob)), weights.content);
});

for (const [path, algorithm] of [["model.safetensors", "sha256"], ["config.json", "git blob sha1"]] as const) {
  test(`a corrupted ${path} download fails its ${algorithm} (CHECKSUM_MISMATCH) and leaves no blob`, async () => {
    const cacheDir = await freshCache();
    const repoDir = join(cacheDir, "models--owner--tiny");
    const blob = join(repoDir, "blobs", etagOf(fixtureFile(path)));
    hub.corrupt.add(path);
    try {
      const error = await rejection(openHubCheckpoint("owner/tiny", online(cacheDir)));
      assert.instance(error, VerificationError);
      assert.is((error as VerificationError).code, "CHECKSUM_MISMATCH");
      assert.is((error as VerificationError).expected, etagOf(fixtureFile(path)));
    } finally {
      hub.corrupt.delete(path);
    }
    assert.not.ok(await exists(blob));
    assert.not.ok(await exists(`${blob}.incomplete`));
    assert.not.ok(await exists(join(repoDir, "snapshots", mainSha("owner/tiny"), path)));
    assert.not.ok(await exists(join(repoDir, "refs", "main")), "refs/main is written only once the snapshot is complete");
  });
}

test("offline: the cache alone answers once the server is gone; a missing revision is HUB_OFFLINE_MISS", async () => {
  const own = await FakeHub.start([repoOf("owner/off", fixture)]);
  const sha = own.repos.get("owner/off")!.refs["main"]!;
  const cacheDir = await freshCache();
  const endpoint = own.endpoint;
  await (await openHubCheckpoint("owner/off", { endpoint, cacheDir, offline: false })).close();
  await own.close();

  for (const id of ["owner/off", "owner/off@main", `owner/off@${sha}`]) {
    const checkpoint = await openHubCheckpoint(id, { endpoint, cacheDir, offline: true });
    await checkpoint.close();
    assert.is(checkpoint.tensors.length, 38, id);
    assert.is(checkpoint.files[0], join(cacheDir, "models--owner--off", "snapshots", sha, "model.safetensors"));
  }
  // Online but unreachable: like huggingface_hub, fall back to the cached snapshot.
  await (await openHubCheckpoint("owner/off", { endpoint, cacheDir, offline: false })).close();

  const emptyCache = await freshCache();
  for (const [id, dir] of [["owner/off@dev", cacheDir], ["owner/off", emptyCache]] as const) {
    const error = await rejection(openHubCheckpoint(id, { endpoint, cacheDir: dir, offline: true }));
    assert.instance(error, IoError);
    assert.is((error as IoError).code, "HUB_OFFLINE_MISS", id);
    assert.is((error as IoError).file, repoCacheDir(dir, "owner/off"));
  }
  const unreachable = await rejection(openHubCheckpoint("owner/off", { endpoint, cacheDir: emptyCache, offline: false }));
  assert.is((unreachable as IoError).code, "NETWORK");
});

const errorCases: { name: string; id: string; token?: string; code: string }[] = [
  { name: "unknown repo", id: "owner/missing", code: "HUB_NOT_FOUND" },
  { name: "unknown revision", id: "owner/tiny@no-such-branch", code: "HUB_NOT_FOUND" },
  { name: "private repo without a token", id: "owner/private", code: "HUB_AUTH" },
  { name: "private repo with a wrong token", id: "owner/private", token: "hf_wrong", code: "HUB_AUTH" },
  { name: "a token that is not an HF token", id: "owner/private", token: "ghp_x", code: "HUB_AUTH" },
];

for (const c of errorCases) {
  test(`${c.name} is ${c.code}`, async () => {
    if (!hub.repos.has("owner/private")) hub.addRepo(repoOf("owner/private", fixture, { token: "hf_secret" }));
    const cacheDir = await freshCache();
    const error = await rejection(openHubCheckpoint(c.id, online(cacheDir, c.token === undefined ? {} : { token: c.token })));
    assert.instance(error, IoError);
    assert.is((error as IoError).code, c.code);
    assert.ok((error as IoError).file?.startsWith(c.id.split("@")[0]!), "the error names the repo");
    assert.equal(await readdir(cacheDir), []);
  });
}

test("the token goes to the Hub as Authorization: Bearer, and not to the CDN", async () => {
  if (!hub.repos.has("owner/private")) hub.addRepo(repoOf("owner/private", fixture, { token: "hf_secret" }));
  const mark = hub.requests.length;
  await (await openHubCheckpoint("owner/private", online(await freshCache(), { token: "hf_secret" }))).close();
  const seen = hub.requests.slice(mark);
  assert.ok(seen.some((r) => r.server === "cdn"));
  for (const r of seen) assert.is(r.authorization, r.server === "hub" ? "Bearer hf_secret" : undefined, `${r.server} ${r.path}`);
});

/** Two shards and their index, with tensors of distinct bytes. */
function shardedFiles(): FakeFile[] {
  const shard = (tensors: { name: string; shape: number[] }[], fill: number): Uint8Array => {
    const { header, dataBytes } = contiguousHeader(tensors.map((t) => ({ ...t, dtype: "F32", bytesPerElement: 4 })));
    return buildSafetensors({ header, data: new Uint8Array(dataBytes).fill(fill) });
  };
  const names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
  const index = { metadata: { total_size: 288 }, weight_map: { "model.embed_tokens.weight": names[0], "model.norm.weight": names[0], "lm_head.weight": names[1] } };
  const bytes = (text: string): Uint8Array => new TextEncoder().encode(text);
  return [
    fixtureFile("config.json"),
    { path: "model.safetensors.index.json", content: bytes(JSON.stringify(index)), lfs: false },
    { path: names[0]!, content: shard([{ name: "model.embed_tokens.weight", shape: [8, 4] }, { name: "model.norm.weight", shape: [4] }], 1), lfs: true },
    { path: names[1]!, content: shard([{ name: "lm_head.weight", shape: [8, 4] }], 2), lfs: true },
    { path: "consolidated.safetensors", content: shard([{ name: "other", shape: [2] }], 3), lfs: true },
    { path: "pytorch_model.bin", content: bytes("pickle, never fetched"), lfs: true },
    { path: "original/consolidated.pth", content: bytes("pickle, never fetched either"), lfs: true },
    { path: "README.md", content: bytes("# sharded\n"), lfs: false },
  ];
}

test("a sharded repo fetches config, index and the listed shards only: no pickles, no unlisted weights", async () => {
  hub.addRepo(repoOf("owner/sharded", shardedFiles()));
  const cacheDir = await freshCache();
  const mark = hub.requests.length;
  const checkpoint = await openHubCheckpoint("owner/sharded", online(cacheDir));
  await checkpoint.close();
  assert.equal(checkpoint.tensors.map((t) => t.name).sort(), ["lm_head.weight", "model.embed_tokens.weight", "model.norm.weight"]);
  assert.equal(checkpoint.files.map((f) => basename(f)), ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]);
  const fetched = hub.requests.slice(mark).filter((r) => r.path.includes("/resolve/")).map((r) => r.path.split("/").pop());
  assert.equal(fetched.sort(), ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json"]);
  assert.is(hub.requests.slice(mark).filter((r) => r.server === "cdn").length, 2);
});

test("without an index every root *.safetensors is fetched; a pickle-only repo is refused before any download", async () => {
  const files = shardedFiles().filter((f) => f.path !== "model.safetensors.index.json" && f.path !== "consolidated.safetensors");
  hub.addRepo(repoOf("owner/noindex", files));
  const checkpoint = await openHubCheckpoint("owner/noindex", online(await freshCache()));
  await checkpoint.close();
  assert.is(checkpoint.files.length, 2);

  hub.addRepo(repoOf("owner/pickles", files.filter((f) => !f.path.endsWith(".safetensors"))));
  const mark = hub.fileRequests().length;
  const error = await rejection(openHubCheckpoint("owner/pickles", online(await freshCache())));
  assert.instance(error, FormatError);
  assert.is((error as FormatError).code, "LAYOUT_UNKNOWN");
  assert.is(hub.fileRequests().length, mark);
});

test("a second online open with everything cached fetches no file, only the two API answers", async () => {
  const cacheDir = await freshCache();
  await (await openHubCheckpoint("owner/tiny", online(cacheDir))).close();
  const mark = hub.requests.length;
  const again = await openHubCheckpoint("owner/tiny", online(cacheDir));
  await again.close();
  assert.is(again.tensors.length, 38);
  const seen = hub.requests.slice(mark).map((r) => r.path);
  assert.equal(seen, [`/api/models/owner/tiny/revision/main`, `/api/models/owner/tiny/tree/${mainSha("owner/tiny")}`]);
});

const hostile: { name: string; id: string; repo?: () => FakeRepo; code: string }[] = [
  { name: "a listed path with ..", id: "owner/escape1", repo: () => repoOf("owner/escape1", fixture, { extraTreeEntries: [{ type: "file", path: "../../../../evil.safetensors", oid: "0".repeat(40), size: 1 }] }), code: "HUB_LISTING_INVALID" },
  { name: "an absolute listed path", id: "owner/escape2", repo: () => repoOf("owner/escape2", fixture, { extraTreeEntries: [{ type: "file", path: "/etc/evil.json", oid: "0".repeat(40), size: 1 }] }), code: "HUB_LISTING_INVALID" },
  { name: "an lfs oid that is not a sha256", id: "owner/escape3", repo: () => repoOf("owner/escape3", fixture, { extraTreeEntries: [{ type: "file", path: "x.safetensors", oid: "0".repeat(40), size: 1, lfs: { oid: "../../../x", size: 1, pointerSize: 1 } }] }), code: "HUB_LISTING_INVALID" },
  { name: "an index shard outside the repo folder", id: "owner/escape4", repo: () => repoOf("owner/escape4", [fixtureFile("config.json"), { path: "model.safetensors.index.json", content: new TextEncoder().encode('{"weight_map":{"a":"../a.safetensors"}}'), lfs: false }]), code: "INDEX_INVALID" },
  { name: "a revision with ..", id: "owner/tiny@../../x", code: "BAD_SOURCE" },
];

for (const c of hostile) {
  test(`refuses ${c.name} (${c.code}) without writing outside the cache`, async () => {
    if (c.repo !== undefined && !hub.repos.has(c.id)) hub.addRepo(c.repo());
    const cacheDir = await freshCache();
    const error = await rejection(openHubCheckpoint(c.id, online(join(cacheDir, "hub"))));
    assert.ok(error instanceof FormatError || error instanceof UsageError, String(error));
    assert.is((error as FormatError).code, c.code);
    assert.equal((await readdir(cacheDir)).filter((n) => n !== "hub"), []);
  });
}

test("snapshot links are relative, one ../ per folder, as huggingface_hub makes them", async () => {
  const repoDir = join(await freshCache(), "models--owner--links");
  const etag = "a".repeat(64);
  await mkdir(join(repoDir, "blobs"), { recursive: true });
  await writeFile(join(repoDir, "blobs", etag), "x");
  const sha = "b".repeat(40);
  assert.is(await readlink(await linkBlob(repoDir, sha, "top.json", etag, "owner/links")), `../../blobs/${etag}`);
  assert.is(await readlink(await linkBlob(repoDir, sha, "a/b/deep.json", etag, "owner/links")), `../../../../blobs/${etag}`);
});

const settingsCases: { name: string; env: Record<string, string>; options?: HubOptions; expect: Partial<ReturnType<typeof hubSettings>> }[] = [
  { name: "no variables", env: {}, expect: { endpoint: "https://huggingface.co", cacheDir: join(homedir(), ".cache", "huggingface", "hub"), token: undefined, offline: false } },
  { name: "HF_HUB_CACHE wins over HF_HOME", env: { HF_HUB_CACHE: "/c", HF_HOME: "/h" }, expect: { cacheDir: "/c" } },
  { name: "HF_HOME/hub", env: { HF_HOME: "/h" }, expect: { cacheDir: join("/h", "hub") } },
  { name: "XDG_CACHE_HOME/huggingface/hub", env: { XDG_CACHE_HOME: "/x" }, expect: { cacheDir: join("/x", "huggingface", "hub") } },
  { name: "HF_ENDPOINT, HF_TOKEN", env: { HF_ENDPOINT: "http://mirror.local/", HF_TOKEN: "hf_t" }, expect: { endpoint: "http://mirror.local", token: "hf_t" } },
  ...["1", "true", "YES", "on"].map((v) => ({ name: `HF_HUB_OFFLINE=${v}`, env: { HF_HUB_OFFLINE: v }, expect: { offline: true } })),
  ...["0", "false", ""].map((v) => ({ name: `HF_HUB_OFFLINE=${JSON.stringify(v)}`, env: { HF_HUB_OFFLINE: v }, expect: { offline: false } })),
  { name: "options win over variables", env: { HF_HUB_OFFLINE: "1", HF_TOKEN: "hf_env", HF_HUB_CACHE: "/c" }, options: { offline: false, token: "hf_opt", cacheDir: "/o" }, expect: { offline: false, token: "hf_opt", cacheDir: "/o" } },
];

for (const c of settingsCases) {
  test(`settings: ${c.name}`, () => {
    const settings = hubSettings(c.options ?? {}, c.env);
    for (const [key, value] of Object.entries(c.expect)) assert.is(settings[key as keyof typeof settings], value, key);
  });
}

test.run();
