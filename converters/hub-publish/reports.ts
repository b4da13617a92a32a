import { basename } from "node:path";
import { FormatError } from "../../formats/errors.js";
import { readJsonFile } from "../io/json-file.js";

/**
 * The verification results a card quotes, read from the files lmpack wrote: `lmpack verify
 * --json` (per-tensor errors against the source) and `lmpack eval --json` (perplexity). A
 * report is checked before it is quoted: its shape, and for verify that every tensor it names
 * is in the folder being published, so a report of another checkpoint is refused, not printed.
 */

/** Report files are a few hundred KB at most (one row per tensor). */
const MAX_REPORT_BYTES = 64 * 1024 * 1024;
/** Tensors listed in the card's table: the worst by relative RMS error. */
export const WORST_TENSORS_SHOWN = 8;

export interface VerifyRow {
  name: string;
  representation: string;
  bitsPerWeight: number;
  maxAbsError: number;
  relativeRmsError: number;
  snrDb: number;
  device: string;
}

export interface VerifyFacts {
  ok: boolean;
  device: string;
  maxRelativeRms: number;
  tensors: number;
  failures: string[];
  maxAbsError: number;
  meanRelativeRmsError: number;
  minSnrDb: number;
  /** Tensors whose GPU dequantization was compared with the CPU reference, and how many differed. */
  gpuChecked: number;
  gpuMismatchedTensors: number;
  worst: VerifyRow[];
}

export interface EvalFacts {
  perplexity: number;
  protocol: string;
  ctx: number;
  /** The text's file name (the path stays private). */
  text: string;
  tokens: number;
  windows: number | undefined;
  scored: number | undefined;
}

export async function readVerifyReport(path: string, tensorNames: ReadonlySet<string>): Promise<VerifyFacts> {
  const report = object(await readJsonFile(path, MAX_REPORT_BYTES, "CONFIG_INVALID"), path, "the report");
  const rowsValue = report["rows"];
  if (!Array.isArray(rowsValue) || rowsValue.length === 0) throw invalid(path, "rows", "a non-empty array of tensors");
  let gpuChecked = 0;
  let gpuMismatchedTensors = 0;
  const rows = rowsValue.map((value, i): VerifyRow => {
    const row = object(value, path, `rows[${i}]`);
    const name = string(row["name"], path, `rows[${i}].name`);
    if (!tensorNames.has(name)) throw new FormatError("TENSOR_MISSING", "the verify report names a tensor the folder does not have: it describes another checkpoint", { file: path, tensor: name });
    const mismatches = row["gpuCpuMismatches"];
    if (typeof mismatches === "number") {
      gpuChecked++;
      if (mismatches > 0) gpuMismatchedTensors++;
    }
    return {
      name,
      representation: string(row["representation"], path, `rows[${i}].representation`),
      bitsPerWeight: number(row["bitsPerWeight"], path, `rows[${i}].bitsPerWeight`),
      maxAbsError: number(row["maxAbsError"], path, `rows[${i}].maxAbsError`),
      relativeRmsError: number(row["relativeRmsError"], path, `rows[${i}].relativeRmsError`),
      snrDb: number(row["snrDb"], path, `rows[${i}].snrDb`),
      device: string(row["device"], path, `rows[${i}].device`),
    };
  });
  const ok = report["ok"];
  if (typeof ok !== "boolean") throw invalid(path, "ok", "a boolean verdict");
  const failures = report["failures"];
  return {
    ok,
    device: string(report["device"], path, "device"),
    maxRelativeRms: number(report["maxRelativeRms"], path, "maxRelativeRms"),
    tensors: rows.length,
    failures: Array.isArray(failures) ? failures.map((f, i) => string(f, path, `failures[${i}]`)) : [],
    maxAbsError: Math.max(...rows.map((r) => r.maxAbsError)),
    meanRelativeRmsError: rows.reduce((sum, r) => sum + r.relativeRmsError, 0) / rows.length,
    minSnrDb: Math.min(...rows.map((r) => r.snrDb)),
    gpuChecked,
    gpuMismatchedTensors,
    worst: [...rows].sort((a, b) => b.relativeRmsError - a.relativeRmsError).slice(0, WORST_TENSORS_SHOWN),
  };
}

export async function readEvalReport(path: string): Promise<EvalFacts> {
  const report = object(await readJsonFile(path, MAX_REPORT_BYTES, "CONFIG_INVALID"), path, "the report");
  const perplexity = number(report["perplexity"], path, "perplexity");
  if (!(perplexity >= 1)) throw invalid(path, "perplexity", "a perplexity (≥ 1)");
  const optional = (key: string) => (report[key] === undefined ? undefined : number(report[key], path, key));
  return {
    perplexity,
    protocol: string(report["protocol"], path, "protocol"),
    ctx: number(report["ctx"], path, "ctx"),
    text: basename(string(report["text"], path, "text")),
    tokens: number(report["tokens"], path, "tokens"),
    windows: optional("windows"),
    scored: optional("scored"),
  };
}

/** Two perplexities can be compared only when measured the same way on the same text. */
export function sameMeasurement(a: EvalFacts, b: EvalFacts): boolean {
  return a.protocol === b.protocol && a.ctx === b.ctx && a.text === b.text && a.tokens === b.tokens;
}

function object(value: unknown, file: string, what: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw invalid(file, what, "a JSON object");
  return value as Record<string, unknown>;
}

function string(value: unknown, file: string, key: string): string {
  if (typeof value !== "string") throw invalid(file, key, "a string");
  return value;
}

/** `lmpack verify --json` writes non-finite numbers as strings ("Infinity" for an exact tensor's SNR). */
function number(value: unknown, file: string, key: string): number {
  const parsed = typeof value === "string" && /^-?Infinity$|^NaN$/.test(value) ? Number(value) : value;
  if (typeof parsed !== "number") throw invalid(file, key, "a number");
  return parsed;
}

function invalid(file: string, key: string, expected: string): FormatError {
  return new FormatError("CONFIG_INVALID", `not a report written by lmpack verify/eval --json: ${key} is not ${expected}`, { file, expected });
}
