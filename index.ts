export * as formats from "./formats/index.js";
export * as converters from "./converters/index.js";
export { openCheckpoint } from "./converters/open.js";
export { exportLmpack } from "./converters/lmpack/export.js";
export { exportSafetensors } from "./converters/safetensors/export.js";
export { FormatError, IoError, UsageError, VerificationError, isLmpackError } from "./formats/errors.js";
