// SpQR dequant and dequant-verify (layout and formula in spqr.cuh). Two kernels: the row-span one
// at the end of this file, and for rows too long for shared memory this one: one thread per output weight
// over a grid-stride loop, in ORIGINAL column order: the output and the reference are read and
// written coalesced, and each thread gathers its stored column j = inv_perm[jo] (codes, statistics
// and the row's outliers stay in L1/L2 while a block works along a row). Each thread computes its
// weight completely, dense part, outliers in CSR order and final fp16 rounding, before storing
// or verifying it: one pass, no float32 scratch of [m][n], and the verify sees the final weight
// even when no output is written. The launch configuration is chosen in launch.ts.
#include "spqr.cuh"
#include "../common/status.h"
#include "../common/verify.cuh"

// out (nullable): [m][n] weights, float32, or fp16 bits when out_f16 (the same fp16 the float32
// value widens from). reference (nullable): float32 [m][n] source weights in the output's column
// order, the partials (one per block) receiving max |w − ref|, Σ(w − ref)², Σ ref².
// row_offsets (nullable): no outliers at all (dense only). inv_perm (nullable): stored column
// order out. ptcsr: reproduce the PTCSR quirk (m a multiple of 16).
// Threads per block: LQ_VERIFY_THREADS (the shared-memory reduction is sized for it).
#define LQ_VERIFY_THREADS 256

extern "C" __global__ void __launch_bounds__(LQ_VERIFY_THREADS) lq_spqr_dequant_verify(
    const uint8_t* __restrict__ codes, const uint8_t* __restrict__ scale_codes, const uint8_t* __restrict__ zero_codes,
    const ushort4* __restrict__ stats, const int32_t* __restrict__ row_offsets, const uint16_t* __restrict__ cols,
    const uint16_t* __restrict__ values, const uint16_t* __restrict__ inv_perm, void* __restrict__ out,
    const float* __restrict__ reference, lq_verify_partial* __restrict__ partials, int64_t m, int64_t n, int64_t beta1,
    int64_t beta2, int64_t nnz, uint32_t max_code, int32_t ptcsr, int32_t out_f16, uint32_t* status) {
  __shared__ double shared[3 * LQ_VERIFY_THREADS];
  if (m <= 0 || n <= 0 || beta1 <= 0 || beta2 <= 0 || m % beta1 != 0 || n % beta2 != 0 || nnz < 0 || (ptcsr != 0 && m % LQ_SPQR_PTCSR_ROWS != 0)) {
    if (threadIdx.x == 0 && blockIdx.x == 0) lq_report(status, LQ_STATUS_SHAPE);
    return;
  }
  const int64_t row_groups = m / beta1;
  const int64_t total = m * n;
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  double max_abs = 0.0, sq_err = 0.0, sq_ref = 0.0;
  uint32_t bad = 0;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t r = i / n, jo = i - r * n;
    const int64_t j = inv_perm != nullptr ? (int64_t)inv_perm[jo] : jo;
    if (j >= n) {
      bad |= 2u;
      continue;
    }
    const int64_t g = j / beta2;
    float wp = lq_spqr_dense(codes[r * n + j], scale_codes[g * m + r], zero_codes[g * m + r], stats[g * row_groups + r / beta1], max_code, &bad);
    if (row_offsets != nullptr) {
      // The host checked every offset; these bounds keep a kernel given bad ones inside cols/values.
      const int64_t lo = row_offsets[r], hi = row_offsets[r + 1];
      if (lo < 0 || hi < lo || hi > nnz) {
        bad |= 2u;
        continue;
      }
      wp = lq_spqr_add_outliers(wp, (uint32_t)j, cols, values, lo, hi);
      // __fadd_rn: x + 0 is not an identity (−0 + 0 = +0) and must not be folded away.
      if (ptcsr != 0 && j == 0 && lq_spqr_ptcsr_padded(row_offsets, r)) wp = __fadd_rn(wp, 0.0f);
    }
    const float w = lq_spqr_h(wp);
    if (out != nullptr) lq_store(out, i, w, out_f16 != 0);
    if (reference != nullptr) {
      const double ref = reference[i], e = (double)w - ref;
      max_abs = fmax(max_abs, fabs(e));
      sq_err += e * e;
      sq_ref += ref * ref;
    }
  }
  if (bad != 0) lq_report(status, ((bad & 1u) ? LQ_STATUS_CODE_RANGE : 0u) | ((bad & 2u) ? LQ_STATUS_INDEX_RANGE : 0u));
  if (partials != nullptr) lq_verify_block_reduce(max_abs, sq_err, sq_ref, shared, partials);
}

// The row-span kernel, used whenever a row fits in shared memory (launch.ts): the per-element
// binary search above costs ~20× the memory time. Block b owns spans of `span_rows` consecutive
// rows (block-stride over spans) and, per span:
//  1. decodes the span's first-order (s, z) for every group into shared memory, thread i taking
//     (group i / rows, row i % rows): the span's scale and zero codes of one group are adjacent
//     bytes ([G][m] layout), so a warp's loads share sectors instead of touching one per thread;
//  2. per row: each thread decodes 16 consecutive STORED columns (one 16-byte code load) into a
//     shared fp16 row (the dense value h(s·h(q − z)) is an fp16, so fp16 holds it exactly);
//  3. adds the row's outliers: one thread per run of equal columns (the host sorted each row by
//     column, stably), in CSR order, in float32, then rounds once: W = h(dense + v₁ + …);
//  4. walks ORIGINAL columns, 8 per thread: one 16-byte inv_perm load, 8 gathers from the shared
//     row, one 16-byte fp16 store (or two float32 ones), two 16-byte reference loads for verify.
// Every weight is final in shared memory before step 4, so dequant and verify see the same values.
// Dynamic shared memory: [align16(2n) bytes: the row][span_rows · G · 4 bytes: (s, z)], at least
// the 3 · LQ_VERIFY_THREADS doubles of the verify reduction, which reuses it at the end.
__device__ __forceinline__ int64_t lq_spqr_align16(int64_t bytes) { return (bytes + 15) & ~(int64_t)15; }

extern "C" __global__ void __launch_bounds__(LQ_VERIFY_THREADS, 4) lq_spqr_rows_dequant_verify(
    const uint8_t* __restrict__ codes, const uint8_t* __restrict__ scale_codes, const uint8_t* __restrict__ zero_codes,
    const ushort4* __restrict__ stats, const int32_t* __restrict__ row_offsets, const uint16_t* __restrict__ cols,
    const uint16_t* __restrict__ values, const uint16_t* __restrict__ inv_perm, void* __restrict__ out,
    const float* __restrict__ reference, lq_verify_partial* __restrict__ partials, int64_t m, int64_t n, int64_t beta1,
    int64_t beta2, int64_t nnz, uint32_t max_code, int32_t ptcsr, int32_t out_f16, int32_t span_rows, uint32_t* status) {
  extern __shared__ __align__(16) unsigned char lq_spqr_shared[];
  constexpr int T = LQ_VERIFY_THREADS, DENSE = 16, OUT = 8;
  if (m <= 0 || n <= 0 || n > 65536 || beta1 <= 0 || beta2 <= 0 || m % beta1 != 0 || n % beta2 != 0 || nnz < 0 || span_rows <= 0 || span_rows > 64 ||
      (ptcsr != 0 && m % LQ_SPQR_PTCSR_ROWS != 0)) {
    if (threadIdx.x == 0 && blockIdx.x == 0) lq_report(status, LQ_STATUS_SHAPE);
    return;
  }
  const int N = (int)n, B2 = (int)beta2, G = N / B2, t = (int)threadIdx.x;
  const int64_t row_groups = m / beta1;
  uint16_t* row = reinterpret_cast<uint16_t*>(lq_spqr_shared);
  __half2* sz = reinterpret_cast<__half2*>(lq_spqr_shared + lq_spqr_align16(2 * n));
  const bool vector_codes = N % DENSE == 0, vector_out = N % OUT == 0, one_group = B2 % DENSE == 0, f16 = out_f16 != 0;
  const int64_t spans = (m + span_rows - 1) / span_rows;
  double max_abs = 0.0, sq_err = 0.0, sq_ref = 0.0;
  uint32_t bad = 0;
  // Every loop bound below is uniform over the block, so each __syncthreads is reached by all.
  for (int64_t span = blockIdx.x; span < spans; span += gridDim.x) {
    const int64_t r0 = span * span_rows;
    const int rows = (int)min((int64_t)span_rows, m - r0);
    for (int item = t; item < rows * G; item += T) {
      const int g = item / rows, rr = item - g * rows;
      const int64_t r = r0 + rr;
      const ushort4 so = stats[(int64_t)g * row_groups + r / beta1];
      const float s = lq_spqr_grid(scale_codes[(int64_t)g * m + r], lq_spqr_f16(so.x), lq_spqr_f16(so.z));
      const float z = lq_spqr_grid(zero_codes[(int64_t)g * m + r], lq_spqr_f16(so.y), lq_spqr_f16(so.w));
      sz[rr * G + g] = __floats2half2_rn(s, z);  // exact: both are fp16 values
    }
    __syncthreads();
    for (int rr = 0; rr < rows; rr++) {
      const int64_t r = r0 + rr;
      const __half2* row_sz = sz + rr * G;
      // 2. Dense values, stored column order. Codes and fp16 bits stay packed in 32-bit words
      // (byte e of word e / 4, half e of word e / 2), which keeps the thread within 64 registers.
      for (int j0 = t * DENSE; j0 < N; j0 += T * DENSE) {
        const int count = min(DENSE, N - j0);
        uint32_t q[DENSE / 4] = {0, 0, 0, 0};
        if (vector_codes) {
          const uint4 word = *reinterpret_cast<const uint4*>(codes + r * n + j0);
          q[0] = word.x, q[1] = word.y, q[2] = word.z, q[3] = word.w;
        } else {
#pragma unroll
          for (int e = 0; e < DENSE; e++) q[e / 4] |= e < count ? (uint32_t)codes[r * n + j0 + e] << (8 * (e % 4)) : 0u;
        }
        uint32_t bits[DENSE / 2] = {0, 0, 0, 0, 0, 0, 0, 0};
        float2 p = __half22float2(row_sz[j0 / B2]);
#pragma unroll
        for (int e = 0; e < DENSE; e++) {
          // A group of beta2 a multiple of 16 holds all 16 columns; otherwise look each one up.
          if (!one_group) p = __half22float2(row_sz[min(j0 + e, N - 1) / B2]);
          const uint32_t code = (q[e / 4] >> (8 * (e % 4))) & 0xFFu;
          bad |= (e < count && code > max_code) ? 1u : 0u;
          bits[e / 2] |= (uint32_t)lq_spqr_grid_bits(code, p.x, p.y) << (16 * (e % 2));
        }
        if (count == DENSE) {
          reinterpret_cast<uint4*>(row + j0)[0] = make_uint4(bits[0], bits[1], bits[2], bits[3]);
          reinterpret_cast<uint4*>(row + j0)[1] = make_uint4(bits[4], bits[5], bits[6], bits[7]);
        } else {
#pragma unroll
          for (int e = 0; e < DENSE; e++) {
            if (e < count) row[j0 + e] = (uint16_t)(bits[e / 2] >> (16 * (e % 2)));
          }
        }
      }
      __syncthreads();
      // 3. Outliers, one thread per run of equal columns.
      if (row_offsets != nullptr) {
        const int64_t lo = row_offsets[r], hi = row_offsets[r + 1];
        if (lo < 0 || hi < lo || hi > nnz) {
          bad |= 2u;
        } else {
          for (int64_t k = lo + t; k < hi; k += T) {
            const uint16_t c = cols[k];
            if ((k > lo && cols[k - 1] == c) || c >= N) {
              bad |= c >= N ? 2u : 0u;
              continue;
            }
            float x = lq_spqr_f16(row[c]);
            for (int64_t e = k; e < hi && cols[e] == c; e++) x = __fadd_rn(x, lq_spqr_f16(values[e]));
            // __fadd_rn: x + 0 is not an identity (−0 + 0 = +0) and must not be folded away.
            if (c == 0 && ptcsr != 0 && lq_spqr_ptcsr_padded(row_offsets, r)) x = __fadd_rn(x, 0.0f);
            row[c] = __half_as_ushort(__float2half_rn(x));
          }
          // The PTCSR +0 on a column 0 without outliers (sorted rows: then none is at column 0).
          if (t == 0 && ptcsr != 0 && (lo == hi || cols[lo] != 0) && lq_spqr_ptcsr_padded(row_offsets, r)) {
            row[0] = __half_as_ushort(__float2half_rn(__fadd_rn(lq_spqr_f16(row[0]), 0.0f)));
          }
        }
      }
      __syncthreads();
      // 4. Original column order out; stored columns and weights packed two to a word.
      for (int jo0 = t * OUT; jo0 < N; jo0 += T * OUT) {
        const int count = min(OUT, N - jo0);
        uint32_t j[OUT / 2] = {0, 0, 0, 0}, w[OUT / 2] = {0, 0, 0, 0};
        if (inv_perm != nullptr && vector_out) {
          const uint4 word = *reinterpret_cast<const uint4*>(inv_perm + jo0);
          j[0] = word.x, j[1] = word.y, j[2] = word.z, j[3] = word.w;
        } else {
#pragma unroll
          for (int e = 0; e < OUT; e++) j[e / 2] |= (uint32_t)(e >= count ? 0 : inv_perm != nullptr ? inv_perm[jo0 + e] : jo0 + e) << (16 * (e % 2));
        }
#pragma unroll
        for (int e = 0; e < OUT; e++) {
          const uint32_t stored = (j[e / 2] >> (16 * (e % 2))) & 0xFFFFu;
          const bool inside = stored < (uint32_t)N;
          bad |= (e < count && !inside) ? 2u : 0u;
          w[e / 2] |= (inside ? (uint32_t)row[stored] : 0u) << (16 * (e % 2));
        }
        const auto weight = [&](int e) { return lq_spqr_f16((uint16_t)(w[e / 2] >> (16 * (e % 2)))); };
        const int64_t at = r * n + jo0;
        if (vector_out) {
          if (out != nullptr && f16) {
            *reinterpret_cast<uint4*>(static_cast<uint16_t*>(out) + at) = make_uint4(w[0], w[1], w[2], w[3]);
          } else if (out != nullptr) {
            float4* to = reinterpret_cast<float4*>(static_cast<float*>(out) + at);
            to[0] = make_float4(weight(0), weight(1), weight(2), weight(3));
            to[1] = make_float4(weight(4), weight(5), weight(6), weight(7));
          }
          if (reference != nullptr) {
            const float4 a = reinterpret_cast<const float4*>(reference + at)[0], b = reinterpret_cast<const float4*>(reference + at)[1];
            const float ref[OUT] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
            for (int e = 0; e < OUT; e++) lq_verify_accumulate(weight(e), ref[e], max_abs, sq_err, sq_ref);
          }
        } else {
#pragma unroll
          for (int e = 0; e < OUT; e++) {
            if (e >= count) continue;
            if (out != nullptr && f16) static_cast<uint16_t*>(out)[at + e] = (uint16_t)(w[e / 2] >> (16 * (e % 2)));
            else if (out != nullptr) static_cast<float*>(out)[at + e] = weight(e);
            if (reference != nullptr) lq_verify_accumulate(weight(e), reference[at + e], max_abs, sq_err, sq_ref);
          }
        }
      }
      __syncthreads();
    }
  }
  if (bad != 0) lq_report(status, ((bad & 1u) ? LQ_STATUS_CODE_RANGE : 0u) | ((bad & 2u) ? LQ_STATUS_INDEX_RANGE : 0u));
  // The reduction reuses the row's shared memory: every thread is past its last read (the loop's
  // final __syncthreads, or no span at all).
  if (partials != nullptr) lq_verify_block_reduce(max_abs, sq_err, sq_ref, reinterpret_cast<double*>(lq_spqr_shared), partials);
}
