import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { FUZZ_TARGETS } from "../../bench/fuzz/registry.js";
import { REPO_ROOT } from "../helpers/paths.js";

/**
 * The fuzz targets (bench/fuzz/targets) outside the fuzzer: every committed seed, and a few
 * degenerate inputs, go through each target's `fuzz` in-process. A target must accept all of
 * them (a typed error inside is fine; the target swallows it), so a target that no longer loads,
 * a seed a reader change made unreadable in an untyped way, or a registry entry without a module
 * fails here, in `npm test`, without Jazzer.js.
 */
const test = suite("fuzz targets");

const SEEDS_DIR = join(REPO_ROOT, "bench", "fuzz", "seeds");
/** Inputs every target must survive: empty, one byte, a run of 0xff, a NUL-led run. */
const DEGENERATE = [new Uint8Array(0), Uint8Array.of(0x7b), new Uint8Array(64).fill(0xff), Uint8Array.of(0, 1, 2, 3, 4, 5, 6, 7, 8, 9)];

type FuzzFn = (data: Buffer) => unknown;

for (const target of FUZZ_TARGETS) {
  test(`${target.name}: seeds and degenerate inputs pass through fuzz()`, async () => {
    const module = (await import(`../../bench/fuzz/targets/${target.name}.js`)) as { fuzz?: FuzzFn };
    assert.type(module.fuzz, "function", "the target exports fuzz(data)");
    const seeds = readdirSync(join(SEEDS_DIR, target.name)).sort();
    assert.ok(seeds.length > 0, `bench/fuzz/seeds/${target.name} holds seeds`);
    const inputs = [...seeds.map((name) => ({ name, bytes: readFileSync(join(SEEDS_DIR, target.name, name)) })), ...DEGENERATE.map((bytes, i) => ({ name: `degenerate ${i}`, bytes: Buffer.from(bytes) }))];
    for (const { name, bytes } of inputs) {
      const result = module.fuzz!(Buffer.from(bytes));
      // sync targets return nothing; the others a promise (registry.ts's `sync` must say which).
      assert.is(result instanceof Promise, !target.sync, `${name}: sync flag matches the target`);
      await result;
    }
  });
}

test("the committed seeds stay small (< 200 KB in all)", () => {
  let total = 0;
  for (const target of readdirSync(SEEDS_DIR)) for (const name of readdirSync(join(SEEDS_DIR, target))) total += readFileSync(join(SEEDS_DIR, target, name)).length;
  assert.ok(total < 200 * 1024, `${total} bytes`);
});

test.run();
