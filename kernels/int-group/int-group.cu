// Integer-group dequant and dequant-verify (layout and formula in int-group.cuh, the walks in
// int-group-paths.cuh).
//
// A streaming pass, bound by memory bandwidth, so the kernel is shaped for bytes in flight and
// little else per weight:
//   - a persistent grid (launch.ts: every block resident at once, each walking its share in
//     rounds), so there are no waves of short blocks, and one verify partial per block;
//   - per lane, all loads of a round (U pieces: codes, the piece's scale and zero, reference)
//     issued before the first use;
//   - per weight one PRMT and three FP32 operations (no I2F: lq_int_group_biased), and one packed
//     conversion per two weights for the rounding to the scale dtype and the fp16 output.
#include "int-group-paths.cuh"
#include "../common/status.h"

// Threads per block, and the blocks per multiprocessor the register budget guarantees (≤ 64
// registers a thread, what four pieces of verify hold without spilling; 1,024 threads a
// multiprocessor, each with 32 code bytes or 80 code and reference bytes in flight, is several
// times what the memory latency needs): launch.ts's THREADS and BLOCKS_PER_SM.
#define LQ_INT_GROUP_THREADS 256
#define LQ_INT_GROUP_MIN_BLOCKS 4
// Longest row: columns are int32, and a round's columns (≤ 2^30 + one span) must not wrap.
#define LQ_INT_GROUP_MAX_COLS (1 << 30)

// Pieces per lane and round (U): 4 (32 code bytes in flight with fp16 output, 16 with float32),
// 2 for fp16 output with verify, whose float32 reference doubles what a piece holds in registers;
// act-order, which also holds a piece's P group indices, 1 (fp16) or 2. launch.ts's SPAN_PIECES.
template <int P>
struct lq_int_group_pieces {
  static constexpr int WRITE = 4, VERIFY = P == 8 ? 2 : 4, ACT_ORDER = P == 8 ? 1 : 2;
};

// The walk for pieces of P weights (P = 8 with fp16 output, 4 otherwise): the vector paths where
// K (and without g_idx the group size) is a multiple of P and max_code is 2^bits − 1, else the
// per-element one.
template <int P, int ROUNDING>
__device__ __forceinline__ void lq_int_group_walk(const lq_int_group_args& a, float2* staged, bool act_order_fits, lq_verify_sums& v, uint32_t& bad) {
  using U = lq_int_group_pieces<P>;
  const bool vector = lq_int_group_max_code_is_mask(a.max_code) && a.K % P == 0;
  if (vector && a.g_idx == nullptr && a.G % P == 0) {
    if (a.reference != nullptr) lq_int_group_spans<P, U::VERIFY, ROUNDING, true>(a, v, bad);
    else lq_int_group_spans<P, U::WRITE, ROUNDING, false>(a, v, bad);
  } else if (vector && a.g_idx != nullptr && act_order_fits) {
    lq_int_group_act_order<P, U::ACT_ORDER, ROUNDING>(a, staged, v, bad);
  } else {
    lq_int_group_elements(a, v, bad);
  }
}

template <int ROUNDING>
__device__ __forceinline__ void lq_int_group_walk(const lq_int_group_args& a, float2* staged, bool act_order_fits, lq_verify_sums& v, uint32_t& bad) {
  if (a.f16) lq_int_group_walk<8, ROUNDING>(a, staged, act_order_fits, v, bad);
  else lq_int_group_walk<4, ROUNDING>(a, staged, act_order_fits, v, bad);
}

// out (nullable): [N][K] weights, float32, or fp16 bits when out_f16 (RNE from the float32 value).
// reference (nullable): float32 [N][K] source weights to compare with; partials (one per block,
// gridDim.x of them) receive max |w − ref|, Σ(w − ref)², Σ ref². Dynamic shared memory: the
// act-order path's staged (scale, zero) pairs, n_groups · 8 bytes (launch.ts passes it when
// g_idx is set and it fits); with less the kernel takes the per-element path. Any grid and any
// block of whole warps (≤ LQ_INT_GROUP_THREADS) give the same weights.
extern "C" __global__ void __launch_bounds__(LQ_INT_GROUP_THREADS, LQ_INT_GROUP_MIN_BLOCKS) lq_int_group_dequant_verify(
    const uint8_t* __restrict__ codes, const float* __restrict__ scales, const uint16_t* __restrict__ zeros,
    const int32_t* __restrict__ g_idx, void* __restrict__ out, const float* __restrict__ reference,
    lq_verify_partial* __restrict__ partials, int64_t n_rows, int64_t k_cols, int64_t group_size,
    int64_t n_groups, uint32_t max_code, int32_t rounding, int32_t keep_negative_zero, int32_t out_f16, uint32_t* status) {
  // verify.cuh's reduction needs 3 · 32 doubles.
  __shared__ double reduce_space[3 * 32];
  extern __shared__ float2 lq_int_group_staged[];
  const bool first_thread = threadIdx.x == 0 && blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z == 0;
  if (n_rows <= 0 || k_cols <= 0 || k_cols > LQ_INT_GROUP_MAX_COLS || group_size <= 0 || group_size > INT32_MAX || n_groups <= 0 || n_groups > INT32_MAX || blockDim.x % 32 != 0 || blockDim.y != 1 || blockDim.z != 1 || gridDim.y != 1 || gridDim.z != 1) {
    if (first_thread) lq_report(status, LQ_STATUS_SHAPE);
    return;
  }
  // Without g_idx, column k's group is k / group_size: with fewer groups than that needs, some
  // columns have none (launch.ts never passes such a count).
  if (g_idx == nullptr && n_groups < (k_cols + group_size - 1) / group_size) {
    if (first_thread) lq_report(status, LQ_STATUS_INDEX_RANGE);
    return;
  }
  const int32_t G = (int32_t)group_size;
  const bool keep = keep_negative_zero != 0;
  const lq_int_group_args a{codes, scales, zeros, g_idx, out, reference, n_rows, n_groups, (int32_t)k_cols, G, lq_make_divider((uint32_t)G), max_code, rounding, keep ? -0.0f : 0.0f, keep, out_f16 != 0};
  uint32_t staged_bytes;
  asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(staged_bytes));
  const bool act_order_fits = (uint64_t)n_groups * sizeof(float2) <= staged_bytes;
  lq_verify_sums v;
  uint32_t bad = 0;
  if (rounding == LQ_ROUND_F16) lq_int_group_walk<LQ_ROUND_F16>(a, lq_int_group_staged, act_order_fits, v, bad);
  else if (rounding == LQ_ROUND_BF16) lq_int_group_walk<LQ_ROUND_BF16>(a, lq_int_group_staged, act_order_fits, v, bad);
  else lq_int_group_walk<LQ_ROUND_F32>(a, lq_int_group_staged, act_order_fits, v, bad);
  if ((v.code_bits & lq_int_group_code_excess(max_code)) != 0) bad |= 1u;
  if (bad != 0) lq_report(status, ((bad & 1u) ? LQ_STATUS_CODE_RANGE : 0u) | ((bad & 2u) ? LQ_STATUS_INDEX_RANGE : 0u));
  if (partials != nullptr) lq_verify_block_reduce(v.max_abs, v.sq_err, v.sq_ref, reduce_space, partials, (int64_t)blockIdx.x);
}
