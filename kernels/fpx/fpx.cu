// FPx dequant and dequant-verify kernels (layout and formula in fpx.cuh). One thread per lane of
// a (64-row, 16-column) chunk: it loads the lane's y words of each region (consecutive threads
// read consecutive words, so a warp reads 128 contiguous bytes per word) and peels its 32 codes
// with shifts known at compile time. The grid walks the lanes block-stride: any grid gives the
// same weights (launch.ts chooses it). The walks: fpx-write.cuh (weights, staged through shared
// memory, with or without verify; fp16 through fpx-half.cuh where ebits ≤ 4) and fpx-verify.cuh
// (verify alone).
#include "fpx-write.cuh"
#include "../common/status.h"

// Threads per block (two half-blocks of four chunks each; a multiple of 32, so every warp is one
// chunk's lanes) and the blocks a multiprocessor holds together (≤ 64 registers a thread):
// launch.ts's THREADS and BLOCKS_PER_SM.
#define LQ_VERIFY_THREADS 256
#define LQ_FPX_MIN_BLOCKS 4
// lq_fpx_dequant_f16's: ≤ 40 registers (its packed decode needs 40 unspilled, sm_90; at 32 it
// spilled 260 bytes), and half the staging space, so 6 blocks (48 warps) fit a multiprocessor.
// (It runs a block per 256 lanes, launch.ts; the bound keeps 6 of them resident per multiprocessor.)
#define LQ_FPX_F16_MIN_BLOCKS 6

template <int NBITS>
__device__ __forceinline__ void lq_fpx_walk(const lq_fpx_args& a, bool f16, uint32_t* staged, double& max_abs, double& sq_err, double& sq_ref) {
  const bool verify = a.reference != nullptr;
  if (a.out == nullptr) {
    if (verify) lq_fpx_verify_lanes<NBITS, false, false>(a, max_abs, sq_err, sq_ref);
  } else if (f16) {
    if (verify) lq_fpx_write_lanes<NBITS, true, true>(a, staged, max_abs, sq_err, sq_ref);
    else lq_fpx_write_lanes<NBITS, true, false>(a, staged, max_abs, sq_err, sq_ref);
  } else {
    if (verify) lq_fpx_write_lanes<NBITS, false, true>(a, staged, max_abs, sq_err, sq_ref);
    else lq_fpx_write_lanes<NBITS, false, false>(a, staged, max_abs, sq_err, sq_ref);
  }
}

// m_rows · n_cols ≤ 2^37 for positive sizes (what m_rows ≤ 2^37 / n_cols says), by a 128-bit
// product instead of a 64-bit division: 2^37 does not fit 32 bits, so nvcc's division took its
// slow subroutine call in every thread, a cost that a block per 256 lanes pays per block.
__device__ __forceinline__ bool lq_fpx_weights_fit(int64_t m_rows, int64_t n_cols) {
  const uint64_t m = (uint64_t)m_rows, n = (uint64_t)n_cols;
  return __umul64hi(m, n) == 0 && m * n <= (UINT64_C(1) << 37);
}

// The kernels' shape check and argument set-up: false (and LQ_STATUS_SHAPE reported) for a shape
// or code width the layout cannot have. Every nbits-bit pattern is a code, so the shape is the only
// thing the kernel can find wrong. Layers of 2^37 weights or more are refused too: chunk indices
// stay 32-bit.
__device__ __forceinline__ bool lq_fpx_setup(const uint32_t* packed, const uint16_t* scales, void* out, const float* reference, int64_t m_rows, int64_t n_cols,
                                             int32_t ebits, int32_t mbits, uint32_t* status, lq_fpx_args& a, int& nbits) {
  const bool fields_ok = ebits >= 1 && ebits <= LQ_FPX_MAX_EBITS && mbits >= 0 && mbits <= LQ_FPX_MAX_MBITS;
  nbits = 1 + ebits + mbits;
  if (m_rows <= 0 || n_cols <= 0 || m_rows % LQ_FPX_SLAB_ROWS != 0 || n_cols % LQ_FPX_COL_MULTIPLE != 0 || !lq_fpx_weights_fit(m_rows, n_cols) || !fields_ok ||
      nbits < LQ_FPX_MIN_NBITS || nbits > LQ_FPX_MAX_NBITS || blockDim.x != LQ_VERIFY_THREADS || blockDim.y != 1 || blockDim.z != 1 || gridDim.y != 1 || gridDim.z != 1) {
    if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0 && blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z == 0) lq_report(status, LQ_STATUS_SHAPE);
    return false;
  }
  // One bit of width is M·N/32 words (region y holds y of them), in the order 1, 2, 4.
  const int64_t lanes = m_rows * n_cols / LQ_FPX_LANES;
  const int has1 = nbits & 1, has2 = (nbits >> 1) & 1;
  a = lq_fpx_args{packed, packed + has1 * lanes, packed + (has1 + 2 * has2) * lanes, scales, out, reference, lanes, (uint32_t)(n_cols / LQ_FPX_TILE_COLS), n_cols,
                  lq_fpx_unbias(ebits), 23 - mbits, (uint32_t)(5 - ebits), lq_fpx_half_unbias_bits(ebits)};
  return true;
}

// out (nullable): [M][N] weights, float32, or fp16 bits when out_f16 (RNE from the float32 value).
// reference (nullable): float32 [M][N] source weights to compare with, the partials (one per
// block) receiving max |w − ref|, Σ(w − ref)², Σ ref². Blocks of LQ_VERIFY_THREADS threads; any
// grid gives the same weights. (Weights alone: lq_fpx_dequant, the same weights.)
extern "C" __global__ void __launch_bounds__(LQ_VERIFY_THREADS, LQ_FPX_MIN_BLOCKS) lq_fpx_dequant_verify(
    const uint32_t* __restrict__ packed, const uint16_t* __restrict__ scales, void* __restrict__ out, const float* __restrict__ reference,
    lq_verify_partial* __restrict__ partials, int64_t m_rows, int64_t n_cols, int32_t ebits, int32_t mbits, int32_t out_f16, uint32_t* status) {
  // The two staged tiles (float32 pitch, the larger); the verify reduction reuses the space at the end.
  __shared__ __align__(16) uint32_t staged[2 * 64 * LQ_FPX_PITCH_F32];
  lq_fpx_args a;
  int nbits;
  if (!lq_fpx_setup(packed, scales, out, reference, m_rows, n_cols, ebits, mbits, status, a, nbits)) return;
  double max_abs = 0.0, sq_err = 0.0, sq_ref = 0.0;
  const bool f16 = out_f16 != 0;
  switch (nbits) {
    case 3: lq_fpx_walk<3>(a, f16, staged, max_abs, sq_err, sq_ref); break;
    case 4: lq_fpx_walk<4>(a, f16, staged, max_abs, sq_err, sq_ref); break;
    case 5: lq_fpx_walk<5>(a, f16, staged, max_abs, sq_err, sq_ref); break;
    case 6: lq_fpx_walk<6>(a, f16, staged, max_abs, sq_err, sq_ref); break;
    default: lq_fpx_walk<7>(a, f16, staged, max_abs, sq_err, sq_ref); break;
  }
  // Every thread is past its last read of `staged` (the write loop ends with __syncthreads).
  if (partials != nullptr) lq_verify_block_reduce(max_abs, sq_err, sq_ref, reinterpret_cast<double*>(staged), partials);
}

// The write walk of weights alone for a code width (3 … 7).
template <bool F16, bool HALF>
__device__ __forceinline__ void lq_fpx_dequant_widths(const lq_fpx_args& a, int nbits, uint32_t* staged) {
  double unused_max = 0.0, unused_err = 0.0, unused_ref = 0.0;
  switch (nbits) {
    case 3: lq_fpx_write_lanes<3, F16, false, HALF>(a, staged, unused_max, unused_err, unused_ref); break;
    case 4: lq_fpx_write_lanes<4, F16, false, HALF>(a, staged, unused_max, unused_err, unused_ref); break;
    case 5: lq_fpx_write_lanes<5, F16, false, HALF>(a, staged, unused_max, unused_err, unused_ref); break;
    case 6: lq_fpx_write_lanes<6, F16, false, HALF>(a, staged, unused_max, unused_err, unused_ref); break;
    default: lq_fpx_write_lanes<7, F16, false, HALF>(a, staged, unused_max, unused_err, unused_ref); break;
  }
}

// Weights alone (out not null, no reference): the write walks of lq_fpx_dequant_verify without
// its verify paths, one kernel per output type so that ptxas allocates registers for each walk
// alone: in the combined kernel the other walks' pressure made the allocation spill (FP6 float32
// output: 9 local loads per round at 64 registers, sm_90), where these compile with none. Same
// block shape as lq_fpx_dequant_verify, any grid (launch.ts chooses it), and the same weights.
template <bool F16>
__device__ __forceinline__ void lq_fpx_dequant_only(const uint32_t* packed, const uint16_t* scales, void* out, int64_t m_rows, int64_t n_cols, int32_t ebits, int32_t mbits, uint32_t* status) {
  // Two staged tiles of the output type's pitch (fp16: half the float32 space, so more blocks fit).
  __shared__ __align__(16) uint32_t staged[2 * 64 * (F16 ? LQ_FPX_PITCH_F16 : LQ_FPX_PITCH_F32)];
  lq_fpx_args a;
  int nbits;
  if (!lq_fpx_setup(packed, scales, out, nullptr, m_rows, n_cols, ebits, mbits, status, a, nbits)) return;
  if (out == nullptr) {
    if (threadIdx.x == 0 && blockIdx.x == 0) lq_report(status, LQ_STATUS_SHAPE);
    return;
  }
  // fp16 output takes the packed decode where the format fits it (every width up to ebits 4:
  // FP6 e3m2, e2m3); ebits 5 and 6 (6 and 7 bits only) the float32 path, rounded.
  if constexpr (F16) {
    if (ebits <= LQ_FPX_HALF_MAX_EBITS) {
      lq_fpx_dequant_widths<true, true>(a, nbits, staged);
      return;
    }
  }
  lq_fpx_dequant_widths<F16, false>(a, nbits, staged);
}

// out: [M][N] fp16 bits (RNE from the float32 value).
extern "C" __global__ void __launch_bounds__(LQ_VERIFY_THREADS, LQ_FPX_F16_MIN_BLOCKS) lq_fpx_dequant_f16(
    const uint32_t* __restrict__ packed, const uint16_t* __restrict__ scales, void* __restrict__ out, int64_t m_rows, int64_t n_cols, int32_t ebits, int32_t mbits, uint32_t* status) {
  lq_fpx_dequant_only<true>(packed, scales, out, m_rows, n_cols, ebits, mbits, status);
}
// out: [M][N] float32.
extern "C" __global__ void __launch_bounds__(LQ_VERIFY_THREADS, LQ_FPX_MIN_BLOCKS) lq_fpx_dequant_f32(
    const uint32_t* __restrict__ packed, const uint16_t* __restrict__ scales, void* __restrict__ out, int64_t m_rows, int64_t n_cols, int32_t ebits, int32_t mbits, uint32_t* status) {
  lq_fpx_dequant_only<false>(packed, scales, out, m_rows, n_cols, ebits, mbits, status);
}

// The verify-alone walk for a code width (3 … 7).
template <bool HALF>
__device__ __forceinline__ void lq_fpx_verify_widths(const lq_fpx_args& a, int nbits, double& max_abs, double& sq_err, double& sq_ref) {
  switch (nbits) {
    case 3: lq_fpx_verify_lanes<3, HALF, true>(a, max_abs, sq_err, sq_ref); break;
    case 4: lq_fpx_verify_lanes<4, HALF, true>(a, max_abs, sq_err, sq_ref); break;
    case 5: lq_fpx_verify_lanes<5, HALF, true>(a, max_abs, sq_err, sq_ref); break;
    case 6: lq_fpx_verify_lanes<6, HALF, true>(a, max_abs, sq_err, sq_ref); break;
    default: lq_fpx_verify_lanes<7, HALF, true>(a, max_abs, sq_err, sq_ref); break;
  }
}

// Verify alone (no weights): the barrier-free walk of lq_fpx_dequant_verify as a kernel of its
// own, for the reason lq_fpx_dequant_f16 / _f32 have theirs: in the combined kernel the write
// walks' pressure spilled the verify walk (268 bytes of spill stores at 64 registers, sm_90, local
// loads in the inner loop); alone it keeps its 16 reference pairs (128 bytes a lane) and the lane's
// words in registers. Same launch shape and grid as lq_fpx_dequant_verify, one partial per block;
// its lanes sum in two chains (fpx-verify.cuh), so the same statistics up to reordered sums.
extern "C" __global__ void __launch_bounds__(LQ_VERIFY_THREADS, LQ_FPX_MIN_BLOCKS) lq_fpx_verify(
    const uint32_t* __restrict__ packed, const uint16_t* __restrict__ scales, const float* __restrict__ reference, lq_verify_partial* __restrict__ partials,
    int64_t m_rows, int64_t n_cols, int32_t ebits, int32_t mbits, uint32_t* status) {
  // verify.cuh's reduction needs 3 · 32 doubles.
  __shared__ double reduce_space[3 * 32];
  lq_fpx_args a;
  int nbits;
  if (!lq_fpx_setup(packed, scales, nullptr, reference, m_rows, n_cols, ebits, mbits, status, a, nbits)) return;
  if (reference == nullptr || partials == nullptr) {
    if (threadIdx.x == 0 && blockIdx.x == 0) lq_report(status, LQ_STATUS_SHAPE);
    return;
  }
  double max_abs = 0.0, sq_err = 0.0, sq_ref = 0.0;
  // The packed decode where the format fits it (fpx-half.cuh), the float32 one elsewhere.
  if (ebits <= LQ_FPX_HALF_MAX_EBITS) lq_fpx_verify_widths<true>(a, nbits, max_abs, sq_err, sq_ref);
  else lq_fpx_verify_widths<false>(a, nbits, max_abs, sq_err, sq_ref);
  lq_verify_block_reduce(max_abs, sq_err, sq_ref, reduce_space, partials);
}
