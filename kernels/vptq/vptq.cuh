// VPTQ (Liu et al. 2024, arXiv:2409.17066; microsoft/VPTQ @ 950716d7 csrc/kernels/dequant.cuh),
// the representation of formats/vptq/types.ts as the generic kernel receives it (unpacked, one
// array per field; launch.ts narrows the indices to uint16 and inverts the permutation on the
// host; the columns kernel gets the indices re-laid by original column instead, vptq.cu):
//
//   centroids          T      [G][k][vl]         main codebooks (T = __half or __nv_bfloat16 bits)
//   res_centroids      T      [G][k_res][vl]     residual codebooks, or null (no residual)
//   main_indices       uint16 [G][num_idx][gs]   index of vector (g, r, e) in codebook g
//   res_indices        uint16 [G][num_idx][gs]   its residual index, or null
//   outlier_centroids  T      [k_o][ovl]         outlier codebook, or null (outlier_size = 0)
//   outlier_indices    uint16 [num_oidx][os]
//   inv_perm           uint16 [in]               Q column of original column j (perm[inv_perm[j]] = j),
//                                                or null: k = j
//   weight_scale/bias  T      [in]               by ORIGINAL column j, or null (no norm)
//
//   num_idx = ceil(out / vl), num_oidx = ceil(out / ovl), in = os + G·gs
//
//   Q[i][k], row i, Q column k (the first os columns are the outliers):
//     k < os:  c = outlier_centroids[outlier_indices[i / ovl][k]][i % ovl]
//     else:    g = (k − os) / gs, e = (k − os) % gs, r = i / vl, t = i % vl
//              c = centroids[g][main[g][r][e]][t], then with a residual
//              c = h(c + res_centroids[g][res[g][r][e]][t])                 (__hadd2)
//   W[i][j] = Q[i][inv_perm[j]], then with norm, s = weight_scale[j], b = weight_bias[j]:
//     "cuda":   W = h(c·s + b)       ONE rounding (the VPTQ kernel's __hfma2; __hfma on outliers)
//     "torch":  W = h(h(c·s) + b)    two roundings (ops.dequant, vLLM's generic path)
//   h = round to T (fp16 or bf16), nearest even. Rows i ≥ out (padding) are never written.
//   Bit for bit reference.ts wherever the intermediates are finite. Where one is −∞ (main + res
//   or torch's h(c·s) overflowing, which no real layer does) the device gives IEEE's −∞ and
//   reference.ts's roundSum NaN (its TwoSum error is NaN); any NaN is the device's canonical one.
//
// (formats/vptq/reference.ts, ../shared/ref/vptq-spqr.md 1.6.) Bits per weight: (log2 k + log2
// k_res) / vl of index, e.g. 3 for v8-k65536-256, plus the codebooks (16·vl·(k + k_res)·G bits,
// 0.5 bit on a 4096×4096 layer) and the norm (32 bits per column); here the arrays are unpacked.
#pragma once
#include <stdint.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

// bf16 arithmetic below sm_80 is emulated in float32 by cuda_bf16.hpp (__hfma becomes
// __float2bfloat16(fmaf(...)): a double rounding); every image we build is sm_80 or newer, where
// fma.rn.bf16 rounds once. Refuse to compile anything else rather than round differently.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#error "kernels/vptq needs sm_80 or newer: bf16 FMA must round once"
#endif

// Rounding of the norm step, formats/vptq/reference.ts VptqSemantics.
#define LQ_VPTQ_CUDA 0
#define LQ_VPTQ_TORCH 1

__device__ __forceinline__ float lq_vptq_widen(__half x) { return __half2float(x); }
__device__ __forceinline__ float lq_vptq_widen(__nv_bfloat16 x) { return __bfloat162float(x); }

// The centroid value of Q[i][k] before the norm (T = __half or __nv_bfloat16). __hadd_rn, not
// __hadd: an add.rn is never contracted with anything (the plain add.f16 may be fused).
template <typename T>
__device__ __forceinline__ T lq_vptq_centroid(const T* __restrict__ main_vector, const T* __restrict__ res_vector, int64_t t) {
  return res_vector != nullptr ? __hadd_rn(main_vector[t], res_vector[t]) : main_vector[t];
}

// One weight from its centroid value c; `norm` false: W = c, unrounded (reference.ts writes the
// column as is). fma.rn.{f16,bf16} computes c·s + b exactly and rounds once, subnormals
// included, as reference.ts's roundSum; the torch pair uses the _rn forms so that the compiler
// cannot fuse the multiply and the add into that same FMA.
template <typename T>
__device__ __forceinline__ float lq_vptq_weight(T c, bool norm, T s, T b, int semantics) {
  if (!norm) return lq_vptq_widen(c);
  return lq_vptq_widen(semantics == LQ_VPTQ_TORCH ? __hadd_rn(__hmul_rn(c, s), b) : __hfma(c, s, b));
}

// The 16-bit pair type of T, for the fast path's two-at-a-time arithmetic: __hadd2_rn,
// __hmul2_rn and __hfma2 round each half exactly as the scalar __hadd_rn, __hmul_rn and __hfma
// above (elementwise add.rn / mul.rn / fma.rn), so pairing changes no bit.
template <typename T> struct lq_vptq_pair_of;
template <> struct lq_vptq_pair_of<__half> { using type = __half2; };
template <> struct lq_vptq_pair_of<__nv_bfloat16> { using type = __nv_bfloat162; };

// VL consecutive 16-bit values from p (VL = 8: one 16-byte load; VL = 4: one 8-byte load; p
// aligned to that, which launch.ts checks) as VL / 2 pairs, element 2m in the low half of v[m].
template <typename T, int VL>
__device__ __forceinline__ void lq_vptq_load_pairs(const T* p, typename lq_vptq_pair_of<T>::type (&v)[VL / 2]) {
  static_assert(VL == 4 || VL == 8, "fast path vector lengths");
  uint32_t words[VL / 2];
  if constexpr (VL == 8) {
    const uint4 u = *reinterpret_cast<const uint4*>(p);
    words[0] = u.x, words[1] = u.y, words[2] = u.z, words[3] = u.w;
  } else {
    const uint2 u = *reinterpret_cast<const uint2*>(p);
    words[0] = u.x, words[1] = u.y;
  }
#pragma unroll
  for (int m = 0; m < VL / 2; m++) memcpy(&v[m], &words[m], 4);
}

// The norm step on a pair of centroid values, as lq_vptq_weight's (s and b one column's, both halves).
template <typename T2>
__device__ __forceinline__ T2 lq_vptq_norm_pair(T2 c, T2 s, T2 b, int semantics) {
  return semantics == LQ_VPTQ_TORCH ? __hadd2_rn(__hmul2_rn(c, s), b) : __hfma2(c, s, b);
}

// The columns kernel's memory access (vptq.cu). Streamed arrays (indices, the reference) are read
// once: ld.global.nc with L1::no_allocate keeps them from evicting the codebook lines that L1
// holds. BYTES = 4, 8 or 16 consecutive bytes from p (aligned to that) into BYTES / 4 words.
template <int BYTES>
__device__ __forceinline__ void lq_vptq_stream_words(const void* p, uint32_t* w) {
  static_assert(BYTES == 4 || BYTES == 8 || BYTES == 16, "one vector load");
  if constexpr (BYTES == 16) asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(w[0]), "=r"(w[1]), "=r"(w[2]), "=r"(w[3]) : "l"(p));
  else if constexpr (BYTES == 8) asm("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];" : "=r"(w[0]), "=r"(w[1]) : "l"(p));
  else asm("ld.global.nc.L1::no_allocate.u32 %0, [%1];" : "=r"(w[0]) : "l"(p));
}

// One 16-byte store (p 16-byte aligned) that allocates no L1 line: the output is never read back.
// The memory clobber keeps it ordered with ordinary stores to the same place (outlier columns).
__device__ __forceinline__ void lq_vptq_store16(void* p, uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
  asm volatile("st.global.L1::no_allocate.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(a), "r"(b), "r"(c), "r"(d) : "memory");
}

// Element `half` (0: low, 1: high) of pair a in the low 16 bits, of pair b in the high ones:
// row t of two adjacent columns from their (row 2m, row 2m + 1) pairs, for one 32-bit store word.
template <typename T2>
__device__ __forceinline__ uint32_t lq_vptq_row_word(T2 a, T2 b, int half) {
  uint32_t ua, ub;
  memcpy(&ua, &a, 4);
  memcpy(&ub, &b, 4);
  return __byte_perm(ua, ub, half != 0 ? 0x7632 : 0x5410);
}

// Both fp16 halves of w with any NaN replaced by the canonical 0x7FFF: the bits that
// __float2half_rn(__half2float(h)) gives for every h (the identity on all other values), so
// fp16 centroids reach an fp16 output without the two conversions. A half is NaN when its
// magnitude exceeds 0x7C00, i.e. when adding 0x03FF carries into bit 15 (never into bit 16).
__device__ __forceinline__ uint32_t lq_vptq_canonical_f16x2(uint32_t w) {
  const uint32_t nan = (((w & 0x7FFF7FFFu) + 0x03FF03FFu) & 0x80008000u) >> 15;
  const uint32_t mask = nan * 0xFFFFu;
  return (w & ~mask) | (0x7FFF7FFFu & mask);
}

// One fp16 output word: row `half` of two adjacent columns (pairs a, b), the first column in the
// low 16 bits. fp16 centroids: their own bits, NaN canonical; bf16: their values f0, f1 rounded to
// nearest even, as lq_store's __float2half_rn.
__device__ __forceinline__ uint32_t lq_vptq_f16_word(__half2 a, __half2 b, int half, float, float) {
  return lq_vptq_canonical_f16x2(lq_vptq_row_word(a, b, half));
}
__device__ __forceinline__ uint32_t lq_vptq_f16_word(__nv_bfloat162, __nv_bfloat162, int, float f0, float f1) {
  return (uint32_t)__half_as_ushort(__float2half_rn(f0)) | (uint32_t)__half_as_ushort(__float2half_rn(f1)) << 16;
}

// The 16-bit value of column c from words holding columns 2m (low half) and 2m + 1 (high half),
// in both halves of a pair: one column's scale or bias for __hfma2.
template <typename T2>
__device__ __forceinline__ T2 lq_vptq_broadcast(const uint32_t* words, int c) {
  const uint32_t w = __byte_perm(words[c / 2], 0, c % 2 != 0 ? 0x3232 : 0x1010);
  T2 pair;
  memcpy(&pair, &w, 4);
  return pair;
}

// The pair (lo, hi) of two 16-bit values.
__device__ __forceinline__ __half2 lq_vptq_make_pair(__half lo, __half hi) { return __halves2half2(lo, hi); }
__device__ __forceinline__ __nv_bfloat162 lq_vptq_make_pair(__nv_bfloat16 lo, __nv_bfloat16 hi) { return __halves2bfloat162(lo, hi); }
