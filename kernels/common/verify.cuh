// Dequant-verify: compares a dequantized weight with the source weight in the same pass and
// leaves one partial result per thread block, which the host sums in block order (so the totals
// are the same on every run: no floating-point atomics).
//
//   max |w − ref|,  Σ (w − ref)²,  Σ ref²   (float64 accumulation)
#pragma once
#include <stdint.h>
#include <cuda_fp16.h>

// Element i of an output array: float32, or fp16 bits (round to nearest even, as
// formats/dense/float-bits.ts f32BitsToF16Bits) when `f16`.
__device__ __forceinline__ void lq_store(void* out, int64_t i, float w, bool f16) {
  if (f16) static_cast<__half*>(out)[i] = __float2half_rn(w);
  else static_cast<float*>(out)[i] = w;
}

// P consecutive outputs from element i (P a multiple of 4; i a multiple of P, so the stores are
// 16-byte aligned, 8-byte for four fp16): 16-byte stores, the same roundings as lq_store.
template <int P>
__device__ __forceinline__ void lq_store_vector(void* out, int64_t i, const float* w, bool f16) {
  static_assert(P % 4 == 0, "pieces of whole float4 / 4 × fp16");
  if (f16) {
    uint32_t h[P / 2];
#pragma unroll
    for (int j = 0; j < P / 2; j++) h[j] = (uint32_t)__half_as_ushort(__float2half_rn(w[2 * j])) | ((uint32_t)__half_as_ushort(__float2half_rn(w[2 * j + 1])) << 16);
    __half* to = static_cast<__half*>(out) + i;
#pragma unroll
    for (int j = 0; j + 4 <= P / 2; j += 4) *reinterpret_cast<uint4*>(to + 2 * j) = make_uint4(h[j], h[j + 1], h[j + 2], h[j + 3]);
    if constexpr (P % 8 != 0) *reinterpret_cast<uint2*>(to + P - 4) = make_uint2(h[P / 2 - 2], h[P / 2 - 1]);
  } else {
    float* to = static_cast<float*>(out) + i;
#pragma unroll
    for (int j = 0; j < P; j += 4) *reinterpret_cast<float4*>(to + j) = make_float4(w[j], w[j + 1], w[j + 2], w[j + 3]);
  }
}

struct lq_verify_partial {
  double max_abs_error;
  double sum_squared_error;
  double sum_squared_reference;
};
static_assert(sizeof(lq_verify_partial) == 24, "lq_verify_partial must be three float64 (kernels/cuda/verify.ts reads it so)");

// Adds one weight's error to a thread's running statistics (float64).
__device__ __forceinline__ void lq_verify_accumulate(float w, float r, double& max_abs, double& sq_err, double& sq_ref) {
  const double e = (double)w - (double)r;
  max_abs = fmax(max_abs, fabs(e));
  sq_err += e * e;
  sq_ref += (double)r * (double)r;
}

// The same float64 terms in the same order, the running maximum a compare and a select rather
// than fmax's NaN handling: max_abs starts at 0 and never holds a NaN, so `a > max_abs ? a :
// max_abs` keeps it exactly where fmax would (a NaN |e| compares false), at about half the
// instructions per weight.
__device__ __forceinline__ void lq_verify_accumulate_select(float w, float r, double& max_abs, double& sq_err, double& sq_ref) {
  const double e = (double)w - (double)r, a = fabs(e);
  max_abs = a > max_abs ? a : max_abs;
  sq_err = __fma_rn(e, e, sq_err);
  sq_ref = __fma_rn((double)r, (double)r, sq_ref);
}

// A thread's sums over a run of weights kept in two independent chains (each float64 add waits
// on the one before, a fixed latency: two chains halve the wait), then added to its running
// statistics. The same terms as one chain in another order: within the tests' bound on reordered
// float64 sums, and the same maximum.
struct lq_verify_chains {
  double max_abs[2] = {0.0, 0.0}, sq_err[2] = {0.0, 0.0}, sq_ref[2] = {0.0, 0.0};
  __device__ __forceinline__ void add(int chain, float w, float r) { lq_verify_accumulate_select(w, r, max_abs[chain], sq_err[chain], sq_ref[chain]); }
  __device__ __forceinline__ void add_to(double& thread_max, double& thread_err, double& thread_ref) const {
    thread_max = fmax(thread_max, fmax(max_abs[0], max_abs[1]));
    thread_err += sq_err[0] + sq_err[1];
    thread_ref += sq_ref[0] + sq_ref[1];
  }
};

// Reduces one thread's values over the block (blockDim.x a multiple of 32, ≤ 1024) into
// partials[partial_index] (the block's linear index): within each warp by shuffles, then the
// warps' results by warp 0, always in the same order (deterministic), with two block barriers
// fewer than log2(blockDim.x). `shared` holds at least 96 doubles (3 · 32; the kernels pass
// 3 · blockDim.x); the caller must not be reading it any more.
__device__ __forceinline__ void lq_verify_warp_reduce(double& max_abs, double& sq_err, double& sq_ref) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    max_abs = fmax(max_abs, __shfl_down_sync(0xFFFFFFFFu, max_abs, offset));
    sq_err += __shfl_down_sync(0xFFFFFFFFu, sq_err, offset);
    sq_ref += __shfl_down_sync(0xFFFFFFFFu, sq_ref, offset);
  }
}

__device__ __forceinline__ void lq_verify_block_reduce(double max_abs, double sq_err, double sq_ref, double* shared, lq_verify_partial* partials, int64_t partial_index) {
  const unsigned t = threadIdx.x, warp = t / 32, lane = t % 32, warps = blockDim.x / 32;
  lq_verify_warp_reduce(max_abs, sq_err, sq_ref);
  if (lane == 0) {
    shared[warp] = max_abs;
    shared[32 + warp] = sq_err;
    shared[64 + warp] = sq_ref;
  }
  __syncthreads();
  if (warp != 0) return;
  max_abs = lane < warps ? shared[lane] : 0.0;
  sq_err = lane < warps ? shared[32 + lane] : 0.0;
  sq_ref = lane < warps ? shared[64 + lane] : 0.0;
  lq_verify_warp_reduce(max_abs, sq_err, sq_ref);
  if (t == 0) partials[partial_index] = {max_abs, sq_err, sq_ref};
}

// The 1-D grid form: the partial of block blockIdx.x.
__device__ __forceinline__ void lq_verify_block_reduce(double max_abs, double sq_err, double sq_ref, double* shared, lq_verify_partial* partials) {
  lq_verify_block_reduce(max_abs, sq_err, sq_ref, shared, partials, (int64_t)blockIdx.x);
}
