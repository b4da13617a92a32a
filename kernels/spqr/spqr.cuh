// SpQR (Dettmers et al. 2023; Vahe1994/SpQR @ 543d10e5, ../shared/ref/vptq-spqr.md part 2), the
// representation of formats/spqr/types.ts as the kernels receive it (unpacked, one array per
// field, permuted column space). m rows, n columns, G = n / beta2 column groups, T = m / beta1
// row groups; the Hugging Face layout holds bits 3, beta1 = beta2 = 16 only:
//
//   codes        uint8   [m][n]     q, 0 … 2^bits − 1, at stored column j
//   scale_codes  uint8   [G][m]     qs, first-order scale code of (row r, group g)
//   zero_codes   uint8   [G][m]     qz, first-order zero code
//   stats        ushort4 [G][T]     fp16 bits (s_s, z_s, s_z, z_z) of tile (g, r / beta1), in the
//                                   order of the HF layout's second-order word SO
//   row_offsets  int32   [m + 1]    outliers of row r: entries row_offsets[r] … row_offsets[r+1] − 1
//   cols         uint16  [nnz]      stored column of each outlier, non-decreasing within a row
//   values       uint16  [nnz]      fp16 bits of each outlier value v
//   inv_perm     uint16  [n]        stored column of original column jo (perm⁻¹), or null
//
//   s  = h(s_s · h(qs − s_z))                   first-order scale of (row r, group g)
//   z  = h(z_s · h(qz − z_z))                   first-order zero
//   Wp = h(s · h(q − z)) + v₁ + v₂ + …          the outliers at (r, j) ADDED in float32, in CSR order
//   W[r][perm[j]] = h(Wp[r][j])                 one rounding to fp16 at the end
//
// h() is one fp16 operation as formats/spqr/half.ts (and CUDA's host __half) does it: compute in
// float32, round to fp16, nearest even. An outlier's dense code encodes 0, which decodes to
// s·(q₀ − z) ≠ 0 in general; both SpQR decoders add, so the sum is what the format means.
// Bits per weight: bits + (3 + 3)/beta2 + 2·(16 + 16)/(beta1·beta2) + 32 · outlier share
// (3.625 + 32 · share at 3-bit 16×16; the HF words store the dense part in exactly 4).
#pragma once
#include <stdint.h>
#include <string.h>
#include <cuda_fp16.h>
#include "../common/half2-bits.cuh"

// Rows per PTCSR block (spqr_cuda.cpp init_ptcsr), whatever beta1 is.
#define LQ_SPQR_PTCSR_ROWS 16

// f32 → fp16 (nearest even) → f32: the rounding that closes each fp16 operation.
__device__ __forceinline__ float lq_spqr_h(float x) {
  return __half2float(__float2half_rn(x));
}

__device__ __forceinline__ float lq_spqr_f16(uint16_t bits) {
  return __half2float(__ushort_as_half(bits));
}

// h(scale · h(code − zero)): the statistics (code qs or qz, the tile's fp16 pair) and the weights
// (code q, the row's s and z) decode through the same two fp16 operations. __fsub_rn and
// __fmul_rn round in float32 first, as half.ts does, and are never contracted into an FMA, which
// would skip that rounding. (code − zero is exact before it: an integer ≤ 255 and an fp16.)
__device__ __forceinline__ float lq_spqr_grid(uint32_t code, float scale, float zero) {
  return lq_spqr_h(__fmul_rn(scale, lq_spqr_h(__fsub_rn((float)code, zero))));
}


// lq_spqr_grid for two (code, scale, zero) at once in fp16x2 arithmetic, bit for bit the same:
// `biased` holds two fp16 0x6400 | code = 1024 + code (code ≤ 255), so subtracting 1024 gives the
// code exactly; an fp16 subtraction or product rounds the exact result once, which equals rounding
// it to float32 first and then to fp16 (24 ≥ 2·11 + 2 bits: double rounding is innocuous for − and
// ×, and the product of two fp16 is exact in float32 anyway). The _rn forms are never contracted.
__device__ __forceinline__ __half2 lq_spqr_grid2(uint32_t biased, __half2 scale, __half2 zero) {
  const __half2 code = __hsub2_rn(lq_bits_as_half2(biased), lq_bits_as_half2(0x64006400u));
  return __hmul2_rn(__hsub2_rn(code, zero), scale);
}

// The dense value of one weight; `*bad` gets bit 1 for a code wider than the format's bits (the
// reference has no level for it). so = (s_s, z_s, s_z, z_z) of the weight's tile.
__device__ __forceinline__ float lq_spqr_dense(uint8_t code, uint8_t scale_code, uint8_t zero_code, ushort4 so, uint32_t max_code, uint32_t* bad) {
  if (code > max_code) *bad |= 1u;
  const float s = lq_spqr_grid(scale_code, lq_spqr_f16(so.x), lq_spqr_f16(so.z));
  const float z = lq_spqr_grid(zero_code, lq_spqr_f16(so.y), lq_spqr_f16(so.w));
  return lq_spqr_grid(code, s, z);
}

// Wp at stored column j: `wp` plus every outlier of the row at column j, found by binary search
// in entries [lo, hi) (sorted by column), added one by one in entry order. Only equal columns
// meet in one sum, so entry order among them is all of CSR order that matters; the host
// stable-sorts rows that are not sorted, which keeps it. __fadd_rn: each add rounds to float32,
// as the reference's Float32Array does.
__device__ __forceinline__ float lq_spqr_add_outliers(float wp, uint32_t j, const uint16_t* cols, const uint16_t* values, int64_t lo, int64_t hi) {
  int64_t first = lo, last = hi;
  while (first < last) {
    const int64_t mid = first + (last - first) / 2;
    if (cols[mid] < j) first = mid + 1;
    else last = mid;
  }
  for (int64_t k = first; k < hi && cols[k] == j; k++) wp = __fadd_rn(wp, lq_spqr_f16(values[k]));
  return wp;
}

// PTCSR quirk of the original host dequantizer (formats/spqr/reference.ts): it walks the zero
// padding of a row shorter than its 16-row block's longest, and each padding entry adds +0 at
// stored column 0 after all outliers, so a −0 there becomes +0. Whether row r is such a row;
// reads row_offsets of its block only (the caller ensures m is a multiple of 16).
__device__ __forceinline__ bool lq_spqr_ptcsr_padded(const int32_t* row_offsets, int64_t r) {
  const int64_t block = r - r % LQ_SPQR_PTCSR_ROWS;
  int64_t width = 0;
#pragma unroll 1
  for (int64_t k = block; k < block + LQ_SPQR_PTCSR_ROWS; k++) {
    const int64_t count = (int64_t)row_offsets[k + 1] - row_offsets[k];
    width = count > width ? count : width;
  }
  return (int64_t)row_offsets[r + 1] - row_offsets[r] < width;
}
