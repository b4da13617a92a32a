/**
 * The scale searches behind ggml's K-quant reference quantizers (ggml src/ggml-quants.c at
 * llama.cpp c392e509: `nearest_int`, `make_qx_quants`, `make_q3_quants`, `make_qkx2_quants`),
 * written to reproduce the C results bit for bit, and the fp16 and 2-bit packing steps the
 * K-quant block writers (k-quantize-affine.ts, k-quantize-symmetric.ts) share.
 *
 * How float32 is emulated: every value held here is a float32 value in a JS number, and every
 * C float operation becomes one double operation wrapped in Math.fround, in the order C
 * evaluates it (`w*x*l` is `(w*x)*l`, `a + b*c - d` is `(a + b*c) - d`). A single + − × ÷ or
 * sqrt on float32 operands, done in binary64 and then rounded to binary32, equals the binary32
 * result (53 ≥ 2·24 + 2 significand bits), subnormal results included. This matches C built
 * without FMA contraction (-ffp-contract=off) and without -ffast-math; see
 * test/fixtures/ggml-k/README.md for how the golden vectors were made.
 */

import { f32BitsToF16Bit } from "../dense/float-bits.js";

/** Elements per super-block (QK_K). */
export const QK = 256;

/** ggml's GROUP_MAX_EPS (1e-15f): a group whose largest |x| is below it quantizes to zero. */
export const GROUP_MAX_EPS = Math.fround(1e-15);

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** 1.5 · 2^52: adding and subtracting it rounds a double to an integer, ties to even. */
const ROUND_F64 = 6755399441055744;
/** 1.5 · 2^23, the float32 constant of ggml's nearest_int. */
const ROUND_F32 = 12582912;
/** nearest_int's asserted domain: within it the trick is plain round-half-to-even. */
const NEAREST_INT_DOMAIN = 4194303;

/**
 * ggml's `nearest_int(fval)`: adds 1.5·2^23 in float32 and returns the low 23 bits of the sum
 * minus 2^22. On its asserted domain |fval| ≤ 4194303 that is round-half-to-even, done here in
 * double (the same integer, since fval is a float32 value). Release builds (NDEBUG) also reach
 * it outside the domain, with inf (scale of a block of f32 subnormals) or NaN (0·inf) or
 * huge ratios; those take the bit-level path, which gives the C result: −4194304 for ±inf, 0
 * for a NaN without payload, and garbage-but-deterministic values for huge finite inputs,
 * which every caller clamps.
 */
export function nearestInt(fval: number): number {
  if (fval >= -NEAREST_INT_DOMAIN && fval <= NEAREST_INT_DOMAIN) return (fval + ROUND_F64 - ROUND_F64) | 0;
  scratchF32[0] = fval + ROUND_F32; // one float32 addition: the double sum rounds correctly to f32
  return (scratchU32[0]! & 0x7fffff) - 0x400000;
}

/**
 * GGML_FP32_TO_FP16 of a float32 value: round to nearest even, overflow to ±inf; a NaN becomes
 * 0x7E00 with its sign, as ggml's portable conversion does. Written little-endian at out[at].
 */
export function writeF16(out: Uint8Array, at: number, value: number): void {
  scratchF32[0] = value;
  const u = scratchU32[0]!;
  const h = (u & 0x7fffffff) > 0x7f800000 ? ((u >>> 16) & 0x8000) | 0x7e00 : f32BitsToF16Bit(u);
  out[at] = h & 0xff;
  out[at + 1] = h >>> 8;
}

// GGML_FP16_TO_FP32 of a field just written: the block codecs' reader.
export { readF16 } from "./block-math.js";

/** Packs 2-bit codes: byte 32c + l of qs holds codes 128c' + l + 32k at bits 2k (Q2_K, Q3_K). */
export function pack2Bit(L: Uint8Array | Int8Array, out: Uint8Array, at: number): void {
  for (let j = 0; j < QK; j += 128) {
    const q = at + j / 4;
    for (let l = 0; l < 32; l++) {
      out[q + l] = L[j + l]! | (L[j + l + 32]! << 2) | (L[j + l + 64]! << 4) | (L[j + l + 96]! << 6);
    }
  }
}

/** The first element of largest |x| in x[off, off + n) (0 when none beats 0), as C scans it. */
function signedMaxAbs(x: Float32Array, off: number, n: number): number {
  let max = 0;
  let amax = 0;
  for (let i = off; i < off + n; i++) {
    const v = x[i]!;
    const ax = Math.abs(v);
    if (ax > amax) {
      amax = ax;
      max = v;
    }
  }
  return max;
}

// Per-group scratch of makeQxQuants (groups of at most 32).
const qxW = new Float64Array(32);
const qxWX = new Float64Array(32);
const qxTrial = new Int32Array(32);

/**
 * `make_qx_quants(n, nmax, x, L, rmse_type = 1, qw = NULL)`: symmetric codes L = l + nmax,
 * l ∈ [−nmax, nmax − 1], weights x², trying 18 scales around −nmax/max and keeping the one of
 * largest (Σw·x·l)²/Σw·l². Returns the scale (0 for an all-zero group, whose codes are 0).
 * n ≤ 32.
 *
 * A trial whose codes equal the previous trial's is skipped: its sums, and so its outcome,
 * would repeat exactly (accepting it again changes nothing; rejecting it again likewise).
 */
export function makeQxQuants(n: number, nmax: number, x: Float32Array, off: number, L: Int8Array, lOff: number): number {
  const max = signedMaxAbs(x, off, n);
  if (Math.abs(max) < GROUP_MAX_EPS) {
    L.fill(0, lOff, lOff + n);
    return 0;
  }
  const fr = Math.fround;
  let iscale = fr(-nmax / max);
  let sumlx = 0;
  let suml2 = 0;
  for (let i = 0; i < n; i++) {
    const v = x[off + i]!;
    const w = fr(v * v);
    qxW[i] = w;
    qxWX[i] = fr(w * v);
    const l = Math.max(-nmax, Math.min(nmax - 1, nearestInt(fr(iscale * v))));
    qxTrial[i] = l;
    L[lOff + i] = l + nmax;
    sumlx = fr(sumlx + fr(qxWX[i]! * l));
    suml2 = fr(suml2 + fr(fr(w * l) * l));
  }
  let scale = suml2 !== 0 ? fr(sumlx / suml2) : 0; // `suml2 ? … : 0`: NaN counts as true
  let best = fr(scale * sumlx);
  for (let is = -9; is <= 9; is++) {
    if (is === 0) continue;
    iscale = fr(-fr(nmax + fr(Math.fround(0.1) * is)) / max);
    let changed = false;
    for (let i = 0; i < n; i++) {
      const l = Math.max(-nmax, Math.min(nmax - 1, nearestInt(fr(iscale * x[off + i]!))));
      if (l !== qxTrial[i]) {
        qxTrial[i] = l;
        changed = true;
      }
    }
    if (!changed) continue;
    sumlx = 0;
    suml2 = 0;
    for (let i = 0; i < n; i++) {
      const l = qxTrial[i]!;
      sumlx = fr(sumlx + fr(qxWX[i]! * l));
      suml2 = fr(suml2 + fr(fr(qxW[i]! * l) * l));
    }
    if (suml2 > 0 && fr(sumlx * sumlx) > fr(best * suml2)) {
      for (let i = 0; i < n; i++) L[lOff + i] = qxTrial[i]! + nmax;
      scale = fr(sumlx / suml2);
      best = fr(scale * sumlx);
    }
  }
  return scale;
}

/**
 * `make_q3_quants(n, nmax, x, L, do_rmse = true)`: symmetric codes from −nmax/max, then up to
 * five passes of coordinate descent, each moving one code when that raises (Σw·x·l)²/Σw·l²
 * (weights x²). Returns Σw·x·l / Σw·l², which is NaN when every x² underflows to 0, as in C.
 */
export function makeQ3Quants(n: number, nmax: number, x: Float32Array, off: number, L: Int8Array, lOff: number): number {
  const max = signedMaxAbs(x, off, n);
  if (Math.abs(max) < GROUP_MAX_EPS) {
    L.fill(0, lOff, lOff + n);
    return 0;
  }
  const fr = Math.fround;
  const iscale = fr(-nmax / max);
  let sumlx = 0;
  let suml2 = 0;
  for (let i = 0; i < n; i++) {
    const v = x[off + i]!;
    const l = Math.max(-nmax, Math.min(nmax - 1, nearestInt(fr(iscale * v))));
    L[lOff + i] = l;
    const w = fr(v * v);
    sumlx = fr(sumlx + fr(fr(w * v) * l));
    suml2 = fr(suml2 + fr(fr(w * l) * l));
  }
  for (let itry = 0; itry < 5; itry++) {
    let changed = 0;
    for (let i = 0; i < n; i++) {
      const v = x[off + i]!;
      const w = fr(v * v);
      const li = L[lOff + i]!;
      let slx = fr(sumlx - fr(fr(w * v) * li));
      if (slx > 0) {
        let sl2 = fr(suml2 - fr(fr(w * li) * li));
        const newL = Math.max(-nmax, Math.min(nmax - 1, nearestInt(fr(fr(v * sl2) / slx))));
        if (newL !== li) {
          slx = fr(slx + fr(fr(w * v) * newL));
          sl2 = fr(sl2 + fr(fr(w * newL) * newL));
          if (sl2 > 0 && fr(fr(slx * slx) * suml2) > fr(fr(sumlx * sumlx) * sl2)) {
            L[lOff + i] = newL;
            sumlx = slx;
            suml2 = sl2;
            changed++;
          }
        }
      }
    }
    if (changed === 0) break;
  }
  for (let i = lOff; i < lOff + n; i++) L[i] = L[i]! + nmax;
  return fr(sumlx / suml2);
}

/** Options of make_qkx2_quants, fixed per type. */
export interface Qkx2Params {
  readonly nmax: number;
  /** rmin, rdelta, nstep: the trial scales are (rmin + rdelta·is + nmax)/(max − min), is = 0..nstep. */
  readonly rmin: number;
  readonly rdelta: number;
  readonly nstep: number;
  /** Weigh |error| (true, Q2_K) or error² (false). */
  readonly useMad: boolean;
}

// Per-group scratch of makeQkx2Quants (groups of at most 32): x − min for the current min.
const qkxShifted = new Float64Array(32);

function shiftBy(x: Float32Array, off: number, n: number, min: number): void {
  for (let i = 0; i < n; i++) qkxShifted[i] = Math.fround(x[off + i]! - min);
}

/**
 * `make_qkx2_quants(n, nmax, x, weights, L, &the_min, Laux, rmin, rdelta, nstep, use_mad)`:
 * affine codes L ∈ [0, nmax] with x ≈ scale·L − the_min, the_min ≥ 0 (min clamped to ≤ 0).
 * Starts from nmax/(max − min), then for each trial scale refits scale and min by weighted
 * least squares and keeps the fit of smallest weighted error. Writes the_min to mins[mAt] and
 * returns the scale; an all-equal group gets codes 0 and scale 0. n ≤ 32, weights ≥ 0.
 *
 * Two shortcuts leave every result unchanged. A trial's fit and error depend on its codes
 * alone, so a trial that repeats the previous trial's codes (no better then, no better now) is
 * skipped. And the error is a float32 sum of non-negative terms, which never decreases, so its
 * loop stops as soon as it reaches the best error: `mad < best_mad` is false from there on.
 */
export function makeQkx2Quants(
  n: number,
  p: Qkx2Params,
  x: Float32Array,
  off: number,
  weights: Float32Array,
  L: Uint8Array,
  lOff: number,
  laux: Uint8Array,
  mins: Float32Array,
  mAt: number,
): number {
  const fr = Math.fround;
  const { nmax, rmin, rdelta, nstep, useMad } = p;
  let min = x[off]!;
  let max = min;
  let sumW = weights[0]!;
  let sumX = fr(sumW * min);
  for (let i = 1; i < n; i++) {
    const v = x[off + i]!;
    if (v < min) min = v;
    if (v > max) max = v;
    const w = weights[i]!;
    sumW = fr(sumW + w);
    sumX = fr(sumX + fr(w * v));
  }
  if (min > 0) min = 0;
  if (max === min) {
    L.fill(0, lOff, lOff + n);
    mins[mAt] = -min;
    return 0;
  }
  const xm = qkxShifted;
  shiftBy(x, off, n, min);
  let iscale = fr(nmax / fr(max - min));
  let scale = fr(1 / iscale);
  let bestMad = 0;
  for (let i = 0; i < n; i++) {
    const l = Math.max(0, Math.min(nmax, nearestInt(fr(iscale * xm[i]!))));
    L[lOff + i] = l;
    const diff = fr(fr(fr(scale * l) + min) - x[off + i]!);
    bestMad = fr(bestMad + fr(weights[i]! * (useMad ? Math.abs(diff) : fr(diff * diff))));
  }
  if (nstep < 1) {
    mins[mAt] = -min;
    return scale;
  }
  for (let is = 0; is <= nstep; is++) {
    // `min` is the best fit so far: both the trial scale and the codes start from it.
    iscale = fr(fr(fr(rmin + fr(rdelta * is)) + nmax) / fr(max - min));
    let changed = is === 0;
    for (let i = 0; i < n; i++) {
      const l = Math.max(0, Math.min(nmax, nearestInt(fr(iscale * xm[i]!))));
      if (l !== laux[i]) {
        laux[i] = l;
        changed = true;
      }
    }
    if (!changed) continue;
    let sumL = 0;
    let sumL2 = 0;
    let sumXL = 0;
    for (let i = 0; i < n; i++) {
      const l = laux[i]!;
      const wl = fr(weights[i]! * l);
      sumL = fr(sumL + wl);
      sumL2 = fr(sumL2 + fr(wl * l));
      sumXL = fr(sumXL + fr(wl * x[off + i]!));
    }
    const D = fr(fr(sumW * sumL2) - fr(sumL * sumL));
    if (!(D > 0)) continue;
    let thisScale = fr(fr(fr(sumW * sumXL) - fr(sumX * sumL)) / D);
    let thisMin = fr(fr(fr(sumL2 * sumX) - fr(sumL * sumXL)) / D);
    if (thisMin > 0) {
      thisMin = 0;
      thisScale = fr(sumXL / sumL2);
    }
    let mad = 0;
    let i = 0;
    if (useMad) {
      for (; i < n && !(mad >= bestMad); i++) {
        mad = fr(mad + fr(weights[i]! * Math.abs(fr(fr(fr(thisScale * laux[i]!) + thisMin) - x[off + i]!))));
      }
    } else {
      for (; i < n && !(mad >= bestMad); i++) {
        const diff = fr(fr(fr(thisScale * laux[i]!) + thisMin) - x[off + i]!);
        mad = fr(mad + fr(weights[i]! * fr(diff * diff)));
      }
    }
    if (i === n && mad < bestMad) {
      for (let k = 0; k < n; k++) L[lOff + k] = laux[k]!;
      bestMad = mad;
      scale = thisScale;
      shiftBy(x, off, n, thisMin);
      min = thisMin;
    }
  }
  mins[mAt] = -min;
  return scale;
}
