// Integer-group dequant and dequant-verify (layout and formula in int-group.cuh).
//
// Grid: blockIdx.y walks rows (a grid-stride loop past 65,535 rows), blockIdx.x column chunks of
// LQ_INT_GROUP_THREADS · LQ_INT_GROUP_PER_THREAD columns. Each thread dequantizes 16 consecutive
// weights of one row. When K is a multiple of 16, every row starts 16-aligned, so the codes are
// read as one 16-byte load. The weights then pass through shared memory, so that each warp's
// stores (and reference loads) cover one contiguous span. The kernel is then a streaming pass,
// limited by memory bandwidth rather than by instructions.
//
// Without g_idx and with a group size that is a multiple of 16, a thread's 16 weights share one
// group: one scale and one zero load, one division. Act-order and odd group sizes take the
// per-weight path.
#include "int-group.cuh"
#include "../common/status.h"
#include "../common/verify.cuh"

// Threads per block; the shared-memory reduction of the verify partials is sized for it.
#define LQ_INT_GROUP_THREADS 256
#define LQ_INT_GROUP_PER_THREAD 16

// out (nullable): [N][K] weights, float32, or fp16 bits when out_f16 (RNE from the float32 value).
// reference (nullable): float32 [N][K] source weights to compare with; partials (one per block,
// gridDim.x · gridDim.y of them) receive max |w − ref|, Σ(w − ref)², Σ ref².
extern "C" __global__ void __launch_bounds__(LQ_INT_GROUP_THREADS) lq_int_group_dequant_verify(
    const uint8_t* __restrict__ codes, const float* __restrict__ scales, const uint16_t* __restrict__ zeros,
    const int32_t* __restrict__ g_idx, void* __restrict__ out, const float* __restrict__ reference,
    lq_verify_partial* __restrict__ partials, int64_t n_rows, int64_t k_cols, int64_t group_size,
    int64_t n_groups, uint32_t max_code, int32_t rounding, int32_t keep_negative_zero, int32_t out_f16, uint32_t* status) {
  constexpr int P = LQ_INT_GROUP_PER_THREAD, T = LQ_INT_GROUP_THREADS, CHUNK = P * T;
  __shared__ double shared[3 * T];
  // A block's CHUNK weights, staged so that global stores and reference loads are coalesced:
  // thread t computes weights t·P … t·P + P − 1 (one 16-byte code load), but the block writes
  // and reads consecutive 16-byte pieces per thread.
  __shared__ __align__(16) float staged[CHUNK];
  if (n_rows <= 0 || k_cols <= 0 || k_cols > INT32_MAX || group_size <= 0 || group_size > INT32_MAX || n_groups <= 0) {
    if (threadIdx.x == 0 && blockIdx.x == 0 && blockIdx.y == 0) lq_report(status, LQ_STATUS_SHAPE);
    return;
  }
  const int32_t K = (int32_t)k_cols, G = (int32_t)group_size;
  const bool vector_rows = (K % P) == 0;
  const bool shared_group = g_idx == nullptr && (G % P) == 0;
  const bool f16 = out_f16 != 0, keep = keep_negative_zero != 0;
  double max_abs = 0.0, sq_err = 0.0, sq_ref = 0.0;
  uint32_t bad = 0;
  for (int64_t n = blockIdx.y; n < n_rows; n += gridDim.y) {
    const int64_t row = n * k_cols;
    // Chunks are walked by the whole block together, so __syncthreads is reached by every thread.
    for (int32_t chunk = blockIdx.x * CHUNK; chunk < K; chunk += gridDim.x * CHUNK) {
      const int32_t chunk_len = min(CHUNK, K - chunk);
      const int32_t k0 = chunk + (int32_t)threadIdx.x * P;
      // Weights of this thread inside the row: P, fewer at the row's end, none past it.
      const int32_t remaining = K - k0;
      const int32_t count = remaining <= 0 ? 0 : remaining < P ? remaining : P;
      uint8_t q[P];
      if (vector_rows && count == P) {
        const uint4 word = *reinterpret_cast<const uint4*>(codes + row + k0);
        memcpy(q, &word, P);
      } else {
        for (int j = 0; j < P; j++) q[j] = j < count ? codes[row + k0 + j] : 0;
      }
      float w[P];
      if (shared_group && count == P && k0 / G < n_groups) {
        const int64_t at = (int64_t)(k0 / G) * n_rows + n;
        const float s = scales[at];
        const uint16_t z = zeros[at];
#pragma unroll
        for (int j = 0; j < P; j++) w[j] = lq_int_group_weight(q[j], s, z, max_code, rounding, keep, &bad);
      } else {
        for (int j = 0; j < P; j++) {
          w[j] = 0.0f;
          if (j >= count) continue;
          const int32_t k = k0 + j;
          const int64_t g = g_idx != nullptr ? (int64_t)g_idx[k] : (int64_t)(k / G);
          if (g < 0 || g >= n_groups) {
            bad |= 2u;
            continue;
          }
          w[j] = lq_int_group_weight(q[j], scales[g * n_rows + n], zeros[g * n_rows + n], max_code, rounding, keep, &bad);
        }
      }
      if (!vector_rows) {
        // Rows of K not a multiple of 16 (rare): per-element stores and loads.
        for (int j = 0; j < count; j++) {
          if (out != nullptr) lq_store(out, row + k0 + j, w[j], f16);
          if (reference != nullptr) lq_verify_accumulate(w[j], reference[row + k0 + j], max_abs, sq_err, sq_ref);
        }
        continue;
      }
#pragma unroll
      for (int j = 0; j < P; j++) staged[threadIdx.x * P + j] = w[j];
      __syncthreads();
      // chunk_len is a multiple of P, so 4-weight pieces never straddle its end.
      for (int32_t piece = threadIdx.x * 4; piece < chunk_len; piece += T * 4) {
        const float4 v = *reinterpret_cast<const float4*>(staged + piece);
        if (out != nullptr) {
          if (f16) {
            const __half2 lo = __halves2half2(__float2half_rn(v.x), __float2half_rn(v.y)), hi = __halves2half2(__float2half_rn(v.z), __float2half_rn(v.w));
            uint2 halves;
            halves.x = *reinterpret_cast<const uint32_t*>(&lo);
            halves.y = *reinterpret_cast<const uint32_t*>(&hi);
            *reinterpret_cast<uint2*>(static_cast<__half*>(out) + row + chunk + piece) = halves;
          } else {
            *reinterpret_cast<float4*>(static_cast<float*>(out) + row + chunk + piece) = v;
          }
        }
        if (reference != nullptr) {
          const float4 r = *reinterpret_cast<const float4*>(reference + row + chunk + piece);
          lq_verify_accumulate(v.x, r.x, max_abs, sq_err, sq_ref);
          lq_verify_accumulate(v.y, r.y, max_abs, sq_err, sq_ref);
          lq_verify_accumulate(v.z, r.z, max_abs, sq_err, sq_ref);
          lq_verify_accumulate(v.w, r.w, max_abs, sq_err, sq_ref);
        }
      }
      __syncthreads();
    }
  }
  if (bad != 0) lq_report(status, ((bad & 1u) ? LQ_STATUS_CODE_RANGE : 0u) | ((bad & 2u) ? LQ_STATUS_INDEX_RANGE : 0u));
  if (partials != nullptr) lq_verify_block_reduce(max_abs, sq_err, sq_ref, shared, partials, (int64_t)blockIdx.y * gridDim.x + blockIdx.x);
}
