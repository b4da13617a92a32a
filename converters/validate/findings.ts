import { isLmpackError, type ConversionErrorCode, type FormatErrorCode, type IoErrorCode, type UsageErrorCode, type VerificationErrorCode } from "../../formats/errors.js";

/**
 * What `lmpack validate` reports: one Finding per problem, never only the first. The readers
 * throw typed errors and stop; the validator runs each check inside a guard that turns such an
 * error into a finding (same code, file, tensor, byte offset) and goes on with the next tensor.
 */

/** Codes only the validator raises (the readers' own codes pass through unchanged). */
export type ValidateOnlyCode =
  // config.json (or GGUF / container metadata) ↔ tensors
  | "TENSOR_UNEXPECTED" // a tensor the model config does not account for
  | "CONFIG_SHAPE_MISMATCH" // a tensor's shape is not the one the config implies
  | "QUANT_CONFIG_MISMATCH" // the quantization config says one thing, the stored arrays another (warning)
  // ONNX graph wiring
  | "GRAPH_INPUT_UNDEFINED" // a node reads a value nothing produces
  | "GRAPH_OUTPUT_UNDEFINED" // a graph output nothing produces
  // --deep numeric checks
  | "NONFINITE_VALUE" // NaN or ±Inf in a scale, codebook, outlier, norm or weight
  | "DEGENERATE_SCALE" // a scale that zeroes its group (0) or has a sign the format cannot produce
  | "DEGENERATE_WEIGHTS" // a dequantized layer that is all zeros
  | "BASE_MISMATCH" // dequantized weights far from --base (relative RMS error, spread)
  | "BITS_MISMATCH" // the stored arrays hold another bit width than the config declares
  | "NAME_CLAIM_MISMATCH" // the file or folder name claims another format than the content
  // a reader crashed with an untyped error on this input: a bug in lmpack, reported, not thrown
  | "READER_CRASH";

/** The readers' codes (formats/errors.ts), as thrown, plus the validator's own. */
export type FindingCode = FormatErrorCode | IoErrorCode | VerificationErrorCode | ConversionErrorCode | UsageErrorCode | ValidateOnlyCode;

export type Severity = "error" | "warning";

export interface Finding {
  code: FindingCode;
  severity: Severity;
  /** File the problem is in (a config.json, a shard, the container...). */
  file: string;
  tensor?: string;
  /** Absolute byte offset in `file` of the first byte at fault. */
  byteOffset?: number;
  expected?: string;
  actual?: string;
  /** What is wrong, without the location (that is in the fields above). */
  message: string;
}

export interface Where {
  file: string;
  tensor?: string | undefined;
  byteOffset?: number | undefined;
  expected?: unknown;
  actual?: unknown;
}

/** The findings of one validation run, in the order the checks ran. */
export class Findings {
  readonly list: Finding[] = [];

  add(code: FindingCode, message: string, where: Where, severity: Severity = "error"): Finding {
    const finding: Finding = { code, severity, file: where.file, message };
    if (where.tensor !== undefined) finding.tensor = where.tensor;
    if (where.byteOffset !== undefined) finding.byteOffset = where.byteOffset;
    if (where.expected !== undefined) finding.expected = printable(where.expected);
    if (where.actual !== undefined) finding.actual = printable(where.actual);
    this.list.push(finding);
    return finding;
  }

  /** A thrown error as a finding; `fallback` fills the location the error does not carry. */
  fromError(error: unknown, fallback: Where, severity: Severity = "error"): Finding {
    if (isLmpackError(error)) {
      return this.add(error.code as FindingCode, error.detail, {
        file: error.file ?? fallback.file,
        tensor: error.tensor ?? fallback.tensor,
        byteOffset: error.byteOffset === undefined ? fallback.byteOffset : Number(error.byteOffset),
        expected: error.expected,
        actual: error.actual,
      }, severity);
    }
    const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    return this.add("READER_CRASH", `the reader failed without a typed error (a bug in lmpack): ${message}`, fallback);
  }

  /** Runs `check`; a throw becomes a finding and the result undefined, so the caller goes on. */
  async guard<T>(fallback: Where, check: () => Promise<T> | T): Promise<T | undefined> {
    try {
      return await check();
    } catch (error) {
      this.fromError(error, fallback);
      return undefined;
    }
  }

  get errorCount(): number {
    return this.list.filter((f) => f.severity === "error").length;
  }

  /** Whether a finding (of any code) names this tensor: later checks skip what already failed. */
  names(tensor: string): boolean {
    return this.list.some((f) => f.tensor === tensor);
  }
}

function printable(value: unknown): string {
  if (typeof value === "string") return value;
  if (typeof value === "bigint") return value.toString();
  try {
    return JSON.stringify(value, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v)) ?? String(value);
  } catch {
    return String(value);
  }
}
