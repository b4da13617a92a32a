// The exact squared distance of kmeans.cu's searches and bound checks, and the vector load they
// share. Exactness is the contract (formats/vptq/kmeans.ts): Σ_d (x_d − c_d)² over the vector's
// real coordinates, in coordinate order, one rounding per operation (explicit __d*_rn: nvcc
// would otherwise contract the sum into FMAs and change the last bits).
#pragma once
#include <stdint.h>

// The squared distance over the first `active` of DIM coordinates, in coordinate order.
template <int DIM>
__device__ __forceinline__ double km_distance(const double (&x)[DIM], const double* c, int active) {
  double sum = 0.0;
#pragma unroll
  for (int d = 0; d < DIM; d++) {
    if (d < active) {
      const double diff = __dsub_rn(x[d], c[d]);
      sum = __dadd_rn(sum, __dmul_rn(diff, diff));
    }
  }
  return sum;
}

// All DIM coordinates of vector i (zeros for a slot with no vector). A partial vector's
// coordinates past its real ones exist in memory (the host lays out whole vectors) and are loaded,
// never used.
template <int DIM>
__device__ __forceinline__ void km_load(double (&x)[DIM], const double* vectors, int64_t i, bool live) {
#pragma unroll
  for (int d = 0; d < DIM; d++) x[d] = live ? vectors[i * DIM + d] : 0.0;
}
