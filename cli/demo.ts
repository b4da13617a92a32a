#!/usr/bin/env node
/**
 * `npm run demo`: the main job on the embedded default model, offline. Inspects
 * test/fixtures/lmpack-fixture-2m, packs it into an .lmpack container, verifies the container's
 * checksums, unpacks it back to a Hugging Face directory and proves the round trip bit-exact.
 * Later issues extend it with packing, export and verification.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { openCheckpoint } from "../converters/open.js";
import { inspectCheckpoint } from "../converters/inspect.js";
import { exportLmpack } from "../converters/lmpack/export.js";
import { exportSafetensors } from "../converters/safetensors/export.js";
import { LmpackFile } from "../converters/lmpack/reader.js";
import { formatBytes } from "../converters/io/byte-size.js";
import { reportError } from "./errors.js";
import { renderInspect } from "./report.js";

const FIXTURE = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "test", "fixtures", "lmpack-fixture-2m");

async function demo(): Promise<number> {
  const work = await mkdtemp(join(tmpdir(), "lmpack-demo-"));
  try {
    step(`1. inspect the embedded model (${FIXTURE})`);
    const source = await openCheckpoint(FIXTURE);
    console.log(renderInspect(inspectCheckpoint(source)).split("\n").slice(0, 9).join("\n"));

    const container = join(work, "fixture.lmpack");
    step("2. pack it into one .lmpack container (streaming, crc32 per blob)");
    await exportLmpack(source, container);
    await source.close();
    const file = await LmpackFile.open(container);
    const failures = await file.verifyAll();
    console.log(`${container}: ${file.tensors.length} tensors, ${file.sideFiles.size} side files, ${formatBytes(file.source.byteLength)}; checksums: ${failures.length === 0 ? "all match" : `${failures.length} FAILED`}`);
    await file.close();

    const unpacked = join(work, "unpacked");
    step("3. unpack the container back to a Hugging Face directory");
    const packed = await openCheckpoint(container);
    await exportSafetensors(packed, unpacked);
    await packed.close();

    step("4. compare with the original, byte for byte");
    let allSame = failures.length === 0;
    for (const name of ["model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"]) {
      const same = Buffer.compare(await readFile(join(FIXTURE, name)), await readFile(join(unpacked, name))) === 0;
      allSame &&= same;
      console.log(`${same ? "identical" : "DIFFERENT"}  ${name}`);
    }
    console.log(allSame ? "\nround trip through the container is bit-exact" : "\nround trip FAILED");
    return allSame ? 0 : 3;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

function step(title: string): void {
  console.log(`\n== ${title}`);
}

demo().then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.exitCode = reportError(error, false);
  },
);
