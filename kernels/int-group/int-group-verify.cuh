// The verify-only walk of int-group.cu's lq_int_group_verify (no weights written, no g_idx):
// the layer taken as one stream of pieces of 4 weights (4 code bytes, 16 reference bytes), as
// int-group-dequant.cuh takes it, walked by a persistent grid (launch.ts: every block resident at
// once) in rounds of LQ_INT_GROUP_VERIFY_PIECES · 256 consecutive pieces a block, each thread
// LQ_INT_GROUP_VERIFY_PIECES of them, 256 pieces apart (every load instruction of a warp covers
// one contiguous stretch: 128 code bytes, 512 reference bytes).
//
// Why not the span walk of lq_int_group_dequant_verify: that kernel holds every walk (write,
// act-order, per element) under one register budget, and its spans index rows in 64 bits with a
// 64-bit group offset per piece. Here a thread issues its pieces' 4 code loads, 4 reference loads
// (64 bytes) and their scales and zeros before the first use, every index is 32-bit (the row and
// the group from multiplicative dividers the host computes and the kernel checks exact), and no
// fp16 bits are formed (nothing is written). A read-only stream stays on a persistent grid: one
// partial per block, and a grid as large as the work measured slower for verify (H100, issue 9:
// 69 % of the copy against 85 % for the span walk uncapped; ggml's verify lost likewise).
//
// The layer as a stream: codes and the reference are [N][K] row-major and K is a multiple of 4,
// so piece i holds weights 4i … 4i + 3 of the flat layer, row n = i / (K / 4), column
// k = (i − n·K/4)·4, group k / G (< n_groups: the caller checked n_groups · G ≥ K, and clamps
// anyway). An index past the layer's end (the last round's) loads the last piece and adds nothing.
#pragma once
#include "int-group-dequant.cuh"

// Threads per block, and pieces per thread and round (launch.ts's VERIFY_THREADS and VERIFY_PIECES).
#define LQ_INT_GROUP_VERIFY_THREADS 256
#define LQ_INT_GROUP_VERIFY_PIECES 4

// One round of the thread's U pieces from `base`: all loads issued, then the errors added.
// MASKED (the grid's last round only): a piece past the end (a copy of the last, whose codes its
// own thread checks too) compares 0 with 0, which adds +0 to the sums and leaves the maximum as it
// is, so the statistics are exact. No branch lies between the loads and their uses: with a
// `break` there ptxas sank each piece's read-only loads below the previous piece's branch (one
// piece in flight, sm_90 SASS); the full rounds need no masks at all (a select per weight costs
// two FSEL once the values are float64).
template <int ROUNDING, bool MASKED>
__device__ __forceinline__ void lq_int_group_verify_round(const lq_int_group_args& a, uint64_t base, uint32_t pieces, uint32_t per_row, const lq_divider& row_of,
                                                          lq_verify_sums& v) {
  constexpr int P = 4, U = LQ_INT_GROUP_VERIFY_PIECES, T = LQ_INT_GROUP_VERIFY_THREADS;
  const uint32_t last_group = (uint32_t)a.n_groups - 1u, n_rows = (uint32_t)a.n_rows;
  uint32_t q[U];
  float s[U], z[U];
  float4 r[U];
#pragma unroll
  for (int u = 0; u < U; u++) {
    const uint32_t i = MASKED ? (uint32_t)min(base + (uint64_t)(u * T), (uint64_t)pieces - 1u) : (uint32_t)base + (uint32_t)(u * T);
    const uint32_t n = lq_divide(i, row_of);
    const uint32_t k = (i - n * per_row) * P;
    const uint32_t g = min(lq_divide(k, a.group_of), last_group);
    const uint32_t sz_at = g * n_rows + n;  // < n_groups · N, the scales' length, < 2^32: launch.ts
    q[u] = __ldg(reinterpret_cast<const uint32_t*>(a.codes) + i);
    r[u] = __ldg(reinterpret_cast<const float4*>(a.reference) + i);
    s[u] = __ldg(a.scales + sz_at);
    z[u] = lq_int_group_biased(__ldg(a.zeros + sz_at));
  }
#pragma unroll
  for (int u = 0; u < U; u++) {
    const bool live = !MASKED || base + (uint64_t)(u * T) < pieces;
    v.code_bits |= q[u];
    float w[P];
#pragma unroll
    for (int j = 0; j < P; j++) w[j] = lq_int_group_product(lq_int_group_biased_byte(q[u], j), s[u], z[u], a.zero_bias);
    // The scale dtype's rounding (the fp16 bits it also returns are not needed here).
    (void)lq_int_group_round_pair<ROUNDING>(w[0], w[1]);
    (void)lq_int_group_round_pair<ROUNDING>(w[2], w[3]);
    const float ref[P] = {r[u].x, r[u].y, r[u].z, r[u].w};
#pragma unroll
    for (int j = 0; j < P; j++) lq_verify_accumulate(live ? w[j] : 0.0f, live ? ref[j] : 0.0f, v.max_abs, v.sq_err, v.sq_ref);
  }
}

// Adds the thread's pieces' errors to `v` (and their code words to v.code_bits; the range check is
// the caller's). `pieces` = N·K / 4 (< 2^32, the caller checked), per_row = K / 4 through `row_of`.
template <int ROUNDING>
__device__ __forceinline__ void lq_int_group_verify_pieces(const lq_int_group_args& a, uint32_t pieces, uint32_t per_row, const lq_divider& row_of, lq_verify_sums& v) {
  constexpr int U = LQ_INT_GROUP_VERIFY_PIECES, T = LQ_INT_GROUP_VERIFY_THREADS;
  const uint64_t stride = (uint64_t)gridDim.x * (U * T);
  for (uint64_t base = (uint64_t)blockIdx.x * (U * T) + threadIdx.x; base < pieces; base += stride) {
    if (base + (uint64_t)((U - 1) * T) < pieces) lq_int_group_verify_round<ROUNDING, false>(a, base, pieces, per_row, row_of, v);
    else lq_int_group_verify_round<ROUNDING, true>(a, base, pieces, per_row, row_of, v);
  }
}
