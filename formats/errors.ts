/**
 * Typed errors. Callers branch on `code`, never on message text.
 *
 * - `FormatError`: the input is malformed. Permanent: retrying cannot help.
 * - `IoError`: the file system or network failed. May be transient.
 * - `UsageError`: the command line or API call is wrong.
 * - `VerificationError`: data is well-formed but does not match what was promised
 *   (a checksum, a round trip).
 *
 * Message shape: `<file>: tensor "<name>" at byte <offset>: <what> (expected <x>, got <y>)`.
 */

export type FormatErrorCode =
  // safetensors header
  | "FILE_TOO_SMALL"
  | "HEADER_LENGTH_PAST_EOF"
  | "HEADER_TOO_LARGE"
  | "HEADER_INVALID_UTF8"
  | "HEADER_INVALID_JSON"
  | "HEADER_NOT_OBJECT"
  | "HEADER_TOO_DEEP"
  | "DUPLICATE_KEY"
  | "METADATA_INVALID"
  | "TENSOR_INVALID_INFO"
  | "UNKNOWN_DTYPE"
  | "SHAPE_INVALID"
  | "SHAPE_OVERFLOW"
  | "SHAPE_SIZE_MISMATCH"
  | "OFFSETS_REVERSED"
  | "OFFSETS_OVERLAP"
  | "OFFSETS_GAP"
  | "OFFSET_PAST_EOF"
  | "DATA_TRUNCATED"
  | "TRAILING_BYTES"
  // checkpoints and configs
  | "CONFIG_INVALID"
  | "INDEX_INVALID"
  | "TENSOR_MISSING"
  | "TENSOR_DUPLICATE"
  | "LAYOUT_UNKNOWN"
  // Hub listings (a repo tree whose paths or ids could not be trusted)
  | "HUB_LISTING_INVALID"
  // lmpack container
  | "CONTAINER_BAD_MAGIC"
  | "CONTAINER_BAD_VERSION"
  | "CONTAINER_TRUNCATED"
  | "CONTAINER_HEADER_INVALID"
  | "CONTAINER_BLOB_INVALID"
  // conversions
  | "DTYPE_UNSUPPORTED"
  // second-order quantization (GPTQ, SpQR, VPTQ): the damped Hessian has a non-positive pivot
  | "HESSIAN_NOT_PD"
  // packed layers (GPTQ / AutoRound / AWQ ...)
  | "PACKED_DTYPE_MISMATCH"
  | "PACKED_SHAPE_MISMATCH"
  | "PACKED_VALUE_INVALID"
  | "QUANT_CONFIG_INVALID"
  // GGUF container (converters/gguf); GGUF also raises the generic DUPLICATE_KEY, TENSOR_DUPLICATE,
  // UNKNOWN_DTYPE, SHAPE_INVALID, SHAPE_OVERFLOW, OFFSETS_OVERLAP, OFFSET_PAST_EOF, HEADER_INVALID_UTF8
  | "GGUF_BAD_MAGIC"
  | "GGUF_BAD_VERSION"
  | "GGUF_TRUNCATED"
  | "GGUF_COUNT_TOO_LARGE"
  | "GGUF_STRING_TOO_LONG"
  | "GGUF_ARRAY_TOO_LONG"
  | "GGUF_TOO_DEEP"
  | "GGUF_VALUE_TYPE_INVALID"
  | "GGUF_BOOL_INVALID"
  | "GGUF_ALIGNMENT_INVALID"
  | "GGUF_NAME_TOO_LONG"
  | "GGUF_ROW_NOT_BLOCKS"
  | "GGUF_OFFSET_MISALIGNED";

export interface ErrorContext {
  file?: string;
  tensor?: string;
  byteOffset?: number | bigint;
  expected?: unknown;
  actual?: unknown;
  cause?: unknown;
}

/** Base class: every error lmpack throws on purpose is one of these. */
export abstract class LmpackError extends Error {
  abstract readonly code: string;
  /** Process exit code the CLI uses for this class of error. */
  abstract readonly exitCode: number;
  readonly file: string | undefined;
  readonly tensor: string | undefined;
  readonly byteOffset: number | bigint | undefined;
  readonly expected: unknown;
  readonly actual: unknown;
  readonly detail: string;

  constructor(detail: string, context: ErrorContext = {}) {
    super(formatMessage(detail, context), context.cause === undefined ? undefined : { cause: context.cause });
    this.detail = detail;
    this.file = context.file;
    this.tensor = context.tensor;
    this.byteOffset = context.byteOffset;
    this.expected = context.expected;
    this.actual = context.actual;
  }

  toJSON(): Record<string, unknown> {
    return {
      name: this.name,
      code: this.code,
      message: this.message,
      file: this.file,
      tensor: this.tensor,
      byteOffset: this.byteOffset === undefined ? undefined : Number(this.byteOffset),
      expected: printable(this.expected),
      actual: printable(this.actual),
    };
  }
}

export class FormatError extends LmpackError {
  override readonly name = "FormatError";
  readonly exitCode = 2;
  constructor(readonly code: FormatErrorCode, detail: string, context: ErrorContext = {}) {
    super(detail, context);
  }
}

export type IoErrorCode = "NOT_FOUND" | "READ_FAILED" | "WRITE_FAILED" | "OUTPUT_EXISTS" | "NETWORK" | "HUB_NOT_FOUND" | "HUB_AUTH" | "HUB_OFFLINE_MISS";

export class IoError extends LmpackError {
  override readonly name = "IoError";
  readonly exitCode = 2;
  constructor(readonly code: IoErrorCode, detail: string, context: ErrorContext = {}) {
    super(detail, context);
  }
}

export type UsageErrorCode = "BAD_ARGUMENT" | "BAD_SOURCE";

export class UsageError extends LmpackError {
  override readonly name = "UsageError";
  readonly exitCode = 1;
  constructor(readonly code: UsageErrorCode, detail: string, context: ErrorContext = {}) {
    super(detail, context);
  }
}

export type VerificationErrorCode = "CHECKSUM_MISMATCH" | "ROUND_TRIP_MISMATCH";

export class VerificationError extends LmpackError {
  override readonly name = "VerificationError";
  readonly exitCode = 3;
  constructor(readonly code: VerificationErrorCode, detail: string, context: ErrorContext = {}) {
    super(detail, context);
  }
}

export type ConversionErrorCode =
  // the target layout cannot hold the source exactly (a v1 zero point of 0, act-order into AWQ, ...)
  | "NOT_REPRESENTABLE"
  // the target does not support the source at all (3-bit AWQ, ...)
  | "UNSUPPORTED_TARGET";

/**
 * A well-formed source that cannot be written to the requested target without loss. Carries
 * the layer and the reason; the CLI suggests `--allow-requant`.
 */
export class ConversionError extends LmpackError {
  override readonly name = "ConversionError";
  readonly exitCode = 2;
  constructor(readonly code: ConversionErrorCode, detail: string, context: ErrorContext = {}) {
    super(detail, context);
  }
}

export type KernelErrorCode =
  // no libcuda.so.1, no device, or the driver refused to start (cuInit)
  | "NO_DEVICE"
  // a CUDA driver call failed; the message names the call and CUresult
  | "DRIVER_ERROR"
  // the kernel image (fatbin) is missing or has no kernel for this device
  | "MODULE_MISSING"
  // device memory exhausted (CUDA_ERROR_OUT_OF_MEMORY)
  | "OUT_OF_MEMORY"
  // the kernel's own status word reports invalid data (an index or code out of range)
  | "KERNEL_STATUS"
  // the host refused the launch: a shape or index the kernel must never see
  | "LAUNCH_REFUSED"
  // a kernel kind forced by the caller (tests, benches) does not take this shape; without the
  // forcing, another kind would have been chosen
  | "KIND_UNAVAILABLE";

/**
 * The GPU engine failed (kernels/): no device, a driver call, or a kernel's status report. Names
 * the format, the shape and the CUDA code. Permanent for a given machine and input, except
 * OUT_OF_MEMORY, which another job's memory use can cause.
 */
export class KernelError extends LmpackError {
  override readonly name = "KernelError";
  readonly exitCode = 2;
  constructor(readonly code: KernelErrorCode, detail: string, context: ErrorContext = {}) {
    super(detail, context);
  }
}

/** Cross-copy-safe guard (does not rely on `instanceof`, which fails across package copies). */
export function isLmpackError(value: unknown): value is LmpackError {
  return value instanceof Error && typeof (value as { code?: unknown }).code === "string" && typeof (value as { exitCode?: unknown }).exitCode === "number" && "detail" in value;
}

function formatMessage(detail: string, context: ErrorContext): string {
  const place: string[] = [];
  if (context.tensor !== undefined) place.push(`tensor "${context.tensor}"`);
  if (context.byteOffset !== undefined) place.push(`at byte ${context.byteOffset}`);
  let where = context.file !== undefined ? `${context.file}: ` : "";
  if (place.length > 0) where += `${place.join(" ")}: `;
  let tail = "";
  if (context.expected !== undefined && context.actual !== undefined) tail = ` (expected ${printable(context.expected)}, got ${printable(context.actual)})`;
  else if (context.expected !== undefined) tail = ` (expected ${printable(context.expected)})`;
  else if (context.actual !== undefined) tail = ` (got ${printable(context.actual)})`;
  return where + detail + tail;
}

function printable(value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value === "string") return value;
  if (typeof value === "bigint") return value.toString();
  try {
    return JSON.stringify(value, (_k, v) => (typeof v === "bigint" ? v.toString() : v));
  } catch {
    return String(value);
  }
}
