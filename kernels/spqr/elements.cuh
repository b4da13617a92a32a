// The fallback SpQR kernel (spqr.cu launches the stripe kernel whenever the shape allows, see
// launch-shape.ts): one thread per output weight over a grid-stride loop, in ORIGINAL column order: the
// output and the reference are read and written coalesced, and each thread gathers its stored
// column j = inv_perm[jo] (codes, statistics and the row's outliers stay in L1/L2 while a block
// works along a row) and finds the row's outliers at j by binary search. Each thread computes its
// weight completely, dense part, outliers in CSR order and final fp16 rounding, before storing or
// verifying it. Slow (the search costs ~20× the memory time), but it takes any shape.
#pragma once
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
