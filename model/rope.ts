import { FormatError } from "../formats/errors.js";
import type { ModelConfig } from "../converters/hf/config.js";

/**
 * Rotary position embedding as transformers' Llama applies it (modeling_rope_utils.py,
 * `apply_rotary_pos_emb` with `rotate_half`): dimension i < headDim/2 pairs with i + headDim/2,
 * not with its neighbour as in the original RoFormer/llama.cpp layout.
 *
 * Inverse frequencies and angles are computed in float32 as transformers does
 * (`inv_freq` from `base ** (arange(0, dim, 2) / dim)`, then `inv_freq · position` as a float32
 * product), so that the angles, and therefore the logits, agree with the PyTorch reference to
 * float32 rounding instead of drifting with the position.
 */

export interface RopeTable {
  headDim: number;
  positions: number;
  /** [positions][headDim/2] */
  cos: Float64Array;
  sin: Float64Array;
}

/** `inv_freq` for the config's rope type: default, "linear" or "llama3" (others are refused, naming the file). */
export function inverseFrequencies(config: ModelConfig, file: string): Float32Array {
  const dim = config.headDim;
  const inv = new Float32Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) {
    const exponent = Math.fround(Math.fround(2 * i) / dim);
    inv[i] = Math.fround(1 / Math.fround(Math.pow(config.ropeTheta, exponent)));
  }
  const scaling = config.ropeScaling;
  if (scaling === undefined) return inv;
  const type = scaling["rope_type"] ?? scaling["type"];
  const number = (key: string): number => {
    const value = scaling[key];
    if (typeof value !== "number" || !(value > 0)) throw new FormatError("CONFIG_INVALID", `rope scaling "${String(type)}" needs a positive "${key}"`, { file, actual: value });
    return value;
  };
  if (type === "linear") {
    const factor = number("factor");
    return inv.map((f) => Math.fround(f / factor));
  }
  if (type === "llama3") {
    // transformers `_compute_llama3_parameters`: long wavelengths divided by the factor, short
    // ones kept, the band between interpolated smoothly.
    const factor = number("factor");
    const low = number("low_freq_factor");
    const high = number("high_freq_factor");
    const original = number("original_max_position_embeddings");
    const lowWavelen = original / low;
    const highWavelen = original / high;
    return inv.map((f) => {
      const wavelen = (2 * Math.PI) / f;
      if (wavelen < highWavelen) return f;
      if (wavelen > lowWavelen) return Math.fround(f / factor);
      const smooth = (original / wavelen - low) / (high - low);
      return Math.fround((1 - smooth) * (f / factor) + smooth * f);
    });
  }
  throw new FormatError("CONFIG_INVALID", `rope scaling type "${String(type)}" is not supported (default, linear and llama3 are)`, { file, actual: type, expected: ["default", "linear", "llama3"] });
}

/** cos/sin of every (position, frequency) for positions 0 … count−1. */
export function ropeTable(inv: Float32Array, headDim: number, count: number): RopeTable {
  const half = headDim / 2;
  const cos = new Float64Array(count * half);
  const sin = new Float64Array(count * half);
  for (let p = 0; p < count; p++) {
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(inv[i]! * p);
      cos[p * half + i] = Math.fround(Math.cos(angle));
      sin[p * half + i] = Math.fround(Math.sin(angle));
    }
  }
  return { headDim, positions: count, cos, sin };
}

/**
 * Rotates `heads` heads of every token in x ([tokens][heads·headDim] row-major, token t at
 * position t) in place: x₁' = x₁·cos − x₂·sin, x₂' = x₂·cos + x₁·sin for the two halves.
 */
export function applyRope(x: Float64Array, tokens: number, heads: number, table: RopeTable): void {
  const { headDim, cos, sin } = table;
  const half = headDim / 2;
  if (tokens > table.positions) throw new RangeError(`rope table covers ${table.positions} positions, ${tokens} asked`);
  for (let t = 0; t < tokens; t++) {
    for (let h = 0; h < heads; h++) {
      const at = (t * heads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const c = cos[t * half + i]!;
        const s = sin[t * half + i]!;
        const a = x[at + i]!;
        const b = x[at + half + i]!;
        x[at + i] = a * c - b * s;
        x[at + half + i] = b * c + a * s;
      }
    }
  }
}
