// Integer groups (GPTQ / AWQ / AutoRound / SignRound / RTN), the representation of
// formats/int-group/types.ts, as the kernels receive it (unpacked, one array per field):
//
//   codes   uint8  [N][K]   q, 0 … 2^bits − 1
//   scales  float  [G][N]   s, the scale dtype's values widened to float32
//   zeros   uint16 [G][N]   z, the effective zero point
//   g_idx   int32  [K]      group of column k (act-order), or null: g = k / group_size
//
//   W[n][k] = round_to_scale_dtype(s[g][n] · (q[n][k] − z[g][n])),  g = g_idx[k] or k / group_size
//
// (formats/int-group/reference.ts "scale-dtype" precision: s·(q − z) is exact in float32, a 16-bit
// scale times a ≤ 9-bit integer, so the rounding to the scale's dtype is the only one; −0 is
// written as +0, as the GPTQ loaders' matmul observes it.) Bits per weight: bits + 16·2/group size
// with fp16 scales and packed zeros in the source layouts; here the arrays are unpacked.
#pragma once
#include <stdint.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

// Output rounding, the reference's DequantPrecision × scale dtype.
#define LQ_ROUND_F32 0
#define LQ_ROUND_F16 1
#define LQ_ROUND_BF16 2

__device__ __forceinline__ float lq_round_to(float x, int rounding) {
  if (rounding == LQ_ROUND_F16) return __half2float(__float2half_rn(x));
  if (rounding == LQ_ROUND_BF16) return __bfloat162float(__float2bfloat16_rn(x));
  return x;
}

// One weight; `*bad` gets status bits for an out-of-range code. keep_negative_zero: AWQ's
// dequantize_gemm keeps the IEEE −0 of a negative scale times 0; GPTQ's matmul observes +0.
// (The per-element path; the vector paths below compute the same bits.)
__device__ __forceinline__ float lq_int_group_weight(uint8_t code, float scale, uint16_t zero, uint32_t max_code, int rounding, bool keep_negative_zero, uint32_t* bad) {
  if (code > max_code) *bad |= 1u;
  // __fmul_rn / __fadd_rn: no contraction into an FMA, so the sum with +0 maps −0 to +0 exactly as
  // the reference's `s · (q − z) + 0` does.
  const float product = __fmul_rn(scale, (float)((int)code - (int)zero));
  return lq_round_to(keep_negative_zero ? product : __fadd_rn(product, 0.0f), rounding);
}

// q − z as a float32 without a conversion instruction (I2F issues at 16 per clock per SM on
// sm_80 … sm_90, a quarter or less of FP32's rate, and was one of three conversions per weight).
// For an integer 0 ≤ v < 2^23 the float32 with bits 0x4B000000 | v is 2^23 + v, and the
// difference of two such values is v₁ − v₂ exactly (both lie in [2^23, 2^24): Sterbenz), +0 when
// they are equal, as (float)(v₁ − v₂) gives it. Codes are bytes and zeros 16-bit: both fit.
__device__ __forceinline__ float lq_int_group_biased(uint32_t v) { return __uint_as_float(0x4B000000u | v); }
// Byte j (0 … 3) of `word` as lq_int_group_biased(byte): one PRMT (j a constant once unrolled).
__device__ __forceinline__ float lq_int_group_biased_byte(uint32_t word, int j) {
  return __uint_as_float(__byte_perm(word, 0x4B000000u, 0x7540u | (uint32_t)j));
}

// s·(q − z) + zero_bias, unrounded: the biased values of lq_int_group_biased. zero_bias is +0
// (maps −0 to +0, the reference's default) or −0 (keep_negative_zero: x + (−0) is x for every x),
// so the same two IEEE operations as lq_int_group_weight's product and sum give the same bits.
__device__ __forceinline__ float lq_int_group_product(float biased_code, float scale, float biased_zero, float zero_bias) {
  return __fadd_rn(__fmul_rn(scale, __fsub_rn(biased_code, biased_zero)), zero_bias);
}

// Rounds two products to the scale dtype in place (the float32 values that verify and float32
// output use) and returns their fp16 bits, w0 in the low half (the fp16 output: RNE from the
// rounded float32, as lq_store does). One packed cvt.rn.{f16,bf16}x2.f32 per pair instead of
// two or three scalar conversions per weight; with F16 rounding the fp16 output is the rounded
// value itself, fp16(f32(fp16(x))) = fp16(x).
template <int ROUNDING>
__device__ __forceinline__ uint32_t lq_int_group_round_pair(float& w0, float& w1) {
  if constexpr (ROUNDING == LQ_ROUND_F16) {
    const __half2 h = __floats2half2_rn(w0, w1);
    w0 = __low2float(h);
    w1 = __high2float(h);
    return *reinterpret_cast<const uint32_t*>(&h);
  } else {
    if constexpr (ROUNDING == LQ_ROUND_BF16) {
      const __nv_bfloat162 b = __floats2bfloat162_rn(w0, w1);
      const uint32_t bits = *reinterpret_cast<const uint32_t*>(&b);
      // bf16 → float32 is exact: the bits move up 16 places.
      w0 = __uint_as_float(bits << 16);
      w1 = __uint_as_float(bits & 0xFFFF0000u);
    }
    const __half2 h = __floats2half2_rn(w0, w1);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
}

// The bits a code must not have: max_code is 2^bits − 1 (launch.ts's maxCode), so a code is in
// range when code & ~max_code is 0, and four codes are checked with one AND (of the OR of all a
// thread's code words, at the end). 0 for max_code ≥ 255 (every byte is a code).
__device__ __forceinline__ uint32_t lq_int_group_code_excess(uint32_t max_code) {
  return max_code >= 0xFFu ? 0u : 0x01010101u * (~max_code & 0xFFu);
}
__device__ __forceinline__ bool lq_int_group_max_code_is_mask(uint32_t max_code) {
  return max_code >= 0xFFu || (max_code & (max_code + 1u)) == 0u;
}

// n / d for 0 ≤ n < 2^32 and a d ≥ 1 known at launch, without a division per use: Granlund and
// Montgomery's method ("Division by invariant integers using multiplication", 1994, fig. 4.1),
// with l = ⌈log2 d⌉, m = ⌊2^32·(2^l − d)/d⌋ + 1 (m < 2^32), and
// n / d = (t + ((n − t) >> min(l, 1))) >> max(l − 1, 0), t = ⌊m·n / 2^32⌋, exact for every n.
// For d = 2^l, m = 1 and t = 0: n >> l.
struct lq_divider {
  uint32_t m, shift1, shift2;
};
__device__ __forceinline__ lq_divider lq_make_divider(uint32_t d) {
  const uint32_t l = d <= 1u ? 0u : 32u - (uint32_t)__clz((int)(d - 1u));
  const uint64_t numerator = ((1ull << l) - d) << 32;
  return {(uint32_t)(numerator / d) + 1u, l < 1u ? l : 1u, l > 1u ? l - 1u : 0u};
}
__device__ __forceinline__ uint32_t lq_divide(uint32_t n, const lq_divider& d) {
  const uint32_t t = __umulhi(d.m, n);
  return (t + ((n - t) >> d.shift1)) >> d.shift2;
}
