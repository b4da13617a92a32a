#!/usr/bin/env node
// Runs every compiled uvu suite (dist/test/**/*.test.js) in one uvu process and ends with the
// plain summary line CI reads: "N passed, M failed". uvu itself prints only Total/Passed, and a
// suite file that throws while loading would otherwise not count as a failure.
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const uvu = join(root, "node_modules", "uvu", "bin.js");
// An optional argument narrows the run to test files whose path matches it.
const pattern = process.argv[2] === undefined ? "\\.test\\.js$" : `(${process.argv[2]}).*\\.test\\.js$`;
const child = spawn(process.execPath, [uvu, join(root, "dist", "test"), pattern], { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, NO_COLOR: "1" } });

let output = "";
child.stdout.on("data", (chunk) => {
  output += chunk;
  process.stdout.write(chunk);
});
child.on("close", (code) => {
  const total = Number(/Total:\s+(\d+)/.exec(output)?.[1] ?? 0);
  const passed = Number(/Passed:\s+(\d+)/.exec(output)?.[1] ?? 0);
  const skipped = Number(/Skipped:\s+(\d+)/.exec(output)?.[1] ?? 0);
  let failed = total - passed - skipped;
  if (code !== 0 && failed === 0) failed = 1; // a suite crashed outside any test
  console.log(`${passed} passed, ${failed} failed${skipped > 0 ? `, ${skipped} skipped` : ""}`);
  process.exit(failed > 0 ? 1 : 0);
});
