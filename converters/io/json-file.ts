import { readFile, stat } from "node:fs/promises";
import { FormatError, type FormatErrorCode } from "../../formats/errors.js";
import { ioErrorFor } from "./random-access.js";

/** Reads a small JSON file, refusing files over `maxBytes` before reading them. */
export async function readJsonFile(path: string, maxBytes: number, code: FormatErrorCode): Promise<unknown> {
  const bytes = await readSmallFile(path, maxBytes, code);
  try {
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (cause) {
    throw new FormatError(code, `not valid JSON: ${(cause as Error).message}`, { file: path, cause });
  }
}

export async function readSmallFile(path: string, maxBytes: number, code: FormatErrorCode): Promise<Uint8Array> {
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch (cause) {
    throw ioErrorFor(cause, path, "cannot read");
  }
  if (size > maxBytes) throw new FormatError(code, "file is larger than lmpack accepts for this kind of file", { file: path, expected: `<= ${maxBytes} bytes`, actual: size });
  try {
    return new Uint8Array(await readFile(path));
  } catch (cause) {
    throw ioErrorFor(cause, path, "cannot read");
  }
}

export async function fileExists(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}
