import { UsageError } from "../errors.js";

/**
 * Small floating-point formats without Inf/NaN ("FPx", ZeroQuant(4+2) / FP6-LLM / torchao):
 * `nbits = 1 + ebits + mbits`; a code sits in the low bits of a byte, sign at bit ebits+mbits.
 *
 *   exponent field e = 0:  (−1)^s · m / 2^mbits · 2^(1 − bias)          (subnormal)
 *   otherwise:             (−1)^s · (1 + m / 2^mbits) · 2^(e − bias)
 *   bias = 2^(ebits−1) − 1; the top exponent is an ordinary binade (no Inf/NaN codes)
 *
 * Source: pytorch/ao@aa252872 torchao/prototype/custom_fp_utils.py; ../shared/ref/signround-gptq-fp6.md B1.
 */
export interface FpxFormat {
  /** Canonical name, "e3m2". */
  name: string;
  ebits: number;
  mbits: number;
  /** 1 + ebits + mbits. */
  nbits: number;
  bias: number;
  /** Largest magnitude: 2^(2^ebits − 1 − bias) · (2 − 2^−mbits). */
  maxNormal: number;
  /** Smallest normal magnitude 2^(1 − bias). */
  minNormal: number;
  /** Code of −0: the sign bit alone. */
  signMask: number;
  /** Decoded value of every code (index = code), as f32. */
  values: Float32Array;
}

/** The formats the CLI names; FP6-LLM tests e3m2 and e2m2, torchao also e2m3 and e3m1. */
export const NAMED_FORMATS = ["e3m2", "e2m3", "e3m1", "e2m2"] as const;
export type NamedFormat = (typeof NAMED_FORMATS)[number];

/** Widths the tensor-core layout packs (regions of 1, 2 and 4 bits; torchao allows 2..7). */
export const MIN_NBITS = 3;
export const MAX_NBITS = 7;

const cache = new Map<string, FpxFormat>();

/** The format with `ebits` exponent and `mbits` mantissa bits (cached). */
export function fpxFormat(ebits: number, mbits: number): FpxFormat {
  const name = `e${ebits}m${mbits}`;
  const hit = cache.get(name);
  if (hit !== undefined) return hit;
  const nbits = 1 + ebits + mbits;
  if (!Number.isInteger(ebits) || !Number.isInteger(mbits) || ebits < 1 || mbits < 0 || nbits < MIN_NBITS || nbits > MAX_NBITS) {
    throw new UsageError("BAD_ARGUMENT", `FPx format ${name} is not supported (need ebits ≥ 1, mbits ≥ 0, ${MIN_NBITS} ≤ 1 + ebits + mbits ≤ ${MAX_NBITS})`, { actual: name });
  }
  const bias = (1 << (ebits - 1)) - 1;
  const format: FpxFormat = {
    name,
    ebits,
    mbits,
    nbits,
    bias,
    maxNormal: 2 ** ((1 << ebits) - 1 - bias) * (2 - 2 ** -mbits),
    minNormal: 2 ** (1 - bias),
    signMask: 1 << (ebits + mbits),
    values: decodeTable(ebits, mbits, bias),
  };
  cache.set(name, format);
  return format;
}

/** Parses "e3m2" (any case); UsageError otherwise. */
export function parseFormat(text: string): FpxFormat {
  const match = /^e(\d)m(\d)$/i.exec(text.trim());
  if (match === null) throw new UsageError("BAD_ARGUMENT", `FPx format must look like e3m2, got "${text}"`, { expected: NAMED_FORMATS.join(" | "), actual: text });
  return fpxFormat(Number(match[1]), Number(match[2]));
}

function decodeTable(ebits: number, mbits: number, bias: number): Float32Array {
  const count = 1 << (1 + ebits + mbits);
  const signMask = count >> 1;
  const values = new Float32Array(count);
  for (let code = 0; code < count; code++) {
    const e = (code >> mbits) & ((1 << ebits) - 1);
    const m = code & ((1 << mbits) - 1);
    const magnitude = e === 0 ? (m / 2 ** mbits) * 2 ** (1 - bias) : (1 + m / 2 ** mbits) * 2 ** (e - bias);
    // −0 for the bare sign bit, as the reference decoder gives it.
    values[code] = code & signMask ? -magnitude : magnitude;
  }
  return values;
}
