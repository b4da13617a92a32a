/**
 * Element types of dense tensors, spelled as in the safetensors format (the spelling every
 * HF tool writes in headers). `bits` is the storage width; sub-byte types are not stored
 * densely by lmpack (packed formats carry them in their own blobs), so every dtype here is
 * a whole number of bytes.
 *
 * Source of the list: huggingface/safetensors `safetensors/src/tensor.rs` (`Dtype`).
 */
export const DTYPES = {
  BOOL: { bits: 8, kind: "bool" },
  U8: { bits: 8, kind: "uint" },
  I8: { bits: 8, kind: "int" },
  F8_E5M2: { bits: 8, kind: "float8" },
  F8_E4M3: { bits: 8, kind: "float8" },
  I16: { bits: 16, kind: "int" },
  U16: { bits: 16, kind: "uint" },
  F16: { bits: 16, kind: "float" },
  BF16: { bits: 16, kind: "float" },
  I32: { bits: 32, kind: "int" },
  U32: { bits: 32, kind: "uint" },
  F32: { bits: 32, kind: "float" },
  F64: { bits: 64, kind: "float" },
  I64: { bits: 64, kind: "int" },
  U64: { bits: 64, kind: "uint" },
} as const satisfies Record<string, { bits: number; kind: "bool" | "uint" | "int" | "float" | "float8" }>;

export type DType = keyof typeof DTYPES;

/** Float dtypes lmpack converts between (exactly, round to nearest even). */
export type FloatDType = "F64" | "F32" | "F16" | "BF16";
/** The dtypes `convert --dtype` may target. */
export type TargetFloatDType = "F32" | "F16" | "BF16";

export function isDType(name: string): name is DType {
  return Object.prototype.hasOwnProperty.call(DTYPES, name);
}

export function dtypeBytes(dtype: DType): number {
  return DTYPES[dtype].bits / 8;
}

/** True for the floating-point dtypes that can be converted exactly between each other. */
export function isConvertibleFloat(dtype: DType): dtype is FloatDType {
  return dtype === "F64" || dtype === "F32" || dtype === "F16" || dtype === "BF16";
}

/** CLI spelling (`f32`, `bf16`) to dtype; undefined for anything else. */
export function parseTargetDType(text: string): TargetFloatDType | undefined {
  const table: Record<string, TargetFloatDType> = { f32: "F32", float32: "F32", f16: "F16", float16: "F16", bf16: "BF16", bfloat16: "BF16" };
  return table[text.toLowerCase()];
}

/** Product of dims as a BigInt: shapes come from untrusted headers, so never multiply as doubles. */
export function elementCount(shape: readonly number[]): bigint {
  let n = 1n;
  for (const dim of shape) n *= BigInt(dim);
  return n;
}
