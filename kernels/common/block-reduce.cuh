// What the row kernels of the GPU forwards share (kernels/forward float64, kernels/forward-bf16
// float32; kernels/block-grad takes the shape check): the block-shape check and a sum or max over
// the block in one fixed tree, so that they reduce in the same order and give the same bits from
// run to run.
#pragma once
#include <stdint.h>
#include "status.h"

// Math.max's NaN rule: NaN wins whichever side it is on (fmax/fmaxf would drop it).
template <typename T>
__device__ __forceinline__ T lq_js_max(T a, T b) {
  return (a != a || a > b) ? a : b;
}

// The row kernels need exactly THREADS threads in one dimension; the test is uniform over the
// block, so an early return cannot leave a barrier half-reached.
template <int THREADS>
__device__ __forceinline__ bool lq_block_shape_ok(uint32_t* status) {
  if (blockDim.x == THREADS && blockDim.y == 1 && blockDim.z == 1) return true;
  if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) lq_report(status, LQ_STATUS_SHAPE);
  return false;
}

// Sum (or max) of one value per thread over the block, in a fixed tree: thread i adds i + stride
// for stride = THREADS/2, …, 1. Every thread returns the result. The leading barrier keeps a
// second reduction from overwriting `scratch` before every thread has read the first one's. A
// sum is one rounded add per step (__dadd_rn / __fadd_rn: nothing to contract into an fma).
__device__ __forceinline__ double lq_add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float lq_add_rn(float a, float b) { return __fadd_rn(a, b); }

template <int THREADS, typename T, bool IS_MAX>
__device__ T lq_block_reduce(T value, T* scratch) {
  __syncthreads();
  scratch[threadIdx.x] = value;
  __syncthreads();
  for (int stride = THREADS / 2; stride > 0; stride >>= 1) {
    if ((int)threadIdx.x < stride) {
      const T other = scratch[threadIdx.x + stride];
      scratch[threadIdx.x] = IS_MAX ? lq_js_max<T>(scratch[threadIdx.x], other) : lq_add_rn(scratch[threadIdx.x], other);
    }
    __syncthreads();
  }
  return scratch[0];
}
