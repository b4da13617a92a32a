import { readFileSync } from "node:fs";
import { getHeapStatistics } from "node:v8";
import { fuzzTarget } from "./registry.js";

/**
 * Replays inputs through a fuzz target in plain Node (no Jazzer.js, no native addon, any glibc):
 * the first step in turning a finding (bench/out/fuzz/findings/<target>/crash-…) into a case of
 * test/fuzz/regressions.test.ts. Prints each input's outcome, time and ArrayBuffer growth, and the
 * stack of anything the target let through; exits 1 if any input failed.
 *
 *   node dist/bench/fuzz/replay.js <target> <file>...
 */
const [name, ...files] = process.argv.slice(2);
const target = name === undefined ? undefined : fuzzTarget(name);
if (target === undefined || files.length === 0) {
  console.error("usage: node dist/bench/fuzz/replay.js <target> <file>...");
  process.exit(2);
}
const { fuzz } = (await import(`./targets/${target.name}.js`)) as { fuzz: (data: Buffer) => unknown };
let failed = 0;
for (const file of files) {
  const data = readFileSync(file);
  const externalBefore = getHeapStatistics().external_memory;
  const started = performance.now();
  try {
    await fuzz(data);
    console.log(`${file}: ok`);
  } catch (error) {
    failed++;
    console.log(`${file}: FINDING\n${error instanceof Error ? error.stack : String(error)}`);
  }
  const grownMiB = (getHeapStatistics().external_memory - externalBefore) / 2 ** 20;
  console.log(`  ${data.length} bytes in, ${(performance.now() - started).toFixed(0)} ms, ArrayBuffers +${grownMiB.toFixed(1)} MiB`);
}
process.exit(failed > 0 ? 1 : 0);
