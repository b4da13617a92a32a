// U = chol_upper(H⁻¹) for GPTQ (kernels/linalg/cholesky-gpu.ts), the sequence of
// formats/second-order/cholesky.ts upperCholeskyOfInverse: reverse H (A = J·H·J), A = L·Lᵀ,
// X = L⁻¹, U = J·X·J. Float64 throughout, n×n row-major, panels of LQ_NB columns:
//
//   Cholesky, right-looking, per panel k:  lq_chol_f64_factor_diag   A[k,k] = L[k,k]·L[k,k]ᵀ
//                                          lq_trsm_f64_x_lt          L[k+,k] = A[k+,k]·L[k,k]⁻ᵀ
//                                          lq_gemm_f64_a_bt_sub_lower A[k+,k+] −= L[k+,k]·L[k+,k]ᵀ
//   Inverse, L·X = I by block rows, per k: lq_trsm_f64_l_x           X[k,:k+] = L[k,k]⁻¹·B[k,:k+]
//                                          lq_gemm_f64_a_b_sub       B[k+,:k+] −= L[k+,k]·X[k,:k+]
//
// Only lower triangles are read. Every product is an explicit fma, so that nvcc's contraction
// cannot change the rounding: a host build of these bodies (the emulation the tests were checked
// against) rounds the same way. The sums run in an order of their own: U agrees with the CPU's to
// float64 rounding (times the conditioning), not bit for bit.
#pragma once
#include <stdint.h>
#include "gemm.cuh"  // LQ_GEMM_THREADS, TILE_J, TILE_R, TILE_B: the trailing update shares its tiling

#define LQ_NB 64

// The first pivot that is not > 0 (NaN included, as on the CPU). The host zeroes it before the
// factorization and reads it once after: column_plus_one stays 0 while every pivot was positive.
struct lq_pivot_report {
  int64_t column_plus_one;
  double pivot;
};

// dst[i] = src[count − 1 − i]: reversing both indices of a row-major n×n matrix (J·A·J).
extern "C" __global__ void __launch_bounds__(LQ_GEMM_THREADS) lq_f64_reverse(
    double* __restrict__ dst, const double* __restrict__ src, int64_t count) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (int64_t)gridDim.x * blockDim.x) dst[i] = src[count - 1 - i];
}

// x = I (n×n): the right-hand side the inversion solves against.
extern "C" __global__ void __launch_bounds__(LQ_GEMM_THREADS) lq_f64_identity(double* __restrict__ x, int64_t n) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n * n; i += (int64_t)gridDim.x * blockDim.x) x[i] = i / n == i % n ? 1.0 : 0.0;
}

// Unblocked Cholesky of the width×width diagonal block at (k0, k0), in shared memory, on one
// block: per column, the pivot, the column divided by its root, then the trailing block's update
// (CPU factorDiagonalBlock's subtractions, in the same order p = k0, k0+1, …). The first
// non-positive pivot goes to `report` with its column and the block returns; a later launch sees
// the report and returns at once, so the report keeps the first failure and the panels after it
// do no work worth the name (their TRSM and update run on garbage that the host throws away).
extern "C" __global__ void __launch_bounds__(LQ_GEMM_THREADS) lq_chol_f64_factor_diag(
    double* __restrict__ a, int64_t lda, int64_t k0, int width, lq_pivot_report* __restrict__ report) {
  __shared__ double block[LQ_NB][LQ_NB + 1];
  // Both uniform per block. The host never launches width > LQ_NB; this only guards shared memory.
  if (report->column_plus_one != 0 || width < 1 || width > LQ_NB) return;
  double* diagonal_block = a + k0 * lda + k0;
  for (int e = threadIdx.x; e < width * width; e += blockDim.x) {
    const int r = e / width, c = e % width;
    if (c <= r) block[r][c] = diagonal_block[r * lda + c];
  }
  for (int j = 0; j < width; j++) {
    __syncthreads();
    const double pivot = block[j][j];
    // Every thread reads the same pivot, so the whole block returns together.
    if (!(pivot > 0)) {
      if (threadIdx.x == 0) report->pivot = pivot, report->column_plus_one = k0 + j + 1;
      return;
    }
    const double root = sqrt(pivot);
    for (int i = j + 1 + threadIdx.x; i < width; i += blockDim.x) block[i][j] /= root;
    __syncthreads();
    // Nothing reads block[j][j] in this phase: the pivot was read before the barrier.
    if (threadIdx.x == 0) block[j][j] = root;
    const int rest = width - 1 - j;
    for (int e = threadIdx.x; e < rest * rest; e += blockDim.x) {
      const int i = j + 1 + e / rest, c = j + 1 + e % rest;
      if (c <= i) block[i][c] = fma(-block[i][j], block[c][j], block[i][c]);
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < width * width; e += blockDim.x) {
    const int r = e / width, c = e % width;
    if (c <= r) diagonal_block[r * lda + c] = block[r][c];
  }
}

// Forward substitution against the lower solve_count×solve_count block l (leading dimension ldl)
// of every vector x(·, t): x(s, t) at x[s·s_stride + t·t_stride], the solve running along s, the
// t independent. One block takes LQ_NB values of t and stages them in shared memory; per step r,
// x(r, ·) is divided by l[r][r] (final), then x(s, ·) −= l[s][r]·x(r, ·) for s > r: each x(s, t)
// gets its subtractions in the order r = 0, 1, … as CPU solvePanel's sums. l is read from global
// memory: one broadcast load per warp and step, served from L1. S_CONTIGUOUS picks the loading
// order that keeps global reads coalesced (consecutive threads, consecutive addresses).
template <bool S_CONTIGUOUS>
__device__ __forceinline__ void lq_trsm_f64_lower(double* __restrict__ x, const double* __restrict__ l, int solve_count, int64_t t_count, int64_t s_stride, int64_t t_stride, int64_t ldl) {
  __shared__ double tile[LQ_NB][LQ_NB + 1];
  // Uniform per block; the host never launches solve_count > LQ_NB (a guard for shared memory).
  if (solve_count < 1 || solve_count > LQ_NB) return;
  const int64_t t0 = (int64_t)blockIdx.x * LQ_NB;
  const int t_width = (int)min((int64_t)LQ_NB, t_count - t0);
  for (int e = threadIdx.x; e < LQ_NB * LQ_NB; e += blockDim.x) {
    const int s = S_CONTIGUOUS ? e % LQ_NB : e / LQ_NB, t = S_CONTIGUOUS ? e / LQ_NB : e % LQ_NB;
    if (s < solve_count && t < t_width) tile[s][t] = x[s * s_stride + (t0 + t) * t_stride];
  }
  for (int r = 0; r < solve_count; r++) {
    __syncthreads();
    const double diagonal = l[r * ldl + r];
    for (int t = threadIdx.x; t < t_width; t += blockDim.x) tile[r][t] /= diagonal;
    __syncthreads();
    for (int e = threadIdx.x; e < (solve_count - 1 - r) * LQ_NB; e += blockDim.x) {
      const int s = r + 1 + e / LQ_NB, t = e % LQ_NB;
      if (t < t_width) tile[s][t] = fma(-l[s * ldl + r], tile[r][t], tile[s][t]);
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < LQ_NB * LQ_NB; e += blockDim.x) {
    const int s = S_CONTIGUOUS ? e % LQ_NB : e / LQ_NB, t = S_CONTIGUOUS ? e / LQ_NB : e % LQ_NB;
    if (s < solve_count && t < t_width) x[s * s_stride + (t0 + t) * t_stride] = tile[s][t];
  }
}

// The Cholesky panel: row i of x (rows × width, leading dimension ldx) becomes the solution of
// y·lᵀ = x[i], i.e. x ← x·l⁻ᵀ. The solve runs along a row (contiguous).
extern "C" __global__ void __launch_bounds__(LQ_GEMM_THREADS) lq_trsm_f64_x_lt(
    double* __restrict__ x, const double* __restrict__ l, int width, int64_t rows, int64_t ldx, int64_t ldl) {
  lq_trsm_f64_lower<true>(x, l, width, rows, 1, ldx, ldl);
}

// The inversion's block row: column j of x (width × columns, leading dimension ldx) becomes
// l⁻¹·x[:, j]. The solve runs down a column (stride ldx); the columns are contiguous.
extern "C" __global__ void __launch_bounds__(LQ_GEMM_THREADS) lq_trsm_f64_l_x(
    double* __restrict__ x, const double* __restrict__ l, int width, int64_t columns, int64_t ldx, int64_t ldl) {
  lq_trsm_f64_lower<false>(x, l, width, columns, ldx, 1, ldl);
}

// C[i][j] −= Σ_p A[i][p] · op(B)[p][j] (C: I×J, A: I×P row-major; B: P×J, or J×P read transposed
// when B_TRANSPOSED), with lq_gemm_f64_at_b_sub's tiling: 256 threads per 64 × 64 tile of C, 4×4
// registers each, P in slices of TILE_B staged in shared memory. The rows of 16 p that A (and a
// transposed B) are read in land in shared memory as columns: the extra column of padding turns
// the 16-way bank conflict of those stores into a 2-way one. LOWER computes only j ≤ i, for the
// Cholesky's trailing update, whose C starts on the diagonal: the tiles right of it return at once
// (uniform per block) and the diagonal tiles skip their upper half.
template <bool B_TRANSPOSED, bool LOWER>
__device__ __forceinline__ void lq_gemm_f64_a_b_sub_tiles(double* __restrict__ c, const double* __restrict__ a, const double* __restrict__ b,
                                                          int64_t i_count, int64_t j_count, int64_t p_count, int64_t ldc, int64_t lda, int64_t ldb) {
  __shared__ double a_tile[TILE_B][TILE_J + 1];
  __shared__ double b_tile[TILE_B][TILE_R + 1];
  const int64_t i0 = (int64_t)blockIdx.y * TILE_J, j0 = (int64_t)blockIdx.x * TILE_R;
  if (LOWER && j0 >= i0 + TILE_J) return;
  const int ti = (threadIdx.x / 16) * 4, tj = (threadIdx.x % 16) * 4;
  double acc[4][4] = {};
  for (int64_t p0 = 0; p0 < p_count; p0 += TILE_B) {
    for (int e = threadIdx.x; e < TILE_B * TILE_J; e += LQ_GEMM_THREADS) {
      // 16 consecutive threads read 16 consecutive p of one row of A (and of a transposed B).
      const int pr = e % TILE_B, r = e / TILE_B;
      a_tile[pr][r] = (p0 + pr < p_count && i0 + r < i_count) ? a[(i0 + r) * lda + p0 + pr] : 0.0;
      if (B_TRANSPOSED) {
        b_tile[pr][r] = (p0 + pr < p_count && j0 + r < j_count) ? b[(j0 + r) * ldb + p0 + pr] : 0.0;
      } else {
        // A row of B is contiguous along j: 64 consecutive threads read it.
        const int pc = e / TILE_R, q = e % TILE_R;
        b_tile[pc][q] = (p0 + pc < p_count && j0 + q < j_count) ? b[(p0 + pc) * ldb + j0 + q] : 0.0;
      }
    }
    __syncthreads();
#pragma unroll
    for (int pk = 0; pk < TILE_B; pk++) {
      double av[4], bv[4];
#pragma unroll
      for (int u = 0; u < 4; u++) av[u] = a_tile[pk][ti + u], bv[u] = b_tile[pk][tj + u];
#pragma unroll
      for (int u = 0; u < 4; u++)
#pragma unroll
        for (int v = 0; v < 4; v++) acc[u][v] = fma(av[u], bv[v], acc[u][v]);
    }
    __syncthreads();
  }
  for (int u = 0; u < 4; u++) {
    const int64_t i = i0 + ti + u;
    if (i >= i_count) continue;
    for (int v = 0; v < 4; v++) {
      const int64_t j = j0 + tj + v;
      if (j < j_count && (!LOWER || j <= i)) c[i * ldc + j] -= acc[u][v];
    }
  }
}

// The Cholesky's trailing update: C −= A·Aᵀ (pass A twice), lower triangle only.
extern "C" __global__ void __launch_bounds__(LQ_GEMM_THREADS) lq_gemm_f64_a_bt_sub_lower(
    double* __restrict__ c, const double* __restrict__ a, const double* __restrict__ b, int64_t i_count, int64_t j_count, int64_t p_count, int64_t ldc, int64_t lda, int64_t ldb) {
  lq_gemm_f64_a_b_sub_tiles<true, true>(c, a, b, i_count, j_count, p_count, ldc, lda, ldb);
}

// The inversion's update of the right-hand sides below a solved block row: C −= A·B.
extern "C" __global__ void __launch_bounds__(LQ_GEMM_THREADS) lq_gemm_f64_a_b_sub(
    double* __restrict__ c, const double* __restrict__ a, const double* __restrict__ b, int64_t i_count, int64_t j_count, int64_t p_count, int64_t ldc, int64_t lda, int64_t ldb) {
  lq_gemm_f64_a_b_sub_tiles<false, false>(c, a, b, i_count, j_count, p_count, ldc, lda, ldb);
}
