// Integer-group dequant and dequant-verify (layout and formula in int-group.cuh).
//
// Grid: blockIdx.y walks rows (a grid-stride loop past 65,535 rows), blockIdx.x column chunks of
// LQ_INT_GROUP_CHUNK columns. A thread works on pieces of P consecutive weights of one row, P = 8
// with fp16 output (one 8-byte code load, one 16-byte store) and P = 4 otherwise (a 4-byte code
// load, one 16-byte float32 store or reference load). Consecutive threads take consecutive pieces,
// so every load and store instruction of a warp covers one contiguous span (512 B of fp16 or
// float32), and each thread first loads all of its chunk's codes (16 bytes in flight) before it
// computes: the kernel is a streaming pass, limited by memory bandwidth rather than latency.
//
// Without g_idx and with a group size that is a multiple of P, a piece shares one group: one
// scale and one zero load. Act-order and odd group sizes take the per-weight path, and rows of K
// not a multiple of P the per-element one.
#include "int-group.cuh"
#include "../common/status.h"
#include "../common/verify.cuh"

// Threads per block; the shared-memory reduction of the verify partials is sized for it.
#define LQ_INT_GROUP_THREADS 256
// Columns per block and chunk: 16 per thread. launch.ts's CHUNK.
#define LQ_INT_GROUP_CHUNK (16 * LQ_INT_GROUP_THREADS)

struct lq_int_group_args {
  const uint8_t* __restrict__ codes;
  const float* __restrict__ scales;
  const uint16_t* __restrict__ zeros;
  const int32_t* __restrict__ g_idx;
  void* __restrict__ out;
  const float* __restrict__ reference;
  int64_t n_rows, n_groups;
  int32_t K, G;
  uint32_t max_code;
  int32_t rounding;
  bool keep, f16;
};

// P weights of row n from column k0 (count of them inside the row: P, or fewer at a ragged end).
template <int P>
__device__ __forceinline__ void lq_int_group_piece(const lq_int_group_args& a, int64_t n, int32_t k0, int32_t count, const uint8_t* q, double& max_abs, double& sq_err, double& sq_ref, uint32_t& bad) {
  const int64_t at = n * a.K + k0;
  float w[P];
  if (a.g_idx == nullptr && a.G % P == 0 && count == P && k0 / a.G < a.n_groups) {
    const int64_t g = (int64_t)(k0 / a.G) * a.n_rows + n;
    const float s = a.scales[g];
    const uint16_t z = a.zeros[g];
#pragma unroll
    for (int j = 0; j < P; j++) w[j] = lq_int_group_weight(q[j], s, z, a.max_code, a.rounding, a.keep, &bad);
  } else {
#pragma unroll
    for (int j = 0; j < P; j++) {
      w[j] = 0.0f;
      if (j >= count) continue;
      const int32_t k = k0 + j;
      const int64_t g = a.g_idx != nullptr ? (int64_t)a.g_idx[k] : (int64_t)(k / a.G);
      if (g < 0 || g >= a.n_groups) {
        bad |= 2u;
        continue;
      }
      w[j] = lq_int_group_weight(q[j], a.scales[g * a.n_rows + n], a.zeros[g * a.n_rows + n], a.max_code, a.rounding, a.keep, &bad);
    }
  }
  if (count != P || a.K % P != 0) {
    // Rows of K not a multiple of P (rare): per-element stores and loads.
#pragma unroll
    for (int j = 0; j < P; j++) {
      if (j >= count) continue;
      if (a.out != nullptr) lq_store(a.out, at + j, w[j], a.f16);
      if (a.reference != nullptr) lq_verify_accumulate(w[j], a.reference[at + j], max_abs, sq_err, sq_ref);
    }
    return;
  }
  if (a.out != nullptr) lq_store_vector<P>(a.out, at, w, a.f16);
  if (a.reference != nullptr) {
#pragma unroll
    for (int j = 0; j < P; j += 4) {
      const float4 r = *reinterpret_cast<const float4*>(a.reference + at + j);
      lq_verify_accumulate(w[j], r.x, max_abs, sq_err, sq_ref);
      lq_verify_accumulate(w[j + 1], r.y, max_abs, sq_err, sq_ref);
      lq_verify_accumulate(w[j + 2], r.z, max_abs, sq_err, sq_ref);
      lq_verify_accumulate(w[j + 3], r.w, max_abs, sq_err, sq_ref);
    }
  }
}

// The chunk loop for pieces of P weights: U = CHUNK / (THREADS · P) pieces per thread and chunk,
// their codes loaded first. Columns are int32: launch.ts refuses rows over 2³⁰ weights, so chunk plus
// the grid stride never wraps.
template <int P>
__device__ __forceinline__ void lq_int_group_rows(const lq_int_group_args& a, double& max_abs, double& sq_err, double& sq_ref, uint32_t& bad) {
  constexpr int T = LQ_INT_GROUP_THREADS, U = LQ_INT_GROUP_CHUNK / (T * P);
  const bool vector_rows = a.K % P == 0;
  for (int64_t n = blockIdx.y; n < a.n_rows; n += gridDim.y) {
    const uint8_t* row = a.codes + n * a.K;
    for (int32_t chunk = blockIdx.x * LQ_INT_GROUP_CHUNK; chunk < a.K; chunk += gridDim.x * LQ_INT_GROUP_CHUNK) {
      uint8_t q[U][P];
#pragma unroll
      for (int u = 0; u < U; u++) {
        const int32_t k0 = chunk + (u * T + (int32_t)threadIdx.x) * P, count = max(0, min(P, a.K - k0));
        // Every address below is clamped into the row although the branches already guard it:
        // nvcc speculates these loads past the guards (compute-sanitizer caught a 4-byte read just
        // past the codes of a 32x64 layer, from a thread whose piece lay wholly beyond the row).
        if (vector_rows && count == P) {
          const uint8_t* at = row + min(k0, a.K - P);
          if constexpr (P == 8) {
            const uint2 word = *reinterpret_cast<const uint2*>(at);
            memcpy(q[u], &word, P);
          } else {
            const uint32_t word = *reinterpret_cast<const uint32_t*>(at);
            memcpy(q[u], &word, P);
          }
        } else {
#pragma unroll
          for (int j = 0; j < P; j++) q[u][j] = j < count ? row[min(k0 + j, a.K - 1)] : 0;
        }
      }
#pragma unroll
      for (int u = 0; u < U; u++) {
        const int32_t k0 = chunk + (u * T + (int32_t)threadIdx.x) * P, count = max(0, min(P, a.K - k0));
        if (count > 0) lq_int_group_piece<P>(a, n, k0, count, q[u], max_abs, sq_err, sq_ref, bad);
      }
    }
  }
}

// out (nullable): [N][K] weights, float32, or fp16 bits when out_f16 (RNE from the float32 value).
// reference (nullable): float32 [N][K] source weights to compare with; partials (one per block,
// gridDim.x · gridDim.y of them) receive max |w − ref|, Σ(w − ref)², Σ ref².
extern "C" __global__ void __launch_bounds__(LQ_INT_GROUP_THREADS) lq_int_group_dequant_verify(
    const uint8_t* __restrict__ codes, const float* __restrict__ scales, const uint16_t* __restrict__ zeros,
    const int32_t* __restrict__ g_idx, void* __restrict__ out, const float* __restrict__ reference,
    lq_verify_partial* __restrict__ partials, int64_t n_rows, int64_t k_cols, int64_t group_size,
    int64_t n_groups, uint32_t max_code, int32_t rounding, int32_t keep_negative_zero, int32_t out_f16, uint32_t* status) {
  __shared__ double shared[3 * LQ_INT_GROUP_THREADS];
  if (n_rows <= 0 || k_cols <= 0 || k_cols > INT32_MAX - LQ_INT_GROUP_CHUNK || group_size <= 0 || group_size > INT32_MAX || n_groups <= 0) {
    if (threadIdx.x == 0 && blockIdx.x == 0 && blockIdx.y == 0) lq_report(status, LQ_STATUS_SHAPE);
    return;
  }
  const lq_int_group_args a{codes, scales, zeros, g_idx, out, reference, n_rows, n_groups, (int32_t)k_cols, (int32_t)group_size, max_code, rounding, keep_negative_zero != 0, out_f16 != 0};
  double max_abs = 0.0, sq_err = 0.0, sq_ref = 0.0;
  uint32_t bad = 0;
  // The piece width follows the output type only, so verify alone and verify with weights make
  // the same partials.
  if (a.f16) lq_int_group_rows<8>(a, max_abs, sq_err, sq_ref, bad);
  else lq_int_group_rows<4>(a, max_abs, sq_err, sq_ref, bad);
  if (bad != 0) lq_report(status, ((bad & 1u) ? LQ_STATUS_CODE_RANGE : 0u) | ((bad & 2u) ? LQ_STATUS_INDEX_RANGE : 0u));
  if (partials != nullptr) lq_verify_block_reduce(max_abs, sq_err, sq_ref, shared, partials, (int64_t)blockIdx.y * gridDim.x + blockIdx.x);
}
