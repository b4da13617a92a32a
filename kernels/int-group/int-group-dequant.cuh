// The write-only walk of int-group.cu's lq_int_group_dequant: a grid as large as the work, each
// block LQ_INT_GROUP_DEQUANT_PIECES · 256 consecutive pieces (P weights, one 16-byte store each)
// of the layer taken as one stream, each thread LQ_INT_GROUP_DEQUANT_PIECES of them, 256 pieces
// apart (so every load and store instruction of a warp covers one contiguous stretch).
//
// Why: a write-heavy stream runs closer to the copy when the hardware schedules many short
// blocks than as a persistent wave (bench/cuda/stream-ceiling.cu, H100: 91-92 % of the copy
// against 84-85 % for 8 bytes read per 16 written, 89-90 % against 80-84 % for 4). Short blocks
// make the per-thread set-up part of every piece's cost, and at ~11.5 bytes per clock per
// multiprocessor a warp's piece (768 bytes moved with fp16 output) has ~270 issue slots; so the
// set-up (~150 instructions, mostly uniform: shape and divider checks) is shared by two pieces,
// a piece costs ~60 (no 64-bit division: the row and the group come from multiplicative
// dividers), and a thread's 6 loads are all issued before the first use (sm_90 SASS). ≤ 32
// registers: 8 blocks of 256 threads fill a multiprocessor (four pieces a thread spilled at 32).
//
// The layer as a stream: codes and weights are [N][K] row-major and K is a multiple of P, so
// piece i holds weights i·P … i·P + P − 1 of the flat layer, row n = i / (K / P), column
// k = (i − n·K/P)·P, group k / G. The two dividers come from the host (launch.ts) and are checked
// exact once per thread (lq_divider_is_exact), so every group is < n_groups (the caller checked
// n_groups · G ≥ K), and every index is clamped into the layer before its load.
#pragma once
#include "int-group-paths.cuh"

// Threads per block, and pieces per thread (launch.ts's BLOCK_THREADS and THREAD_PIECES).
#define LQ_INT_GROUP_DEQUANT_THREADS 256
#define LQ_INT_GROUP_DEQUANT_PIECES 2

// Whether `d` is lq_make_divider(divisor) (0 < divisor < 2^31): l = ⌈log2 divisor⌉ from the
// shifts, and m − 1 = ⌊2^32·(2^l − divisor) / divisor⌋ by two 64-bit products, without a division.
__device__ __forceinline__ bool lq_divider_is_exact(uint32_t divisor, const lq_divider& d) {
  if (divisor == 0u || divisor > 0x7FFFFFFFu) return false;
  const uint32_t l = divisor <= 1u ? 0u : 32u - (uint32_t)__clz((int)(divisor - 1u));
  if (d.shift1 != (l < 1u ? l : 1u) || d.shift2 != (l > 1u ? l - 1u : 0u) || d.m == 0u) return false;
  const uint64_t numerator = ((1ull << l) - divisor) << 32;
  return (uint64_t)(d.m - 1u) * divisor <= numerator && numerator < (uint64_t)d.m * divisor;
}

// Coherent global loads (ld.global, not the read-only ld.global.nc of __ldg): ptxas keeps them
// ahead of the stores that follow them in the source (they might alias), where it sank each
// piece's .nc loads below the previous piece's store to save registers, which left one load latency
// per piece instead of one per thread. Codes are read once (.cs: evict first); scales and zeros
// are shared by the group's pieces and rows (default caching).
__device__ __forceinline__ uint2 lq_int_group_load_codes8(const uint8_t* at) {
  uint2 v;
  asm("ld.global.cs.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(at));
  return v;
}
__device__ __forceinline__ uint32_t lq_int_group_load_codes4(const uint8_t* at) {
  uint32_t v;
  asm("ld.global.cs.u32 %0, [%1];" : "=r"(v) : "l"(at));
  return v;
}
__device__ __forceinline__ float lq_int_group_load_scale(const float* at) {
  float v;
  asm("ld.global.f32 %0, [%1];" : "=f"(v) : "l"(at));
  return v;
}
__device__ __forceinline__ uint32_t lq_int_group_load_zero(const uint16_t* at) {
  uint16_t v;
  asm("ld.global.u16 %0, [%1];" : "=h"(v) : "l"(at));
  return v;
}

// The block's pieces for this thread. `pieces` = N·K / P (< 2^32, the caller checked), per_row =
// K / P through `row_of`. Returns the OR of the code words read (the range check is the caller's).
template <int P, int ROUNDING>
__device__ __forceinline__ uint32_t lq_int_group_dequant_pieces(const lq_int_group_args& a, uint32_t pieces, uint32_t per_row, const lq_divider& row_of) {
  static_assert(P == 4 || P == 8, "pieces of one 16-byte store");
  constexpr int V = LQ_INT_GROUP_DEQUANT_PIECES, WORDS = P / 4;
  const uint32_t first = blockIdx.x * (uint32_t)(V * LQ_INT_GROUP_DEQUANT_THREADS) + threadIdx.x;
  const uint32_t last_group = (uint32_t)a.n_groups - 1u, n_rows = (uint32_t)a.n_rows;
  uint4* out = static_cast<uint4*>(a.out);
  uint32_t q[V][WORDS];
  float s[V], z[V];
#pragma unroll
  for (int v = 0; v < V; v++) {
    // A piece past the layer's end (the last block's) loads the last piece, and stores nothing.
    const uint32_t i = min(first + (uint32_t)(v * LQ_INT_GROUP_DEQUANT_THREADS), pieces - 1u);
    const uint32_t n = lq_divide(i, row_of);
    const uint32_t k = (i - n * per_row) * P;
    const uint32_t g = min(lq_divide(k, a.group_of), last_group);
    const uint32_t sz_at = g * n_rows + n;  // < n_groups · N, the scales' length, < 2^32: launch.ts
    if constexpr (P == 8) {
      const uint2 word = lq_int_group_load_codes8(a.codes + (size_t)i * 8);
      q[v][0] = word.x;
      q[v][1] = word.y;
    } else {
      q[v][0] = lq_int_group_load_codes4(a.codes + (size_t)i * 4);
    }
    s[v] = lq_int_group_load_scale(a.scales + sz_at);
    z[v] = lq_int_group_biased(lq_int_group_load_zero(a.zeros + sz_at));
  }
  uint32_t code_bits = 0;
#pragma unroll
  for (int v = 0; v < V; v++) {
    const uint32_t i = first + (uint32_t)(v * LQ_INT_GROUP_DEQUANT_THREADS);
    if (i >= pieces) break;  // pieces lie in order
    float w[P];
#pragma unroll
    for (int word = 0; word < WORDS; word++) {
      code_bits |= q[v][word];
#pragma unroll
      for (int j = 0; j < 4; j++) w[4 * word + j] = lq_int_group_product(lq_int_group_biased_byte(q[v][word], j), s[v], z[v], a.zero_bias);
    }
    uint32_t h[P / 2];
#pragma unroll
    for (int j = 0; j < P / 2; j++) h[j] = lq_int_group_round_pair<ROUNDING>(w[2 * j], w[2 * j + 1]);
    if constexpr (P == 8) lq_int_group_store16(out + i, make_uint4(h[0], h[1], h[2], h[3]));
    else lq_int_group_store16(out + i, make_uint4(__float_as_uint(w[0]), __float_as_uint(w[1]), __float_as_uint(w[2]), __float_as_uint(w[3])));
  }
  return code_bits;
}
