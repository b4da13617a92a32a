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
#pragma once
#include <stdint.h>

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

// X rounded to float32 on the device, for H += XᵀX on activations that never left it (sequential
// calibration on the GPU forward): out[i] = float32(in[i]), to nearest even, the rounding of a
// host Float32Array store, so H is the same as when X is narrowed on the host and uploaded.
extern "C" __global__ void __launch_bounds__(256) lq_narrow_f64_to_f32(const double* __restrict__ in, float* __restrict__ out, int64_t count) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= count) return;
  out[i] = __double2float_rn(in[i]);
}
