export { DTYPES, dtypeBytes, elementCount, isConvertibleFloat, isDType, parseTargetDType } from "./dtype.js";
export type { DType, FloatDType, TargetFloatDType } from "./dtype.js";
export { FormatError, IoError, isLmpackError, LmpackError, UsageError, VerificationError } from "./errors.js";
export type { ErrorContext, FormatErrorCode, IoErrorCode, UsageErrorCode, VerificationErrorCode } from "./errors.js";
export { convertFloatBytes } from "./dense/convert.js";
export { bf16BitsToF32Bits, f16BitsToF32Bits, f32BitsToBf16Bits, f32BitsToF16Bit, f32BitsToF16Bits } from "./dense/float-bits.js";
