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

// lq_syrk_f32_to_f64_add:  H[i][j] += scale · Σ_t X[t][i] · X[t][j]     (H: d×d row-major, X:
// tokens×d row-major with leading dimension ldx, float32). Calibration's H += XᵀX
// (converters/hessians/calibrate.ts passes scale 1: the store keeps the plain sum and the token
// count beside it) with the layer inputs rounded to float32 on the host.
//
// Tiling: the GEMM's (64×64 tiles, 256 threads with 4×4 sums each, 16-token slices in shared
// memory), with both operands X and a thread's columns 16 apart. Only the tiles on and above
// the diagonal (blockIdx.y ≤ blockIdx.x) compute; each one off the diagonal adds its sums to its
// own tile and to the mirror tile, and the blocks below the diagonal return at once. That halves
// the flops (d²·tokens instead of 2·d²·tokens). The mirror's read-modify-writes are strided (a
// warp's store spans 16 rows), but each element takes one per launch against 2·tokens flops for
// its sum: at calibration's 2048 tokens per batch, a small fraction of the kernel.
//
// Rounding: a float32 × float32 product is exact in float64 (24 + 24 significant bits ≤ 53), so
// each H element gets one sequential float64 sum over the batch's tokens, in token order, then
// H = fma(scale, sum, H). (i, j) and (j, i) get the same sum, so an H that starts symmetric
// (zero) stays symmetric bit for bit. The CPU sums in another order: the two agree to float64
// rounding, not bit for bit.
#define LQ_SYRK_THREADS 256
#define SYRK_TILE 64
#define SYRK_TILE_T 16

extern "C" __global__ void __launch_bounds__(LQ_SYRK_THREADS) lq_syrk_f32_to_f64_add(
    double* __restrict__ h, const float* __restrict__ x, int64_t d, int64_t tokens, int64_t ldx,
    double scale) {
  // A tile below the diagonal is written by its mirror's block. Uniform per block, so no thread
  // that returns here skips a __syncthreads another one waits at.
  if (blockIdx.y > blockIdx.x) return;
  __shared__ double i_tile[SYRK_TILE_T][SYRK_TILE];
  __shared__ double j_tile[SYRK_TILE_T][SYRK_TILE];
  const int64_t i0 = (int64_t)blockIdx.y * SYRK_TILE, j0 = (int64_t)blockIdx.x * SYRK_TILE;
  // A thread sums rows ti … ti+3 and columns tj, tj+16, tj+32, tj+48 of the tile. With columns
  // 16 apart, a warp's read of j_tile is 16 consecutive doubles, one shared-memory wavefront;
  // the GEMM's 4 adjacent columns per thread spread it over 512 bytes, four wavefronts, and the
  // shared-memory pipe, not the FMAs, would bound the loop.
  const int ti = (threadIdx.x / 16) * 4, tj = threadIdx.x % 16;
  double acc[4][4] = {};
  for (int64_t t0 = 0; t0 < tokens; t0 += SYRK_TILE_T) {
    // 256 threads load 16 tokens × 64 features of each side: 4 each, coalesced along features.
    // Widened to float64 here, once, so that the inner loop does no conversions: they issue at
    // a fraction of the FMA rate and would otherwise bound it.
    for (int k = threadIdx.x; k < SYRK_TILE_T * SYRK_TILE; k += LQ_SYRK_THREADS) {
      const int tk = k / SYRK_TILE, f = k % SYRK_TILE;
      const int64_t t = t0 + tk;
      i_tile[tk][f] = (t < tokens && i0 + f < d) ? (double)x[t * ldx + i0 + f] : 0.0;
      j_tile[tk][f] = (t < tokens && j0 + f < d) ? (double)x[t * ldx + j0 + f] : 0.0;
    }
    __syncthreads();
#pragma unroll
    for (int tk = 0; tk < SYRK_TILE_T; tk++) {
      double iv[4], jv[4];
#pragma unroll
      for (int a = 0; a < 4; a++) iv[a] = i_tile[tk][ti + a], jv[a] = j_tile[tk][tj + 16 * a];
#pragma unroll
      for (int a = 0; a < 4; a++)
#pragma unroll
        for (int b = 0; b < 4; b++) acc[a][b] = fma(iv[a], jv[b], acc[a][b]);
    }
    __syncthreads();
  }
  for (int a = 0; a < 4; a++) {
    const int64_t i = i0 + ti + a;
    if (i >= d) continue;
    for (int b = 0; b < 4; b++) {
      const int64_t j = j0 + tj + 16 * b;
      if (j >= d) continue;
      h[i * d + j] = fma(scale, acc[a][b], h[i * d + j]);
      // A diagonal tile holds both halves already.
      if (i0 != j0) h[j * d + i] = fma(scale, acc[a][b], h[j * d + i]);
    }
  }
}

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
