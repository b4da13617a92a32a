import { spawnSync } from "node:child_process";
import { mkdir, readdir, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { basename, join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { AtomicDirectory, AtomicFile, hostTag, removeStaleTemps, temporaryName } from "../../converters/io/atomic.js";
import { tempDir } from "../helpers/paths.js";

/**
 * Leftover temporaries of atomic writes: removed only when this host wrote them and their
 * writer is dead. A temporary from another host (a directory on NFS) is never touched, whatever
 * its pid: that pid names a process over there, which may still be writing.
 */

const test = suite("atomic temporaries");

let work: Awaited<ReturnType<typeof tempDir>>;
/** A pid that was alive a moment ago and is not now (a child that has exited). */
let deadPid: number;
test.before(async () => {
  work = await tempDir("lmpack-atomic-");
  deadPid = spawnSync(process.execPath, ["-e", ""]).pid!;
});
test.after(() => work.cleanup());

async function freshDir(name: string): Promise<string> {
  const dir = join(work.path, name);
  await mkdir(dir);
  return dir;
}

test("a temporary's name carries this host and this pid", async () => {
  const dir = await freshDir("name");
  const file = await AtomicFile.create(join(dir, "out.bin"));
  assert.match(basename(file.tempPath), new RegExp(`^\\.out\\.bin\\.lmpack-tmp-${hostTag().replace(/\./g, "\\.")}-${process.pid}-[0-9a-f]{8}$`));
  if (/^[A-Za-z0-9.-]{1,64}$/.test(hostname())) assert.is(hostTag(), hostname(), "a plain host name is kept as it is");
  await file.abort();
  assert.equal(await readdir(dir), []);
});

test("stale temporaries: this host's dead writer's are removed; a live writer's, another host's and an unowned one are kept", async () => {
  const dir = await freshDir("stale");
  const otherHost = `${hostTag()}-other`;
  const ours = { dead: temporaryName("out.bin", hostTag(), deadPid), live: temporaryName("out.bin", hostTag(), process.pid) };
  const theirs = { dead: temporaryName("out.bin", otherHost, deadPid), live: temporaryName("out.bin", otherHost, process.pid) };
  // An older lmpack's name, without a host: whose it is cannot be known.
  const unowned = `.out.bin.lmpack-tmp-${deadPid}-0badf00d`;
  for (const name of [ours.dead, ours.live, theirs.dead, theirs.live, unowned]) await writeFile(join(dir, name), "partial");
  const file = await AtomicFile.create(join(dir, "out.bin"));
  await file.write(new Uint8Array([1, 2, 3]));
  await file.commit();
  assert.equal((await readdir(dir)).sort(), [ours.live, theirs.dead, theirs.live, unowned, "out.bin"].sort());
});

test("a directory output clears this host's dead temporaries (directories) too, never another host's", async () => {
  const dir = await freshDir("stale-dir");
  const ours = temporaryName("model", hostTag(), deadPid);
  const theirs = temporaryName("model", `elsewhere.${hostTag()}`, deadPid);
  for (const name of [ours, theirs]) await mkdir(join(dir, name, "inner"), { recursive: true });
  const out = await AtomicDirectory.create(join(dir, "model"));
  await writeFile(out.file("config.json"), "{}");
  await out.commit();
  assert.equal((await readdir(dir)).sort(), [theirs, "model"].sort());
});

test("removeStaleTemps leaves other destinations' temporaries alone", async () => {
  const dir = await freshDir("others");
  const other = temporaryName("out.bin.bak", hostTag(), deadPid);
  await writeFile(join(dir, other), "partial");
  await removeStaleTemps(join(dir, "out.bin"));
  assert.equal(await readdir(dir), [other]);
});

const hostCases: { name: string; host: string; tag: string | RegExp }[] = [
  { name: "a plain name", host: "gpu-node-07.cluster.local", tag: "gpu-node-07.cluster.local" },
  { name: "separators and non-ASCII become _", host: "my host/α:1", tag: "my_host___1" },
  { name: "empty", host: "", tag: "unknown-host" },
  { name: "a long name is cut and hashed", host: "n".repeat(300), tag: /^n{55}-[0-9a-f]{8}$/ },
];

for (const c of hostCases) {
  test(`hostTag: ${c.name}`, () => {
    const tag = hostTag(c.host);
    if (typeof c.tag === "string") assert.is(tag, c.tag);
    else assert.match(tag, c.tag);
    assert.ok(tag.length <= 64);
  });
}

test("hostTag: two long names sharing their first 64 characters get different tags", () => {
  const prefix = "a".repeat(64);
  assert.is.not(hostTag(`${prefix}-one`), hostTag(`${prefix}-two`));
});

test.run();
