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

// Reduces one thread's values over the block (blockDim.x a power of two ≤ 1024) into
// partials[partial_index] (the block's linear index). `shared` holds 3 · blockDim.x doubles.
__device__ __forceinline__ void lq_verify_block_reduce(double max_abs, double sq_err, double sq_ref, double* shared, lq_verify_partial* partials, int64_t partial_index) {
  const unsigned t = threadIdx.x, n = blockDim.x;
  shared[t] = max_abs;
  shared[n + t] = sq_err;
  shared[2 * n + t] = sq_ref;
  __syncthreads();
  for (unsigned stride = n / 2; stride > 0; stride /= 2) {
    if (t < stride) {
      shared[t] = fmax(shared[t], shared[t + stride]);
      shared[n + t] += shared[n + t + stride];
      shared[2 * n + t] += shared[2 * n + t + stride];
    }
    __syncthreads();
  }
  if (t == 0) partials[partial_index] = {shared[0], shared[n], shared[2 * n]};
}

// The 1-D grid form: the partial of block blockIdx.x.
__device__ __forceinline__ void lq_verify_block_reduce(double max_abs, double sq_err, double sq_ref, double* shared, lq_verify_partial* partials) {
  lq_verify_block_reduce(max_abs, sq_err, sq_ref, shared, partials, (int64_t)blockIdx.x);
}
