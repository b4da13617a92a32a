// Integer-group dequant and dequant-verify (layout and formula in int-group.cuh, the walks in
// int-group-paths.cuh).
//
// A streaming pass, bound by memory bandwidth, so the kernel is shaped for bytes in flight and
// little else per weight:
//   - lq_int_group_dequant_verify: a persistent grid (launch.ts: every block resident at once,
//     each walking its share in rounds), one verify partial per block; a plain dequant without
//     g_idx takes lq_int_group_dequant instead, a grid as large as the work (int-group-dequant.cuh),
//     and verify alone without g_idx lq_int_group_verify, persistent (int-group-verify.cuh);
//   - per lane, all loads of a round (U pieces: codes, the piece's scale and zero, reference)
//     issued before the first use;
//   - per weight one PRMT and three FP32 operations (no I2F: lq_int_group_biased), and one packed
//     conversion per two weights for the rounding to the scale dtype and the fp16 output.
#include "int-group-dequant.cuh"
#include "int-group-verify.cuh"
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

// Dequant alone, without g_idx (verify and act-order launches take lq_int_group_dequant_verify):
// a grid as large as the work (int-group-dequant.cuh). Blocks of LQ_INT_GROUP_DEQUANT_THREADS
// threads, ⌈N·K / P / (LQ_INT_GROUP_DEQUANT_THREADS · LQ_INT_GROUP_DEQUANT_PIECES)⌉ of them, P = 8
// with fp16 output and 4 with float32; K and group_size multiples of P, max_code 2^bits − 1, N·K / P
// and n_groups · N below 2^32, and (row_*, group_*) lq_make_divider(K / P) and
// lq_make_divider(group_size) (launch.ts divider); anything else is LQ_STATUS_SHAPE, nothing written.
// P is a template parameter so that the checks are shifts and masks, not divisions.
template <int P>
__device__ __forceinline__ void lq_int_group_dequant_grid(const lq_int_group_args& a, lq_divider row_of, uint32_t* status) {
  constexpr uint32_t BLOCK_PIECES = LQ_INT_GROUP_DEQUANT_THREADS * LQ_INT_GROUP_DEQUANT_PIECES;
  const int64_t K = a.K, G = a.G, pieces = a.n_rows * (K / P);
  if (K % P != 0 || G % P != 0 || pieces > (int64_t)UINT32_MAX || a.n_groups * a.n_rows > (int64_t)UINT32_MAX || !lq_int_group_max_code_is_mask(a.max_code) ||
      blockDim.x != LQ_INT_GROUP_DEQUANT_THREADS || blockDim.y != 1 || blockDim.z != 1 || gridDim.y != 1 || gridDim.z != 1 ||
      gridDim.x != (uint32_t)((pieces + BLOCK_PIECES - 1) / BLOCK_PIECES) || !lq_divider_is_exact((uint32_t)(K / P), row_of) || !lq_divider_is_exact((uint32_t)G, a.group_of)) {
    if (threadIdx.x == 0 && blockIdx.x == 0) lq_report(status, LQ_STATUS_SHAPE);
    return;
  }
  uint32_t code_bits;
  if (a.rounding == LQ_ROUND_F16) code_bits = lq_int_group_dequant_pieces<P, LQ_ROUND_F16>(a, (uint32_t)pieces, (uint32_t)(K / P), row_of);
  else if (a.rounding == LQ_ROUND_BF16) code_bits = lq_int_group_dequant_pieces<P, LQ_ROUND_BF16>(a, (uint32_t)pieces, (uint32_t)(K / P), row_of);
  else code_bits = lq_int_group_dequant_pieces<P, LQ_ROUND_F32>(a, (uint32_t)pieces, (uint32_t)(K / P), row_of);
  if ((code_bits & lq_int_group_code_excess(a.max_code)) != 0) lq_report(status, LQ_STATUS_CODE_RANGE);
}

// ≤ 32 registers a thread: 8 blocks of 256 threads fill an H100/A100 multiprocessor (6 on the
// 1,536-thread multiprocessors of sm_86, sm_89, sm_120, as ggml.cu does).
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ == 860 || __CUDA_ARCH__ == 890 || __CUDA_ARCH__ >= 1200)
#define LQ_INT_GROUP_DEQUANT_MIN_BLOCKS 6
#else
#define LQ_INT_GROUP_DEQUANT_MIN_BLOCKS 8
#endif
extern "C" __global__ void __launch_bounds__(LQ_INT_GROUP_DEQUANT_THREADS, LQ_INT_GROUP_DEQUANT_MIN_BLOCKS) lq_int_group_dequant(
    const uint8_t* __restrict__ codes, const float* __restrict__ scales, const uint16_t* __restrict__ zeros, void* __restrict__ out,
    int64_t n_rows, int64_t k_cols, int64_t group_size, int64_t n_groups, uint32_t max_code, int32_t rounding, int32_t keep_negative_zero, int32_t out_f16,
    uint32_t row_m, uint32_t row_shift1, uint32_t row_shift2, uint32_t group_m, uint32_t group_shift1, uint32_t group_shift2, uint32_t* status) {
  // n_groups · group_size ≥ k_cols: every column has a group (a product, not a 64-bit division
  // per thread; both factors < 2^31).
  if (n_rows <= 0 || k_cols <= 0 || k_cols > LQ_INT_GROUP_MAX_COLS || group_size <= 0 || group_size > INT32_MAX || n_groups <= 0 || n_groups > INT32_MAX ||
      n_groups * group_size < k_cols || out == nullptr) {
    if (threadIdx.x == 0 && blockIdx.x == 0) lq_report(status, LQ_STATUS_SHAPE);
    return;
  }
  const bool keep = keep_negative_zero != 0;
  const lq_int_group_args a{codes, scales, zeros, nullptr, out, nullptr, n_rows, n_groups, (int32_t)k_cols, (int32_t)group_size, {group_m, group_shift1, group_shift2},
                            max_code, rounding, keep ? -0.0f : 0.0f, keep, out_f16 != 0};
  const lq_divider row_of{row_m, row_shift1, row_shift2};
  if (a.f16) lq_int_group_dequant_grid<8>(a, row_of, status);
  else lq_int_group_dequant_grid<4>(a, row_of, status);
}

// Verify alone (no weights), without g_idx: the stream walk of int-group-verify.cuh on a
// persistent grid (any gridDim.x ≥ 1; one partial per block, partials[blockIdx.x]). Blocks of
// LQ_INT_GROUP_VERIFY_THREADS threads; K and group_size multiples of 4, max_code 2^bits − 1,
// N·K / 4 and n_groups · N below 2^32, and (row_*, group_*) lq_make_divider(K / 4) and
// lq_make_divider(group_size) (launch.ts divider); anything else is LQ_STATUS_SHAPE. Code words
// outside max_code: LQ_STATUS_CODE_RANGE, as lq_int_group_dequant_verify reports them.
extern "C" __global__ void __launch_bounds__(LQ_INT_GROUP_VERIFY_THREADS, LQ_INT_GROUP_MIN_BLOCKS) lq_int_group_verify(
    const uint8_t* __restrict__ codes, const float* __restrict__ scales, const uint16_t* __restrict__ zeros, const float* __restrict__ reference,
    lq_verify_partial* __restrict__ partials, int64_t n_rows, int64_t k_cols, int64_t group_size, int64_t n_groups, uint32_t max_code, int32_t rounding,
    int32_t keep_negative_zero, uint32_t row_m, uint32_t row_shift1, uint32_t row_shift2, uint32_t group_m, uint32_t group_shift1, uint32_t group_shift2, uint32_t* status) {
  // verify.cuh's reduction needs 3 · 32 doubles.
  __shared__ double reduce_space[3 * 32];
  constexpr int64_t P = 4;
  const lq_divider row_of{row_m, row_shift1, row_shift2}, group_of{group_m, group_shift1, group_shift2};
  // n_groups · group_size ≥ k_cols: every column has a group (both factors < 2^31); n_rows < 2^32
  // keeps the products below int64's range.
  const bool sizes_ok = n_rows > 0 && n_rows <= UINT32_MAX && k_cols > 0 && k_cols <= LQ_INT_GROUP_MAX_COLS && group_size > 0 && group_size <= INT32_MAX && n_groups > 0 && n_groups <= INT32_MAX &&
                        n_groups * group_size >= k_cols && reference != nullptr && partials != nullptr;
  const int64_t pieces = sizes_ok ? n_rows * (k_cols / P) : 0;
  if (!sizes_ok || k_cols % P != 0 || group_size % P != 0 || pieces > (int64_t)UINT32_MAX || n_groups * n_rows > (int64_t)UINT32_MAX || !lq_int_group_max_code_is_mask(max_code) ||
      blockDim.x != LQ_INT_GROUP_VERIFY_THREADS || blockDim.y != 1 || blockDim.z != 1 || gridDim.y != 1 || gridDim.z != 1 ||
      !lq_divider_is_exact((uint32_t)(k_cols / P), row_of) || !lq_divider_is_exact((uint32_t)group_size, group_of)) {
    if (threadIdx.x == 0 && blockIdx.x == 0) lq_report(status, LQ_STATUS_SHAPE);
    return;
  }
  const bool keep = keep_negative_zero != 0;
  const lq_int_group_args a{codes, scales, zeros, nullptr, nullptr, reference, n_rows, n_groups, (int32_t)k_cols, (int32_t)group_size, group_of,
                            max_code, rounding, keep ? -0.0f : 0.0f, keep, false};
  lq_verify_sums v;
  if (rounding == LQ_ROUND_F16) lq_int_group_verify_pieces<LQ_ROUND_F16>(a, (uint32_t)pieces, (uint32_t)(k_cols / P), row_of, v);
  else if (rounding == LQ_ROUND_BF16) lq_int_group_verify_pieces<LQ_ROUND_BF16>(a, (uint32_t)pieces, (uint32_t)(k_cols / P), row_of, v);
  else lq_int_group_verify_pieces<LQ_ROUND_F32>(a, (uint32_t)pieces, (uint32_t)(k_cols / P), row_of, v);
  if ((v.code_bits & lq_int_group_code_excess(max_code)) != 0) lq_report(status, LQ_STATUS_CODE_RANGE);
  lq_verify_block_reduce(v.max_abs, v.sq_err, v.sq_ref, reduce_space, partials);
}
