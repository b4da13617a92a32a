// SignRound's grid fit on the device: formats/int-group/grid.ts fitGridDetailed, operation for
// operation, so that the GPU's scale, zero and floor flag are the CPU's bits.
//
// The CPU computes in double and rounds with Math.fround wherever torch rounds to float32. A
// double +, −, × or ÷ of two float32 values, rounded once to float32, is the correctly rounded
// float32 operation (53 ≥ 2·24 + 2: the double rounding is innocuous), so each fround(a op b)
// here is the float32 intrinsic __f<op>_rn, which nvcc neither contracts nor reorders. The
// scale-dtype rounding is grid.ts roundToScaleDtype's bit arithmetic (formats/dense/float-bits.ts),
// ported line for line rather than left to __float2half_rn, so that NaN payloads match as well.
#pragma once
#include <stdint.h>

// IntGroupParams.scaleDtype, as kernels/signround/signround-gpu.ts passes it.
#define LQ_SCALE_F32 0
#define LQ_SCALE_F16 1
#define LQ_SCALE_BF16 2

// float-bits.ts f32BitsToF16Bit: round to nearest even, subnormals, overflow to ±inf, NaN payload kept.
__device__ __forceinline__ uint32_t lq_f32_bits_to_f16_bits(uint32_t u) {
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7fffffffu;
  uint32_t h;
  if (a >= 0x7f800000u) {
    const uint32_t payload = (a >> 13) & 0x3ffu;
    h = a == 0x7f800000u ? 0x7c00u : 0x7c00u | (payload == 0 ? 0x200u : payload);
  } else if (a >= 0x477ff000u) {
    h = 0x7c00u;  // ≥ 65520 rounds to infinity
  } else if (a >= 0x38800000u) {
    h = (a - 0x38000000u + 0xfffu + ((a >> 13) & 1u)) >> 13;
  } else if (a >= 0x33000000u) {
    const uint32_t shift = 126u - (a >> 23);
    const uint32_t m = (a & 0x7fffffu) | 0x800000u;
    const uint32_t q = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    h = q + ((rem > half || (rem == half && (q & 1u) == 1u)) ? 1u : 0u);
  } else {
    h = 0;
  }
  return h | sign;
}

// float-bits.ts f16Table: the exact widening.
__device__ __forceinline__ uint32_t lq_f16_bits_to_f32_bits(uint32_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0) return __float_as_uint((float)m * 0x1p-24f) | sign;  // exact: m < 2^10
  if (e == 31) return sign | 0x7f800000u | (m << 13);
  return sign | ((e + 112u) << 23) | (m << 13);
}

// grid.ts roundToScaleDtype for a float32 value: to the storage dtype (nearest even) and back.
__device__ __forceinline__ float lq_round_to_scale_dtype(float x, int dtype) {
  const uint32_t u = __float_as_uint(x);
  if (dtype == LQ_SCALE_F16) return __uint_as_float(lq_f16_bits_to_f32_bits(lq_f32_bits_to_f16_bits(u)));
  if (dtype == LQ_SCALE_BF16) {
    // float-bits.ts f32BitsToBf16Bits: NaNs keep their top bits (quieted when those are zero).
    uint32_t b;
    if ((u & 0x7fffffffu) > 0x7f800000u) b = ((u >> 16) & 0x7fu) == 0 ? (u >> 16) | 0x40u : u >> 16;
    else b = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;  // no overflow: u ≤ 0xff800000
    return __uint_as_float(b << 16);
  }
  return x;
}

// grid.ts roundHalfEven: the nearest integer, ties to even, and +0 where rint gives −0 (the CPU's
// x + 1.5·2^52 − 1.5·2^52 never yields −0; adding +0 turns −0 into +0 and leaves the rest alone).
__device__ __forceinline__ double lq_round_half_even(double x) {
  return __dadd_rn(rint(x), 0.0);
}

struct lq_grid_fit {
  // Exactly a scaleDtype value; negative for a symmetric grid whose positive extreme dominates.
  float scale;
  // The effective zero point, an integer (2^(bits−1) when symmetric).
  float zero;
  // The scale floor replaced the fitted scale: no gradient reaches α and β.
  bool floored;
};

// fitGridDetailed(wmin_tmp, wmax_tmp, params, beta, alpha) for wmin_tmp ≤ 0 ≤ wmax_tmp (grid.ts's
// own min(·, 0) / max(·, 0) leave those unchanged); thresh = scaleThreshold(dtype) from the host.
__device__ __forceinline__ lq_grid_fit lq_fit_grid(float wmin_tmp, float wmax_tmp, float beta, float alpha, int bits, bool sym, int dtype, float thresh) {
  lq_grid_fit fit;
  if (!sym) {
    const float maxq = (float)((1 << bits) - 1);
    const float wmin = __fmul_rn(wmin_tmp, beta);
    const float wmax = __fmul_rn(wmax_tmp, alpha);
    const float raw = lq_round_to_scale_dtype(__fdiv_rn(__fsub_rn(wmax, wmin), maxq), dtype);
    fit.scale = raw < thresh ? thresh : raw;
    fit.floored = raw < thresh;
    fit.zero = (float)lq_round_half_even((double)__fdiv_rn(-wmin, fit.scale));
    return fit;
  }
  const float maxq = (float)(1 << (bits - 1));
  const float wmin_abs = -__fmul_rn(wmin_tmp, beta);
  const float wmax_abs = __fmul_rn(wmax_tmp, alpha);
  // The dominant extreme lands on code −maxq, so the scale is negative when it is the positive one.
  const float max_v = wmax_abs < wmin_abs ? wmin_abs : -wmax_abs;
  const float raw = lq_round_to_scale_dtype(__fdiv_rn(max_v, maxq), dtype);
  // grid.ts clampSignedScale: the magnitude floor keeps the sign (0 becomes +thresh).
  fit.scale = raw < 0.0f ? (raw > -thresh ? -thresh : raw) : (raw < thresh ? thresh : raw);
  fit.floored = fit.scale != raw;  // NaN != NaN, as the CPU's scale !== rawScale
  fit.zero = maxq;
  return fit;
}
