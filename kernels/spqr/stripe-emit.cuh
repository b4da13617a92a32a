// The output phase of the stripe and pipelined kernels (spqr.cu, pipeline.cuh): the batch's rows,
// column-interleaved in shared memory (stripe-phases.cuh, lq_spqr_slot), out in original column
// order.
//
// Items of C original columns (C = 8: a piece; C = 4: half a piece), item-major: thread t takes
// items t, t + T, … and writes each for every row of the batch. An item's C stored columns (one
// 2C-byte inv_perm load) give C slot addresses, made once; each is one 2R-byte gather holding the
// column's value in all R rows (R = 4, C = 8: 8 eight-byte loads for 4 × 16 bytes of fp16 out),
// then byte permutes make the rows' words, and per row 2C bytes of fp16 or 4C of float32 (16-byte
// stores; 4C-byte reference loads for verify, issued before the gathers). Why C = 4 exists: at
// C = 8 a warp's float32 store (and reference load) instruction covers 16 of every 32 bytes of
// 1 KiB (the other 16 come from the next instruction), twice the L1 wavefronts and partial-sector
// L2 writes; at C = 4 each instruction covers 512 contiguous bytes, for an inv_perm load half as
// wide and twice the loop trips. OUT: 0 none, 1 fp16, 2 float32.
#pragma once
#include "stripe-phases.cuh"

// One 16-byte (8-byte) store to global memory, whatever the compiler can prove about the address:
// written as a float4 or uint4 assignment, the pipelined kernel's stores (pipeline.cuh) came out
// of NVVM as four 4-byte stores each (4× the store instructions and L1 wavefronts, 1.5× the L2
// write sectors: float32 output at 70 % of the copy against 82 % with the stripe kernel's, whose
// same assignments stayed vector stores). p must be 16-byte (8-byte) aligned: every caller's is.
__device__ __forceinline__ void lq_store_global_v4(void* p, uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
  asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(a), "r"(b), "r"(c), "r"(d));
}
__device__ __forceinline__ void lq_store_global_v2(void* p, uint32_t a, uint32_t b) { asm volatile("st.global.v2.b32 [%0], {%1, %2};" ::"l"(p), "r"(a), "r"(b)); }

// One fp16x2 word of row i of a gathered piece: the row's values of the columns whose gathers are
// `a` and `b` (R consecutive fp16 each, as loaded from their slots).
template <int R>
__device__ __forceinline__ uint32_t lq_spqr_row_word(const uint2& a, const uint2& b, int i) {
  if constexpr (R == 1) return (a.x & 0xFFFFu) | (b.x << 16);
  const uint32_t x = R == 4 && i >= 2 ? a.y : a.x, y = R == 4 && i >= 2 ? b.y : b.x;
  return __byte_perm(x, y, (i & 1) ? 0x7632u : 0x5410u);
}

// An item's C stored columns as C / 2 words of two uint16 (one 2C-byte inv_perm load; the item's
// own columns without a permutation).
template <int C>
__device__ __forceinline__ void lq_spqr_item_columns(const uint16_t* inv_perm, int item, uint32_t words[C / 2]) {
  if (inv_perm == nullptr) {
#pragma unroll
    for (int k = 0; k < C / 2; k++) words[k] = (uint32_t)(C * item + 2 * k) | ((uint32_t)(C * item + 2 * k + 1) << 16);
  } else if constexpr (C == 8) {
    const uint4 index = __ldg(reinterpret_cast<const uint4*>(inv_perm + 8 * item));
    words[0] = index.x, words[1] = index.y, words[2] = index.z, words[3] = index.w;
  } else {
    const uint2 index = __ldg(reinterpret_cast<const uint2*>(inv_perm + 4 * item));
    words[0] = index.x, words[1] = index.y;
  }
}

// One item of the batch (rows r … r + rb − 1), its stored columns in `words`.
template <int OUT, bool VERIFY, int R, int C>
__device__ __forceinline__ void lq_spqr_emit_item(const unsigned char* rows_buf, int item, const uint32_t words[C / 2], int rb, int n, uint16_t* out16, float* out32,
                                                  const float* ref_rows, double& max_abs, double& sq_err, double& sq_ref) {
  // The item's C stored columns as slot offsets.
  uint32_t src[C];
#pragma unroll
  for (int k = 0; k < C / 2; k++) src[2 * k] = lq_spqr_slot<R>(words[k] & 0xFFFFu), src[2 * k + 1] = lq_spqr_slot<R>(words[k] >> 16);
  // The 8-column verify kernels exist for R ≤ 2 only (spqr.cu): at R = 4 they spilled.
  float4 ref[R][C / 4];
#pragma unroll
  for (int i = 0; i < R; i++) {
#pragma unroll
    for (int q = 0; q < C / 4; q++) {
      ref[i][q] = make_float4(0.f, 0.f, 0.f, 0.f);
      if (VERIFY && i < rb) ref[i][q] = __ldg(reinterpret_cast<const float4*>(ref_rows + (i * n + C * item)) + q);
    }
  }
  uint2 v[C];
#pragma unroll
  for (int k = 0; k < C; k++) {
    const unsigned char* at = rows_buf + src[k];
    if constexpr (R == 4) v[k] = *reinterpret_cast<const uint2*>(at);
    else if constexpr (R == 2) v[k] = make_uint2(*reinterpret_cast<const uint32_t*>(at), 0u);
    else v[k] = make_uint2(*reinterpret_cast<const uint16_t*>(at), 0u);
  }
#pragma unroll
  for (int i = 0; i < R; i++) {
    if (i >= rb) break;
    uint32_t h[C / 2];
#pragma unroll
    for (int k = 0; k < C / 2; k++) h[k] = lq_spqr_row_word<R>(v[2 * k], v[2 * k + 1], i);
    const int o = i * n + C * item;
    if (OUT == 1) {
      if constexpr (C == 8) lq_store_global_v4(out16 + o, h[0], h[1], h[2], h[3]);
      else lq_store_global_v2(out16 + o, h[0], h[1]);
    }
    if (OUT == 2 || VERIFY) {
      float f[C];
#pragma unroll
      for (int k = 0; k < C / 2; k++) {
        const float2 w = __half22float2(lq_bits_as_half2(h[k]));
        f[2 * k] = w.x, f[2 * k + 1] = w.y;
      }
#pragma unroll
      for (int q = 0; q < C / 4; q++) {
        if (OUT == 2) lq_store_global_v4(out32 + o + 4 * q, __float_as_uint(f[4 * q]), __float_as_uint(f[4 * q + 1]), __float_as_uint(f[4 * q + 2]), __float_as_uint(f[4 * q + 3]));
        if (VERIFY) {
          const float g[4] = {ref[i][q].x, ref[i][q].y, ref[i][q].z, ref[i][q].w};
#pragma unroll
          for (int e = 0; e < 4; e++) lq_verify_accumulate(f[4 * q + e], g[e], max_abs, sq_err, sq_ref);
        }
      }
    }
  }
}

// The batch's first row in the output and the reference; item offsets from there fit 32 bits.
struct lq_spqr_emit_rows {
  uint16_t* out16;
  float* out32;
  const float* ref_rows;
};
template <int OUT, bool VERIFY>
__device__ __forceinline__ lq_spqr_emit_rows lq_spqr_emit_at(void* out, const float* reference, int64_t r, int n) {
  return {OUT == 1 ? static_cast<uint16_t*>(out) + r * n : nullptr, OUT == 2 ? static_cast<float*>(out) + r * n : nullptr, VERIFY ? reference + r * n : nullptr};
}

// Every item of the batch, each item's columns loaded as it comes (the stripe kernels).
template <int OUT, bool VERIFY, int R, int C>
__device__ __forceinline__ void lq_spqr_emit(const unsigned char* rows_buf, int64_t r, int rb, const lq_spqr_shape& sh, const uint16_t* inv_perm, void* out, const float* reference,
                                             double& max_abs, double& sq_err, double& sq_ref) {
  static_assert(C == 8 || C == 4, "items of 8 or 4 columns");
  const lq_spqr_emit_rows at = lq_spqr_emit_at<OUT, VERIFY>(out, reference, r, sh.n);
  for (int item = (int)threadIdx.x; item < sh.n / C; item += LQ_SPQR_THREADS) {
    lq_spqr_in_order();
    uint32_t words[C / 2];
    lq_spqr_item_columns<C>(inv_perm, item, words);
    lq_spqr_emit_item<OUT, VERIFY, R, C>(rows_buf, item, words, rb, sh.n, at.out16, at.out32, at.ref_rows, max_abs, sq_err, sq_ref);
  }
}

// The same with the columns of the thread's first K items held in registers (`cached`, loaded
// once per block by lq_spqr_item_columns: the same items in every batch), the rest loaded as they
// come (the pipelined kernels: their shared memory leaves little L1 for inv_perm, and each item's
// gathers wait on its columns).
template <int OUT, bool VERIFY, int R, int C, int K, int NT>
__device__ __forceinline__ void lq_spqr_emit_cached(const unsigned char* rows_buf, int64_t r, int rb, const lq_spqr_shape& sh, const uint16_t* inv_perm,
                                                    const uint32_t cached[][C / 2], void* out, const float* reference, double& max_abs, double& sq_err, double& sq_ref) {
  const lq_spqr_emit_rows at = lq_spqr_emit_at<OUT, VERIFY>(out, reference, r, sh.n);
  const int items = sh.n / C;
#pragma unroll
  for (int k = 0; k < K; k++) {
    const int item = (int)threadIdx.x + k * NT;
    lq_spqr_in_order();
    if (item < items) lq_spqr_emit_item<OUT, VERIFY, R, C>(rows_buf, item, cached[k], rb, sh.n, at.out16, at.out32, at.ref_rows, max_abs, sq_err, sq_ref);
  }
  for (int item = (int)threadIdx.x + K * NT; item < items; item += NT) {
    lq_spqr_in_order();
    uint32_t words[C / 2];
    lq_spqr_item_columns<C>(inv_perm, item, words);
    lq_spqr_emit_item<OUT, VERIFY, R, C>(rows_buf, item, words, rb, sh.n, at.out16, at.out32, at.ref_rows, max_abs, sq_err, sq_ref);
  }
}
