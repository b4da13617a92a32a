// The verify-only walk of fpx.cu's lq_fpx_verify, and the reference loads that the combined
// walk (fpx-write.cuh) shares with it.
//
// Verify needs no staging: each lane reads its own reference pairs (8-byte loads, a warp's
// covering whole 32-byte sectors) and accumulates in registers; verify alone runs no barrier at
// all and keeps 128 reference bytes a lane in flight. Verify alone sums a lane in two chains
// (CHAINS), the combined walks in one: the same float64 terms in another order, so the two agree
// within the bound on reordered sums (test/kernels/fpx.test.ts) and the maximum exactly.
#pragma once
#include "fpx-half.cuh"
#include "../common/verify.cuh"

// The reference weights of the lane's pair q (rows and columns as lq_fpx_place says): 8 bytes,
// so a warp's load covers 8 rows × 32 contiguous bytes, whole sectors.
__device__ __forceinline__ float2 lq_fpx_reference_pair(const lq_fpx_args& a, lq_fpx_lane_place at, int q) {
  const int k = q >> 2, g = (q >> 1) & 1, d = q & 1;
  return __ldg(reinterpret_cast<const float2*>(a.reference + (at.row0 + 16 * k + 8 * d) * a.n_cols + at.col0 + 8 * g));
}

// Adds the lane's 32 errors to the thread's sums: the 16 reference pairs loaded first (128 bytes
// in flight), then decoded and compared pair by pair, q = 0 … 15. HALF (ebits ≤
// LQ_FPX_HALF_MAX_EBITS, the caller checks): the weights from fpx-half.cuh's packed decode (about
// half the instructions of lq_fpx_pair's), the same float32 values. CHAINS (lq_fpx_verify): the
// lane's sums in two independent chains, added to the thread's at the end, so that each float64
// add waits on one 16 back, not 32; on the H100 (issue 9, % of the copy) verify alone went from
// 83.1-84.0 to 84.3-86.0 at 4096 × 11008 and from 85.4-85.6 to 87.0-87.1 at 11008 × 4096. The combined
// kernel keeps one chain: its own walks' registers are the tighter limit there (52 bytes spilled
// already), and with the verify-alone walk changed float32 out + verify lost a point.
template <int NBITS, bool HALF, bool CHAINS>
__device__ __forceinline__ void lq_fpx_verify_lane(const lq_fpx_args& a, const lq_fpx_lane_words<NBITS>& w, const uint32_t scale2[4], lq_fpx_lane_place at,
                                                   double& max_abs, double& sq_err, double& sq_ref) {
  float2 r[16];
  // Pair q's reference at row0 + 8·(2k + d), column col0 + 8g (lq_fpx_reference_pair): one row
  // pointer a row band, the column as an immediate offset.
  const float* lane_ref = a.reference + at.row0 * a.n_cols + at.col0;
#pragma unroll
  for (int band = 0; band < 8; band++) {
    const float2* row = reinterpret_cast<const float2*>(lane_ref + (int64_t)band * 8 * a.n_cols);
    // band = 2k + d holds pairs q = (k·2 + g)·2 + d, g = 0, 1.
    const int q0 = (band >> 1) * 4 + (band & 1);
    r[q0] = __ldg(row);
    r[q0 + 2] = __ldg(row + 4);
  }
  if constexpr (CHAINS) {
    // Two chains of sums (a pair's first and second weight), added to the thread's at the end.
    lq_verify_chains lane;
#pragma unroll
    for (int q = 0; q < 16; q++) {
      const float2 v = HALF ? lq_fpx_half_weights<NBITS>(w, q, a.half_right, a.half_unbias2, lq_fpx_scale(scale2, q >> 2, q & 1)) : lq_fpx_pair<NBITS>(a, w, scale2, q);
      lane.add(0, v.x, r[q].x);
      lane.add(1, v.y, r[q].y);
    }
    lane.add_to(max_abs, sq_err, sq_ref);
  } else {
#pragma unroll
    for (int q = 0; q < 16; q++) {
      const float2 v = HALF ? lq_fpx_half_weights<NBITS>(w, q, a.half_right, a.half_unbias2, lq_fpx_scale(scale2, q >> 2, q & 1)) : lq_fpx_pair<NBITS>(a, w, scale2, q);
      lq_verify_accumulate(v.x, r[q].x, max_abs, sq_err, sq_ref);
      lq_verify_accumulate(v.y, r[q].y, max_abs, sq_err, sq_ref);
    }
  }
}

// Verify alone: no weights written, so no staging and no barrier.
template <int NBITS, bool HALF, bool CHAINS>
__device__ __forceinline__ void lq_fpx_verify_lanes(const lq_fpx_args& a, double& max_abs, double& sq_err, double& sq_ref) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < a.lanes; i += stride) {
    const lq_fpx_lane_words<NBITS> w = lq_fpx_load_words<NBITS>(a, (uint32_t)i);
    const lq_fpx_lane_place at = lq_fpx_place(a, i);
    uint32_t scale2[4];
    lq_fpx_load_scales(a, at.row0, scale2);
    lq_fpx_verify_lane<NBITS, HALF, CHAINS>(a, w, scale2, at, max_abs, sq_err, sq_ref);
  }
}
