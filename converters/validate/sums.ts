import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileExists, readSmallFile } from "../io/json-file.js";
import type { Findings } from "./findings.js";

/**
 * A `SHA256SUMS` file beside the checkpoint (sha256sum's format, as the shared test checkpoints
 * and many release folders carry): every file it lists that is present must hash to its line.
 * For a folder, every listed file is checked; for a single file, only that file's line.
 */

export const SUMS_FILE = "SHA256SUMS";
/** A sums file lists a few dozen names; 1 MiB bounds what a hostile one makes us parse. */
const MAX_SUMS_BYTES = 1024 * 1024;
const LINE = /^([0-9a-f]{64}) [ *](.+)$/;

export async function checkSha256Sums(path: string, isDirectory: boolean, findings: Findings): Promise<void> {
  const dir = isDirectory ? path : dirname(path);
  const sumsPath = join(dir, SUMS_FILE);
  if (!(await fileExists(sumsPath))) return;
  const text = await findings.guard({ file: sumsPath }, async () => new TextDecoder().decode(await readSmallFile(sumsPath, MAX_SUMS_BYTES, "METADATA_INVALID")));
  if (text === undefined) return;
  const lines = text.split("\n").map((l) => l.trimEnd()).filter((l) => l !== "");
  for (const [i, line] of lines.entries()) {
    const m = LINE.exec(line);
    if (m === null) {
      findings.add("METADATA_INVALID", `line ${i + 1} is not "<sha256> <file name>"`, { file: sumsPath, actual: line.slice(0, 80) }, "warning");
      continue;
    }
    const [, expected, name] = m as unknown as [string, string, string];
    if (name.includes("/") || name.includes("\\") || (!isDirectory && name !== basename(path))) continue;
    const file = join(dir, name);
    if (!(await fileExists(file))) {
      if (isDirectory) findings.add("NOT_FOUND", `${SUMS_FILE} lists this file, and it is not in the folder`, { file }, "warning");
      continue;
    }
    const actual = await sha256(file);
    if (actual !== expected) findings.add("CHECKSUM_MISMATCH", `sha256 differs from ${SUMS_FILE}'s line (the file changed or is corrupt)`, { file, expected, actual });
  }
}

async function sha256(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 22 })) hash.update(chunk as Buffer);
  return hash.digest("hex");
}
