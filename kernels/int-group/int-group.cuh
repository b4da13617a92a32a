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
__device__ __forceinline__ float lq_int_group_weight(uint8_t code, float scale, uint16_t zero, uint32_t max_code, int rounding, bool keep_negative_zero, uint32_t* bad) {
  if (code > max_code) *bad |= 1u;
  // __fmul_rn / __fadd_rn: no contraction into an FMA, so the sum with +0 maps −0 to +0 exactly as
  // the reference's `s · (q − z) + 0` does.
  const float product = __fmul_rn(scale, (float)((int)code - (int)zero));
  return lq_round_to(keep_negative_zero ? product : __fadd_rn(product, 0.0f), rounding);
}
