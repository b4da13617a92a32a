// Integer-group dequant and dequant-verify (layout and formula in int-group.cuh). One thread per
// weight over a grid-stride loop; the launch configuration is chosen in launch.ts.
#include "int-group.cuh"
#include "../common/status.h"
#include "../common/verify.cuh"

// out (nullable): [N][K] weights, float32, or fp16 bits when out_f16 (RNE from the float32 value). reference (nullable): float32 [N][K] source weights to
// compare with, the partials (one per block) receiving max |w − ref|, Σ(w − ref)², Σ ref².
// Threads per block: LQ_VERIFY_THREADS (the shared-memory reduction is sized for it).
#define LQ_VERIFY_THREADS 256

extern "C" __global__ void __launch_bounds__(LQ_VERIFY_THREADS) lq_int_group_dequant_verify(
    const uint8_t* __restrict__ codes, const float* __restrict__ scales, const uint16_t* __restrict__ zeros,
    const int32_t* __restrict__ g_idx, void* __restrict__ out, const float* __restrict__ reference,
    lq_verify_partial* __restrict__ partials, int64_t n_rows, int64_t k_cols, int64_t group_size,
    int64_t n_groups, uint32_t max_code, int32_t rounding, int32_t keep_negative_zero, int32_t out_f16, uint32_t* status) {
  __shared__ double shared[3 * LQ_VERIFY_THREADS];
  if (n_rows <= 0 || k_cols <= 0 || group_size <= 0 || n_groups <= 0) {
    if (threadIdx.x == 0 && blockIdx.x == 0) lq_report(status, LQ_STATUS_SHAPE);
    return;
  }
  const int64_t total = n_rows * k_cols;
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  double max_abs = 0.0, sq_err = 0.0, sq_ref = 0.0;
  uint32_t bad = 0;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t n = i / k_cols, k = i - n * k_cols;
    const int64_t g = g_idx != nullptr ? (int64_t)g_idx[k] : k / group_size;
    if (g < 0 || g >= n_groups) {
      bad |= 2u;
      continue;
    }
    const float w = lq_int_group_weight(codes[i], scales[g * n_rows + n], zeros[g * n_rows + n], max_code, rounding, keep_negative_zero != 0, &bad);
    if (out != nullptr) lq_store(out, i, w, out_f16 != 0);
    if (reference != nullptr) {
      const double r = reference[i], e = (double)w - r;
      max_abs = fmax(max_abs, fabs(e));
      sq_err += e * e;
      sq_ref += r * r;
    }
  }
  if (bad != 0) lq_report(status, ((bad & 1u) ? LQ_STATUS_CODE_RANGE : 0u) | ((bad & 2u) ? LQ_STATUS_INDEX_RANGE : 0u));
  if (partials != nullptr) lq_verify_block_reduce(max_abs, sq_err, sq_ref, shared, partials);
}
