// The write walk of fpx.cu's dequant kernels (weights alone, and weights with verify).
//
// A lane's weights are scattered (8 rows, pairs of columns), so to write them the four warps of
// each half-block, four consecutive chunks of one slab (the chunk count per slab, N/16, is a
// multiple of 4), stage their 64×64 tile in shared memory, as fp16 pairs with fp16 output (one
// packed conversion per pair, half the shared-memory traffic of float32) or float32 pairs; the
// half-block then writes it row by row in 16-byte stores. The next round's words are loaded
// before the barriers, so their latency passes while the tile is written.
#pragma once
#include "fpx-half.cuh"
#include "fpx-verify.cuh"

// Threads staging one 64×64 tile, and its row pitch in 4-byte words: float32 pairs 64 + 8 (the
// lanes' 8-byte writes, 4 rows × 4 pairs a half-warp, fall in 32 different banks), fp16 pairs
// 32 + 4 (a warp's 4-byte writes, 8 rows × 4 pairs, likewise). Both keep rows 16-byte aligned.
#define LQ_FPX_HALF_THREADS 128
#define LQ_FPX_PITCH_F32 72
#define LQ_FPX_PITCH_F16 36

// Weights (and verify, when `reference` is set): decode into the half-block's staged tile, then
// write it row by row (16-byte pieces: 8 fp16 or 4 float32 weights; 8 contiguous threads cover
// a row's 128 or 256 bytes). `staged`: two tiles of 64 rows × the pitch. HALF (fp16 output
// without verify, ebits ≤ LQ_FPX_HALF_MAX_EBITS: the caller checks): the pairs come from
// fpx-half.cuh's packed decode, the same bits as the float32 path rounded.
template <int NBITS, bool F16, bool VERIFY, bool HALF = false>
__device__ __forceinline__ void lq_fpx_write_lanes(const lq_fpx_args& a, uint32_t* staged, double& max_abs, double& sq_err, double& sq_ref) {
  static_assert(!HALF || (F16 && !VERIFY), "the packed fp16 decode gives fp16 bits only");
  constexpr int PITCH = F16 ? LQ_FPX_PITCH_F16 : LQ_FPX_PITCH_F32, PIECES_PER_ROW = F16 ? 8 : 16, WORDS_PER_PIECE = 4, BATCH = F16 ? 4 : 2;
  // Rows of the tile one store instruction of the half-block covers.
  constexpr int ROWS_PER_STORE = LQ_FPX_HALF_THREADS / PIECES_PER_ROW;
  const int half = (int)threadIdx.x / LQ_FPX_HALF_THREADS, t = (int)threadIdx.x % LQ_FPX_HALF_THREADS;
  uint32_t* tile = staged + half * 64 * PITCH;
  // Lane indices are 32-bit (the setup refuses 2^37 weights, so lanes < 2^32), the grid walk
  // 64-bit (any grid), element offsets 64-bit.
  const uint32_t lanes = (uint32_t)a.lanes;
  const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
  // Row and word of the lane's first pair inside the tile: its chunk's 16 columns, then its own.
  const int lane = t % LQ_FPX_LANES, tile_row = lane / 4;
  const int tile_word = ((t / LQ_FPX_LANES) * LQ_FPX_TILE_COLS + 2 * (lane % 4)) / (F16 ? 2 : 1);
  // The thread's first piece in the tile (row t / PIECES_PER_ROW, its 16 bytes of the row), as an
  // element offset from the tile's first element, and the offset from one store to the next.
  const int64_t piece_at = (int64_t)(t / PIECES_PER_ROW) * a.n_cols + (t % PIECES_PER_ROW) * (F16 ? 8 : 4);
  const int64_t store_step = (int64_t)ROWS_PER_STORE * a.n_cols;
  uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
  // Prefetched words of this round (without verify); an index past the end is clamped (loaded,
  // never used).
  lq_fpx_lane_words<NBITS> next{};
  if constexpr (!VERIFY) next = lq_fpx_load_words<NBITS>(a, (uint32_t)min(i, (uint64_t)lanes - 1u));
  // a.lanes is a multiple of 128 (a 64×64 tile is 128 lanes), so a half-block's four chunks are
  // all present or all absent; the loop bound is uniform for the barriers.
  for (uint64_t base = (uint64_t)blockIdx.x * blockDim.x; base < lanes; base += stride, i += stride) {
    const bool active = i < lanes;
    const uint32_t at = (uint32_t)min(i, (uint64_t)lanes - 1u);
    // With verify the round's own reference loads are in flight with its words, and the
    // prefetch's registers would spill: the words are loaded here.
    const lq_fpx_lane_words<NBITS> w = VERIFY ? lq_fpx_load_words<NBITS>(a, at) : next;
    // The half-block's four chunks lie in one slab (the chunks per slab, N/16, are a multiple of
    // 4, and the first is too): its tile starts at row 64·slab, column 16·(its first chunk's tile).
    const uint32_t first_chunk = (at - (uint32_t)t) / LQ_FPX_LANES, slab = first_chunk / a.tiles, first_tile = first_chunk - slab * a.tiles;
    const uint32_t row0 = slab * LQ_FPX_SLAB_ROWS + (uint32_t)tile_row;  // < M < 2^31
    const int64_t tile_at = (int64_t)slab * LQ_FPX_SLAB_ROWS * a.n_cols + (int64_t)first_tile * LQ_FPX_TILE_COLS;
    if (active) {
      uint32_t scale2[4];
      lq_fpx_load_scales(a, row0, scale2);
      if constexpr (HALF) {
        uint32_t pairs[16];
        lq_fpx_half_pairs<NBITS>(w, scale2, a.half_right, a.half_unbias2, pairs);
#pragma unroll
        for (int q = 0; q < 16; q++) {
          const int k = q >> 2, g = (q >> 1) & 1, d = q & 1;
          tile[(16 * k + 8 * d + tile_row) * PITCH + tile_word + 4 * g] = pairs[q];
        }
      } else {
        // With verify, the reference pairs' place (lq_fpx_place's, from the lane's own chunk).
        const lq_fpx_lane_place place{(int64_t)row0, (int64_t)(first_tile + (uint32_t)(t / LQ_FPX_LANES)) * LQ_FPX_TILE_COLS + 2 * (lane % 4)};
        // Four quarters of 4 pairs, each with its reference pairs loaded first under VERIFY (the
        // staged path holds more registers than verify alone); the terms in verify alone's order.
#pragma unroll
        for (int q0 = 0; q0 < 16; q0 += 4) {
          float2 r[4];
          if constexpr (VERIFY) {
#pragma unroll
            for (int q = q0; q < q0 + 4; q++) r[q - q0] = lq_fpx_reference_pair(a, place, q);
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
    }
    // The next round's words, unless the block has none (a grid as large as the work: the
    // block's only round).
    if constexpr (!VERIFY) {
      if (base + stride < lanes) next = lq_fpx_load_words<NBITS>(a, (uint32_t)min(i + stride, (uint64_t)lanes - 1u));
    }
    __syncthreads();
    if (active) {
      // In batches of pieces, shared loads first (fp16: the whole tile's 4 a thread; float32:
      // 2 of its 8 at a time, which keeps the float32 path within 64 registers unspilled).
      const int64_t thread_at = tile_at + piece_at;
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
          // Piece (batch + s)·128 + t: row (batch + s)·ROWS_PER_STORE + t / PIECES_PER_ROW.
          const int64_t to = thread_at + (batch + s) * store_step;
          // st.global.v4 explicitly: a plain uint4 assignment was seen split into 4-byte stores.
          if constexpr (F16) __stwb(reinterpret_cast<uint4*>(static_cast<__half*>(a.out) + to), piece[s]);
          else __stwb(reinterpret_cast<uint4*>(static_cast<float*>(a.out) + to), piece[s]);
        }
      }
    }
    __syncthreads();
  }
}
