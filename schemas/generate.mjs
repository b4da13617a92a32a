#!/usr/bin/env node
// Generates static protobufjs code and its TypeScript declarations from schemas/*.proto into
// schemas/gen/ (git-ignored: the .proto files are the only source). Run by `npm run build`.
import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, copyFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const root = dirname(here);
const bin = (name) => join(root, "node_modules", ".bin", name);
const outDir = join(here, "gen");
mkdirSync(outDir, { recursive: true });

for (const proto of readdirSync(here).filter((f) => f.endsWith(".proto"))) {
  const stem = proto.slice(0, -".proto".length);
  const js = join(outDir, `${stem}.js`);
  // --force-number: uint64 fields decode as numbers (offsets and sizes stay below 2^53 and are checked).
  execFileSync(bin("pbjs"), ["-t", "static-module", "-w", "es6", "--force-number", "--no-delimited", "--no-verify", "--no-convert", "-o", js, join(here, proto)], { stdio: "inherit" });
  execFileSync(bin("pbts"), ["-o", join(outDir, `${stem}.d.ts`), js], { stdio: "inherit" });
  // tsc does not copy plain .js inputs; the built library imports them from dist/.
  const distDir = join(root, "dist", "schemas", "gen");
  mkdirSync(distDir, { recursive: true });
  copyFileSync(js, join(distDir, `${stem}.js`));
}
