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
//
// lq_gemm_f64 (below) is the general product; cholesky.cuh's products reuse the tile constants
// and thread count defined here.
#pragma once
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

// lq_gemm_f64:  C = alpha · op(A) · op(B) + beta · C, the general product behind gemmF64
// (kernels/linalg/dgemm.ts) when cuBLAS is absent or the product is small. Row-major: C is m×n
// (leading dimension ldc), op(A) m×k, op(B) k×n, where op(A) = A (stored m×k, lda ≥ k) or Aᵀ
// when trans_a (A stored k×m, lda ≥ m), and likewise for B (k×n, ldb ≥ n; or n×k, ldb ≥ k).
// BLAS semantics at the edges: beta = 0 writes alpha·op(A)·op(B) without reading C (C may hold
// NaN or garbage), and alpha = 0 reads neither A nor B.
//
// Tiling: lq_gemm_f64_at_b_sub's, 256 threads per 64 × 64 tile of C, k in slices of TILE_B
// staged in shared memory as [k][row] and [k][column]. A thread sums rows ti … ti+3 and columns
// tj, tj+16, tj+32, tj+48 (lq_syrk_f32_to_f64_add's spacing): a warp's read of b_tile is then 16
// consecutive doubles, one shared-memory wavefront, and its stores to C are 16 consecutive
// doubles. Each operand is read from global memory along its contiguous axis whatever the
// transpose flag (uniform per launch, so the branches never diverge); the padding column turns
// the stores of rows read along k into 2-way bank conflicts instead of 16-way.
//
// Rounding: one explicit fma per term, k in ascending order, then C = fma(alpha, sum, beta·C)
// (alpha·sum when beta = 0): alpha = −1, beta = 1 gives C − sum rounded once, as
// lq_gemm_f64_at_b_sub. The CPU sums in its own order: the two agree to float64 rounding.
extern "C" __global__ void __launch_bounds__(LQ_GEMM_THREADS) lq_gemm_f64(
    double* __restrict__ c, const double* __restrict__ a, const double* __restrict__ b,
    int64_t m, int64_t n, int64_t k, int64_t ldc, int64_t lda, int64_t ldb,
    double alpha, double beta, int trans_a, int trans_b) {
  __shared__ double a_tile[TILE_B][TILE_J + 1];
  __shared__ double b_tile[TILE_B][TILE_R + 1];
  const int64_t i0 = (int64_t)blockIdx.y * TILE_J, j0 = (int64_t)blockIdx.x * TILE_R;
  const int ti = (threadIdx.x / 16) * 4, tj = threadIdx.x % 16;
  // alpha = 0: the product is not needed, and A and B may be anything (BLAS).
  const int64_t k_count = alpha == 0.0 ? 0 : k;
  double acc[4][4] = {};
  for (int64_t p0 = 0; p0 < k_count; p0 += TILE_B) {
    // 256 threads load 16 k × 64 rows (and 64 columns): 4 elements each.
    for (int e = threadIdx.x; e < TILE_B * TILE_J; e += LQ_GEMM_THREADS) {
      if (trans_a) {
        // A is k×m: a row of it runs along i, 64 consecutive threads read it.
        const int pk = e / TILE_J, r = e % TILE_J;
        a_tile[pk][r] = (p0 + pk < k_count && i0 + r < m) ? a[(p0 + pk) * lda + i0 + r] : 0.0;
      } else {
        // A is m×k: 16 consecutive threads read 16 consecutive k of one row.
        const int pk = e % TILE_B, r = e / TILE_B;
        a_tile[pk][r] = (p0 + pk < k_count && i0 + r < m) ? a[(i0 + r) * lda + p0 + pk] : 0.0;
      }
      if (trans_b) {
        // B is n×k: 16 consecutive threads read 16 consecutive k of one row.
        const int pk = e % TILE_B, q = e / TILE_B;
        b_tile[pk][q] = (p0 + pk < k_count && j0 + q < n) ? b[(j0 + q) * ldb + p0 + pk] : 0.0;
      } else {
        // B is k×n: a row of it runs along j, 64 consecutive threads read it.
        const int pk = e / TILE_R, q = e % TILE_R;
        b_tile[pk][q] = (p0 + pk < k_count && j0 + q < n) ? b[(p0 + pk) * ldb + j0 + q] : 0.0;
      }
    }
    __syncthreads();
#pragma unroll
    for (int pk = 0; pk < TILE_B; pk++) {
      double av[4], bv[4];
#pragma unroll
      for (int u = 0; u < 4; u++) av[u] = a_tile[pk][ti + u], bv[u] = b_tile[pk][tj + 16 * u];
#pragma unroll
      for (int u = 0; u < 4; u++)
#pragma unroll
        for (int v = 0; v < 4; v++) acc[u][v] = fma(av[u], bv[v], acc[u][v]);
    }
    __syncthreads();
  }
  for (int u = 0; u < 4; u++) {
    const int64_t i = i0 + ti + u;
    if (i >= m) continue;
    for (int v = 0; v < 4; v++) {
      const int64_t j = j0 + tj + 16 * v;
      if (j >= n) continue;
      double* element = c + i * ldc + j;
      *element = beta == 0.0 ? alpha * acc[u][v] : fma(alpha, acc[u][v], beta * *element);
    }
  }
}
