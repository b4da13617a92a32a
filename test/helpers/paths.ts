import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** Repository root (tests run from dist/test/..., sources live in test/...). */
export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
/** ../shared beside the checkout (override with LMPACK_SHARED). */
export const SHARED_DIR = process.env["LMPACK_SHARED"] ?? join(REPO_ROOT, "..", "shared");
/** The embedded default model, committed under test/fixtures. */
export const FIXTURE_MODEL = join(REPO_ROOT, "test", "fixtures", "lmpack-fixture-2m");
export const CLI = join(REPO_ROOT, "dist", "cli", "main.js");

export function sharedModel(name: string): string {
  return join(SHARED_DIR, "models", name);
}

/** A fresh temporary directory; call the returned cleanup when done. */
export async function tempDir(prefix = "lmpack-test-"): Promise<{ path: string; cleanup: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return { path, cleanup: () => rm(path, { recursive: true, force: true }) };
}
