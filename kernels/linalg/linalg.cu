// Dense float64 products for the second-order engine (formats/second-order) on the GPU.
//
// lq_gemm_f64_at_b_sub:  C[j][r] −= Σ_b A[b][j] · E[b][r]     (C: J×R, A: Bk×J, E: Bk×R, row-major
// with leading dimensions lda, lde, ldc). It is GPTQ's deferred update (gptq-loop.ts applyDeferred):
// the columns after a block take U[block, later]ᵀ · (the block's scaled errors).
//
// Tiling: a block of LQ_GEMM_THREADS threads owns a TILE_J × TILE_R tile of C and walks Bk in
// slices of TILE_B, staging the A and E slices in shared memory. Each thread accumulates a 4×4
// sub-tile in registers and subtracts it from C once. float64 FMA throughout, in a summation order
// of its own: results agree with the CPU's to rounding, not bit for bit.
#include <stdint.h>

#define LQ_GEMM_THREADS 256
#define TILE_J 64
#define TILE_R 64
#define TILE_B 16

extern "C" __global__ void __launch_bounds__(LQ_GEMM_THREADS) lq_gemm_f64_at_b_sub(
    double* __restrict__ c, const double* __restrict__ a, const double* __restrict__ e,
    int64_t j_count, int64_t r_count, int64_t b_count, int64_t ldc, int64_t lda, int64_t lde) {
  __shared__ double a_tile[TILE_B][TILE_J];
  __shared__ double e_tile[TILE_B][TILE_R];
  const int64_t j0 = (int64_t)blockIdx.y * TILE_J, r0 = (int64_t)blockIdx.x * TILE_R;
  const int tj = (threadIdx.x / 16) * 4, tr = (threadIdx.x % 16) * 4;
  double acc[4][4] = {};
  for (int64_t b0 = 0; b0 < b_count; b0 += TILE_B) {
    // 256 threads load 16×64 elements of each operand: 4 each, coalesced along j and r.
    for (int i = threadIdx.x; i < TILE_B * TILE_J; i += LQ_GEMM_THREADS) {
      const int bi = i / TILE_J, ji = i % TILE_J;
      const int64_t b = b0 + bi;
      a_tile[bi][ji] = (b < b_count && j0 + ji < j_count) ? a[b * lda + j0 + ji] : 0.0;
      e_tile[bi][ji] = (b < b_count && r0 + ji < r_count) ? e[b * lde + r0 + ji] : 0.0;
    }
    __syncthreads();
#pragma unroll
    for (int bi = 0; bi < TILE_B; bi++) {
      double av[4], ev[4];
#pragma unroll
      for (int x = 0; x < 4; x++) av[x] = a_tile[bi][tj + x], ev[x] = e_tile[bi][tr + x];
#pragma unroll
      for (int x = 0; x < 4; x++)
#pragma unroll
        for (int y = 0; y < 4; y++) acc[x][y] = fma(av[x], ev[y], acc[x][y]);
    }
    __syncthreads();
  }
  for (int x = 0; x < 4; x++) {
    const int64_t j = j0 + tj + x;
    if (j >= j_count) continue;
    for (int y = 0; y < 4; y++) {
      const int64_t r = r0 + tr + y;
      if (r < r_count) c[j * ldc + r] -= acc[x][y];
    }
  }
}
