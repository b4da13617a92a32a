// FPx dequant and dequant-verify (layout and formula in fpx.cuh). One thread per lane of a
// (64-row, 16-column) chunk: it loads the lane's y words of each region (consecutive threads
// read consecutive words, so a warp reads 128 contiguous bytes per word) and peels its 32 codes
// with shifts known at compile time. The grid walks the lanes block-stride: any grid gives the
// same weights (launch.ts: a block per 256 lanes for weights alone, a persistent grid, every
// block resident at once, for verify).
//
// A lane's weights are scattered (8 rows, pairs of columns), so to write them the four warps of
// each half-block, four consecutive chunks of one slab (the chunk count per slab, N/16, is a
// multiple of 4), stage their 64×64 tile in shared memory, as fp16 pairs with fp16 output (one
// packed conversion per pair, half the shared-memory traffic of float32) or float32 pairs; the
// half-block then writes it row by row in 16-byte stores. The next round's words are loaded
// before the barriers, so their latency passes while the tile is written.
//
// Verify needs no staging: each lane reads its own reference pairs (8-byte loads, a warp's
// covering whole 32-byte sectors) and accumulates in registers, in the same order with or without
// weights, so verify alone and verify with weights give the same partials; verify alone runs no
// barrier at all and keeps 128 reference bytes a lane in flight.
#include "fpx.cuh"
#include "../common/status.h"
#include "../common/verify.cuh"

// Threads per block (two half-blocks of four chunks each; a multiple of 32, so every warp is one
// chunk's lanes) and the blocks a multiprocessor holds together (≤ 64 registers a thread):
// launch.ts's THREADS and BLOCKS_PER_SM.
#define LQ_VERIFY_THREADS 256
#define LQ_FPX_MIN_BLOCKS 4
// Threads staging one 64×64 tile, and its row pitch in 4-byte words: float32 pairs 64 + 8 (the
// lanes' 8-byte writes, 4 rows × 4 pairs a half-warp, fall in 32 different banks), fp16 pairs
// 32 + 4 (a warp's 4-byte writes, 8 rows × 4 pairs, likewise). Both keep rows 16-byte aligned.
#define LQ_FPX_HALF_THREADS 128
#define LQ_FPX_PITCH_F32 72
#define LQ_FPX_PITCH_F16 36

// The reference weights of the lane's pair q (rows and columns as lq_fpx_place says): 8 bytes,
// so a warp's load covers 8 rows × 32 contiguous bytes, whole sectors.
__device__ __forceinline__ float2 lq_fpx_reference_pair(const lq_fpx_args& a, lq_fpx_lane_place at, int q) {
  const int k = q >> 2, g = (q >> 1) & 1, d = q & 1;
  return __ldg(reinterpret_cast<const float2*>(a.reference + (at.row0 + 16 * k + 8 * d) * a.n_cols + at.col0 + 8 * g));
}

// Adds the lane's 32 errors to the thread's sums: the 16 reference pairs loaded first (128 bytes
// in flight), then decoded and compared pair by pair, q = 0 … 15.
template <int NBITS>
__device__ __forceinline__ void lq_fpx_verify_lane(const lq_fpx_args& a, const lq_fpx_lane_words<NBITS>& w, const uint32_t scale2[4], lq_fpx_lane_place at,
                                                   double& max_abs, double& sq_err, double& sq_ref) {
  float2 r[16];
#pragma unroll
  for (int q = 0; q < 16; q++) r[q] = lq_fpx_reference_pair(a, at, q);
#pragma unroll
  for (int q = 0; q < 16; q++) {
    const float2 v = lq_fpx_pair<NBITS>(a, w, scale2, q);
    lq_verify_accumulate(v.x, r[q].x, max_abs, sq_err, sq_ref);
    lq_verify_accumulate(v.y, r[q].y, max_abs, sq_err, sq_ref);
  }
}

// Verify alone: no weights written, so no staging and no barrier.
template <int NBITS>
__device__ __forceinline__ void lq_fpx_verify_lanes(const lq_fpx_args& a, double& max_abs, double& sq_err, double& sq_ref) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < a.lanes; i += stride) {
    const lq_fpx_lane_words<NBITS> w = lq_fpx_load_words<NBITS>(a, i);
    const lq_fpx_lane_place at = lq_fpx_place(a, i);
    uint32_t scale2[4];
    lq_fpx_load_scales(a, at.row0, scale2);
    lq_fpx_verify_lane<NBITS>(a, w, scale2, at, max_abs, sq_err, sq_ref);
  }
}

// Weights (and verify, when `reference` is set): decode into the half-block's staged tile, then
// write it row by row (16-byte pieces: 8 fp16 or 4 float32 weights; 8 contiguous threads cover
// a row's 128 or 256 bytes). `staged`: two tiles of 64 rows × the pitch.
template <int NBITS, bool F16, bool VERIFY>
__device__ __forceinline__ void lq_fpx_write_lanes(const lq_fpx_args& a, uint32_t* staged, double& max_abs, double& sq_err, double& sq_ref) {
  constexpr int PITCH = F16 ? LQ_FPX_PITCH_F16 : LQ_FPX_PITCH_F32, PIECES_PER_ROW = F16 ? 8 : 16, WORDS_PER_PIECE = 4, BATCH = F16 ? 4 : 2;
  const int half = (int)threadIdx.x / LQ_FPX_HALF_THREADS, t = (int)threadIdx.x % LQ_FPX_HALF_THREADS;
  uint32_t* tile = staged + half * 64 * PITCH;
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  // Row and word of the lane's first pair inside the tile: its chunk's 16 columns, then its own.
  const int lane = t % LQ_FPX_LANES, tile_row = lane / 4;
  const int tile_word = ((t / LQ_FPX_LANES) * LQ_FPX_TILE_COLS + 2 * (lane % 4)) / (F16 ? 2 : 1);
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  // Prefetched words of this round (without verify); an index past the end is clamped (loaded,
  // never used).
  lq_fpx_lane_words<NBITS> next{};
  if constexpr (!VERIFY) next = lq_fpx_load_words<NBITS>(a, min(i, a.lanes - 1));
  // a.lanes is a multiple of 128 (a 64×64 tile is 128 lanes), so a half-block's four chunks are
  // all present or all absent; the loop bound is uniform for the barriers.
  for (int64_t base = (int64_t)blockIdx.x * blockDim.x; base < a.lanes; base += stride, i += stride) {
    const bool active = i < a.lanes;
    // With verify the round's own reference loads are in flight with its words, and the
    // prefetch's registers would spill: the words are loaded here.
    const lq_fpx_lane_words<NBITS> w = VERIFY ? lq_fpx_load_words<NBITS>(a, min(i, a.lanes - 1)) : next;
    const lq_fpx_lane_place at = lq_fpx_place(a, min(i, a.lanes - 1));
    // The half-block's tile starts at slab row 64·slab and its first chunk's column.
    const int64_t tile_at = (at.row0 - tile_row) * a.n_cols + (at.col0 - 2 * (lane % 4)) - (t / LQ_FPX_LANES) * LQ_FPX_TILE_COLS;
    if (active) {
      uint32_t scale2[4];
      lq_fpx_load_scales(a, at.row0, scale2);
      // Four quarters of 4 pairs, each with its reference pairs loaded first under VERIFY (the
      // staged path holds more registers than verify alone); the terms in verify alone's order.
#pragma unroll
      for (int q0 = 0; q0 < 16; q0 += 4) {
        float2 r[4];
        if constexpr (VERIFY) {
#pragma unroll
          for (int q = q0; q < q0 + 4; q++) r[q - q0] = lq_fpx_reference_pair(a, at, q);
        }
#pragma unroll
        for (int q = q0; q < q0 + 4; q++) {
          const int k = q >> 2, g = (q >> 1) & 1, d = q & 1;
          const float2 v = lq_fpx_pair<NBITS>(a, w, scale2, q);
          const int row = 16 * k + 8 * d + tile_row;
          if constexpr (F16) {
            const __half2 h = __floats2half2_rn(v.x, v.y);
            tile[row * PITCH + tile_word + 4 * g] = *reinterpret_cast<const uint32_t*>(&h);
          } else {
            // One 8-byte store as a 64-bit integer (a float2 assignment was seen split in two).
            *reinterpret_cast<uint64_t*>(tile + row * PITCH + tile_word + 8 * g) = (uint64_t)__float_as_uint(v.y) << 32 | __float_as_uint(v.x);
          }
          if constexpr (VERIFY) {
            lq_verify_accumulate(v.x, r[q - q0].x, max_abs, sq_err, sq_ref);
            lq_verify_accumulate(v.y, r[q - q0].y, max_abs, sq_err, sq_ref);
          }
        }
      }
    }
    if constexpr (!VERIFY) next = lq_fpx_load_words<NBITS>(a, min(i + stride, a.lanes - 1));
    __syncthreads();
    if (active) {
      // In batches of pieces, shared loads first (fp16: the whole tile's 4 a thread; float32:
      // 2 of its 8 at a time, which keeps the float32 path within 64 registers unspilled).
#pragma unroll
      for (int batch = 0; batch < 64 * PIECES_PER_ROW / LQ_FPX_HALF_THREADS; batch += BATCH) {
        uint4 piece[BATCH];
#pragma unroll
        for (int s = 0; s < BATCH; s++) {
          const int p = (batch + s) * LQ_FPX_HALF_THREADS + t, row = p / PIECES_PER_ROW, column_word = (p % PIECES_PER_ROW) * WORDS_PER_PIECE;
          piece[s] = *reinterpret_cast<const uint4*>(tile + row * PITCH + column_word);
        }
#pragma unroll
        for (int s = 0; s < BATCH; s++) {
          const int p = (batch + s) * LQ_FPX_HALF_THREADS + t, row = p / PIECES_PER_ROW, column = (p % PIECES_PER_ROW) * (F16 ? 8 : 4);
          const int64_t to = tile_at + row * a.n_cols + column;
          // st.global.v4 explicitly: a plain uint4 assignment was seen split into 4-byte stores.
          if constexpr (F16) __stwb(reinterpret_cast<uint4*>(static_cast<__half*>(a.out) + to), piece[s]);
          else __stwb(reinterpret_cast<uint4*>(static_cast<float*>(a.out) + to), piece[s]);
        }
      }
    }
    __syncthreads();
  }
}

template <int NBITS>
__device__ __forceinline__ void lq_fpx_walk(const lq_fpx_args& a, bool f16, uint32_t* staged, double& max_abs, double& sq_err, double& sq_ref) {
  const bool verify = a.reference != nullptr;
  if (a.out == nullptr) {
    if (verify) lq_fpx_verify_lanes<NBITS>(a, max_abs, sq_err, sq_ref);
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
                  lq_fpx_unbias(ebits), mbits, ebits + mbits};
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

// Weights alone (out not null, no reference): the write walks of lq_fpx_dequant_verify without
// its verify paths, one kernel per output type so that ptxas allocates registers for each walk
// alone: in the combined kernel the other walks' pressure made the allocation spill (FP6 float32
// output: 9 local loads per round at 64 registers, sm_90), where these compile with none. Same
// launch shape as lq_fpx_dequant_verify, any grid (launch.ts: a block per 256 lanes), and the
// same weights.
template <bool F16>
__device__ __forceinline__ void lq_fpx_dequant_only(const uint32_t* packed, const uint16_t* scales, void* out, int64_t m_rows, int64_t n_cols, int32_t ebits, int32_t mbits, uint32_t* status) {
  __shared__ __align__(16) uint32_t staged[2 * 64 * LQ_FPX_PITCH_F32];
  lq_fpx_args a;
  int nbits;
  if (!lq_fpx_setup(packed, scales, out, nullptr, m_rows, n_cols, ebits, mbits, status, a, nbits)) return;
  if (out == nullptr) {
    if (threadIdx.x == 0 && blockIdx.x == 0) lq_report(status, LQ_STATUS_SHAPE);
    return;
  }
  double unused_max = 0.0, unused_err = 0.0, unused_ref = 0.0;
  switch (nbits) {
    case 3: lq_fpx_write_lanes<3, F16, false>(a, staged, unused_max, unused_err, unused_ref); break;
    case 4: lq_fpx_write_lanes<4, F16, false>(a, staged, unused_max, unused_err, unused_ref); break;
    case 5: lq_fpx_write_lanes<5, F16, false>(a, staged, unused_max, unused_err, unused_ref); break;
    case 6: lq_fpx_write_lanes<6, F16, false>(a, staged, unused_max, unused_err, unused_ref); break;
    default: lq_fpx_write_lanes<7, F16, false>(a, staged, unused_max, unused_err, unused_ref); break;
  }
}

// out: [M][N] fp16 bits (RNE from the float32 value).
extern "C" __global__ void __launch_bounds__(LQ_VERIFY_THREADS, LQ_FPX_MIN_BLOCKS) lq_fpx_dequant_f16(
    const uint32_t* __restrict__ packed, const uint16_t* __restrict__ scales, void* __restrict__ out, int64_t m_rows, int64_t n_cols, int32_t ebits, int32_t mbits, uint32_t* status) {
  lq_fpx_dequant_only<true>(packed, scales, out, m_rows, n_cols, ebits, mbits, status);
}
// out: [M][N] float32.
extern "C" __global__ void __launch_bounds__(LQ_VERIFY_THREADS, LQ_FPX_MIN_BLOCKS) lq_fpx_dequant_f32(
    const uint32_t* __restrict__ packed, const uint16_t* __restrict__ scales, void* __restrict__ out, int64_t m_rows, int64_t n_cols, int32_t ebits, int32_t mbits, uint32_t* status) {
  lq_fpx_dequant_only<false>(packed, scales, out, m_rows, n_cols, ebits, mbits, status);
}

// Verify alone (no weights): the barrier-free walk of lq_fpx_dequant_verify as a kernel of its
// own, for the reason lq_fpx_dequant_f16 / _f32 have theirs: in the combined kernel the write
// walks' pressure spilled the verify walk (268 bytes of spill stores at 64 registers, sm_90, local
// loads in the inner loop); alone it keeps its 16 reference pairs (128 bytes a lane) and the lane's
// words in registers. Same launch shape, grid and partials (one per block) as
// lq_fpx_dequant_verify, so the same statistics.
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
  switch (nbits) {
    case 3: lq_fpx_verify_lanes<3>(a, max_abs, sq_err, sq_ref); break;
    case 4: lq_fpx_verify_lanes<4>(a, max_abs, sq_err, sq_ref); break;
    case 5: lq_fpx_verify_lanes<5>(a, max_abs, sq_err, sq_ref); break;
    case 6: lq_fpx_verify_lanes<6>(a, max_abs, sq_err, sq_ref); break;
    default: lq_fpx_verify_lanes<7>(a, max_abs, sq_err, sq_ref); break;
  }
  lq_verify_block_reduce(max_abs, sq_err, sq_ref, reduce_space, partials);
}
