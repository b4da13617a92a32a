import { createHash } from "node:crypto";
import type { FakeFile, FakeRepo } from "./types.js";

/** Ids and listings as the Hub computes them: git blob ids, LFS pointers, tree and model-info JSON. */

/** At this size and over, preupload answers "lfs" (the Hub's limit for regular git files). */
export const LFS_THRESHOLD_BYTES = 10 * 1024 * 1024;
export const GITATTRIBUTES = ["*.bin", "*.gguf", "*.h5", "*.lmpack", "*.model", "*.msgpack", "*.onnx", "*.onnx.data", "*.pt", "*.pth", "*.safetensors", "*.zip"]
  .map((pattern) => `${pattern} filter=lfs diff=lfs merge=lfs -text\n`)
  .join("");

export function sha256Hex(content: Uint8Array | string): string {
  return createHash("sha256").update(content).digest("hex");
}

/** git's blob id: sha1 of "blob <length>\0" followed by the content. */
export function gitBlobSha1(content: Uint8Array | string): string {
  const bytes = typeof content === "string" ? new TextEncoder().encode(content) : content;
  return createHash("sha1").update(`blob ${bytes.length}\0`).update(bytes).digest("hex");
}

/** A stand-in commit id: sha1 over the files' paths and ids (and a salt to tell commits apart). */
export function commitSha(files: FakeFile[], salt = ""): string {
  const hash = createHash("sha1").update(salt);
  for (const file of files) hash.update(`${file.path}\0${fileOid(file)}\0`);
  return hash.digest("hex");
}

/** The git-lfs pointer file committed in place of an LFS file's content. */
export function lfsPointer(file: FakeFile): string {
  return `version https://git-lfs.github.com/spec/v1\noid sha256:${sha256Hex(file.content)}\nsize ${file.content.length}\n`;
}

export function fileOid(file: FakeFile): string {
  return gitBlobSha1(file.lfs ? lfsPointer(file) : file.content);
}

export function modelInfoJson(repo: FakeRepo, sha: string, files: FakeFile[]): Record<string, unknown> {
  return {
    _id: sha.slice(0, 24),
    id: repo.id,
    private: repo.token !== undefined,
    pipeline_tag: "text-generation",
    gated: false,
    downloads: 0,
    likes: 0,
    lastModified: "2025-01-01T00:00:00.000Z",
    sha,
    siblings: files.map((f) => ({ rfilename: f.path })),
  };
}

/** Entries directly under `dir` (or all below it when recursive), as /api/.../tree lists them. */
export function treeJson(files: FakeFile[], dir: string, recursive: boolean): Record<string, unknown>[] {
  const prefix = dir === "" ? "" : `${dir}/`;
  const entries: Record<string, unknown>[] = [];
  const folders = new Set<string>();
  for (const file of files) {
    if (!file.path.startsWith(prefix)) continue;
    const parts = file.path.slice(prefix.length).split("/");
    for (let depth = 1; depth < parts.length && (recursive || depth === 1); depth++) folders.add(prefix + parts.slice(0, depth).join("/"));
    if (parts.length > 1 && !recursive) continue;
    const entry: Record<string, unknown> = { type: "file", oid: fileOid(file), size: file.content.length, path: file.path };
    if (file.lfs) entry["lfs"] = { oid: sha256Hex(file.content), size: file.content.length, pointerSize: lfsPointer(file).length };
    entries.push(entry);
  }
  for (const folder of [...folders].sort()) entries.push({ type: "directory", oid: gitBlobSha1(folder), size: 0, path: folder });
  return entries;
}
