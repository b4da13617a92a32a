// FPx dequant and dequant-verify (layout and formula in fpx.cuh). One thread per lane of a
// (64-row, 16-column) chunk, over a block-stride loop: the thread loads the lane's y words of each
// region (consecutive threads read consecutive words, so a warp reads 128 contiguous bytes per
// word) and peels its 32 codes with shifts known at compile time. A lane's weights are scattered
// (8 rows, 2 columns apart in pairs), so the four warps of each half-block, four consecutive
// chunks of one slab (the chunk count per slab, N/16, is a multiple of 4), stage their 64×64 tile
// in shared memory; the half-block then writes it row by row: 16-byte stores (and 16-byte
// reference loads for verify), 128 contiguous bytes of fp16 per row. The launch configuration is
// chosen in launch.ts.
#include "fpx.cuh"
#include "../common/status.h"
#include "../common/verify.cuh"

// out (nullable): [M][N] weights, float32, or fp16 bits when out_f16 (RNE from the float32 value).
// reference (nullable): float32 [M][N] source weights to compare with, the partials (one per
// block) receiving max |w − ref|, Σ(w − ref)², Σ ref². Threads per block: LQ_VERIFY_THREADS (two
// half-blocks of four chunks each; a multiple of 32, so every warp is one chunk's lanes).
#define LQ_VERIFY_THREADS 256
// Threads staging one 64×64 tile, and its row pitch in floats: 8 more than 64, so that the lanes'
// float2 writes (4 rows × 4 pairs per half-warp) fall in 32 different banks.
#define LQ_FPX_HALF_THREADS 128
#define LQ_FPX_TILE_PITCH 72

// Writes (or compares) the half-block's staged 64×64 tile at rows row0…, columns col0…, in pieces
// of P consecutive weights of a row (P = 8 with fp16 output, 4 otherwise).
template <int P>
__device__ __forceinline__ void lq_fpx_write_tile(const float* tile, int t, void* __restrict__ out, const float* __restrict__ reference, int64_t row0, int64_t col0,
                                                  int64_t n_cols, bool out_f16, double& max_abs, double& sq_err, double& sq_ref) {
  constexpr int PIECES_PER_ROW = 64 / P;
#pragma unroll 2
  for (int k = 0; k < 64 * PIECES_PER_ROW / LQ_FPX_HALF_THREADS; k++) {
    const int piece = k * LQ_FPX_HALF_THREADS + t, row = piece / PIECES_PER_ROW, column = (piece % PIECES_PER_ROW) * P;
    float w[P];
#pragma unroll
    for (int j = 0; j < P; j += 4) {
      const float4 v = *reinterpret_cast<const float4*>(tile + row * LQ_FPX_TILE_PITCH + column + j);
      w[j] = v.x, w[j + 1] = v.y, w[j + 2] = v.z, w[j + 3] = v.w;
    }
    const int64_t at = (row0 + row) * n_cols + col0 + column;
    if (out != nullptr) lq_store_vector<P>(out, at, w, out_f16);
    if (reference != nullptr) {
#pragma unroll
      for (int j = 0; j < P; j += 4) {
        const float4 r = *reinterpret_cast<const float4*>(reference + at + j);
        lq_verify_accumulate(w[j], r.x, max_abs, sq_err, sq_ref);
        lq_verify_accumulate(w[j + 1], r.y, max_abs, sq_err, sq_ref);
        lq_verify_accumulate(w[j + 2], r.z, max_abs, sq_err, sq_ref);
        lq_verify_accumulate(w[j + 3], r.w, max_abs, sq_err, sq_ref);
      }
    }
  }
}

// The block-stride loop for one code width, so that the regions present, their words and every
// slot's shift are compile-time constants. Adds this thread's verify terms to max_abs, sq_err,
// sq_ref. `staged`: two 64 × LQ_FPX_TILE_PITCH float tiles.
template <int NBITS>
__device__ __forceinline__ void lq_fpx_lanes(const uint32_t* __restrict__ packed, const uint16_t* __restrict__ scales, void* __restrict__ out,
                                             const float* __restrict__ reference, int64_t m_rows, int64_t n_cols, int ebits, int mbits, bool out_f16,
                                             float* staged, double& max_abs, double& sq_err, double& sq_ref) {
  constexpr int HAS1 = NBITS & 1, HAS2 = (NBITS >> 1) & 1, HAS4 = (NBITS >> 2) & 1;
  // Low bit of each region's field in the code: the regions take the bits from the MSB down.
  constexpr int LOW1 = NBITS - 1, LOW2 = NBITS - HAS1 - 2, LOW4 = 0;
  // One bit of width is M·N/32 words (the whole region holds y of them).
  const int64_t lanes = m_rows * n_cols / LQ_FPX_LANE_CODES;
  const uint32_t* __restrict__ region1 = packed;
  const uint32_t* __restrict__ region2 = packed + HAS1 * lanes;
  const uint32_t* __restrict__ region4 = packed + (HAS1 + 2 * HAS2) * lanes;
  const int64_t tiles = n_cols / LQ_FPX_TILE_COLS;
  const float unbias = lq_fpx_unbias(ebits);
  const int sign_shift = ebits + mbits;
  const int half = (int)threadIdx.x / LQ_FPX_HALF_THREADS, t = (int)threadIdx.x % LQ_FPX_HALF_THREADS;
  float* tile = staged + half * 64 * LQ_FPX_TILE_PITCH;
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  // lanes is a multiple of 128 (chunks come in fours per slab row), so a half-block's four chunks
  // are all present or all absent; the loop bound is uniform for the __syncthreads.
  for (int64_t base = (int64_t)blockIdx.x * blockDim.x; base < lanes; base += stride) {
    const int64_t i = base + threadIdx.x;
    const bool active = i < lanes;
    // i = chunk·32 + lane; the lane's word w of region y is word 32·(chunk·y + w) + lane.
    const int64_t chunk = i / LQ_FPX_LANES;
    const int lane = (int)(i % LQ_FPX_LANES);
    const int64_t slab = chunk / tiles, first_tile = (chunk - slab * tiles) & ~(int64_t)3;
    if (active) {
      uint32_t word1 = 0, word2[2] = {0, 0}, word4[4] = {0, 0, 0, 0};
      if constexpr (HAS1 != 0) word1 = region1[i];
      if constexpr (HAS2 != 0) {
#pragma unroll
        for (int w = 0; w < 2; w++) word2[w] = region2[LQ_FPX_LANES * (chunk * 2 + w) + lane];
      }
      if constexpr (HAS4 != 0) {
#pragma unroll
        for (int w = 0; w < 4; w++) word4[w] = region4[LQ_FPX_LANES * (chunk * 4 + w) + lane];
      }
      // The lane's rows are row0 + 8·j, j = 2k + d: eight scales, read once.
      const int64_t row0 = slab * LQ_FPX_SLAB_ROWS + lane / 4;
      // Kept as fp16 bits, two to a register, and widened where used: fewer live registers.
      uint32_t scale2[4];
#pragma unroll
      for (int j = 0; j < 4; j++) scale2[j] = scales[row0 + 16 * j] | ((uint32_t)scales[row0 + 16 * j + 8] << 16);
      // Column of the lane's pair inside the half-block's 64-column tile.
      const int column0 = (t / LQ_FPX_LANES) * LQ_FPX_TILE_COLS + 2 * (lane % 4);
#pragma unroll
      for (int p = 0; p < LQ_FPX_LANE_CODES; p += 2) {
        float w[2];
#pragma unroll
        for (int h0 = 0; h0 < 2; h0++) {
          uint32_t code = 0;
          if constexpr (HAS1 != 0) code |= ((word1 >> lq_fpx_slot_shift(1, p + h0)) & 1u) << LOW1;
          if constexpr (HAS2 != 0) code |= ((word2[(p + h0) / 16] >> lq_fpx_slot_shift(2, (p + h0) % 16)) & 3u) << LOW2;
          if constexpr (HAS4 != 0) code |= ((word4[(p + h0) / 8] >> lq_fpx_slot_shift(4, (p + h0) % 8)) & 15u) << LOW4;
          const uint32_t scale_bits = (scale2[p >> 3] >> (16 * ((p >> 1) & 1))) & 0xFFFFu;
          w[h0] = lq_fpx_weight(code, mbits, sign_shift, unbias, __half2float(__ushort_as_half((uint16_t)scale_bits)));
        }
        const int k = p >> 3, g = (p >> 2) & 1, d = (p >> 1) & 1;
        *reinterpret_cast<float2*>(tile + (16 * k + 8 * d + lane / 4) * LQ_FPX_TILE_PITCH + column0 + 8 * g) = make_float2(w[0], w[1]);
      }
    }
    __syncthreads();
    if (active) {
      const int64_t row0 = slab * LQ_FPX_SLAB_ROWS, col0 = first_tile * LQ_FPX_TILE_COLS;
      if (out_f16) lq_fpx_write_tile<8>(tile, t, out, reference, row0, col0, n_cols, true, max_abs, sq_err, sq_ref);
      else lq_fpx_write_tile<4>(tile, t, out, reference, row0, col0, n_cols, false, max_abs, sq_err, sq_ref);
    }
    __syncthreads();
  }
}

extern "C" __global__ void __launch_bounds__(LQ_VERIFY_THREADS, 4) lq_fpx_dequant_verify(
    const uint32_t* __restrict__ packed, const uint16_t* __restrict__ scales, void* __restrict__ out, const float* __restrict__ reference,
    lq_verify_partial* __restrict__ partials, int64_t m_rows, int64_t n_cols, int32_t ebits, int32_t mbits, int32_t out_f16, uint32_t* status) {
  // The two staged tiles; the verify reduction reuses the space at the end.
  __shared__ __align__(16) float staged[2 * 64 * LQ_FPX_TILE_PITCH];
  // Every nbits-bit pattern is a code, so the shape is the only thing the kernel can find wrong.
  const bool fields_ok = ebits >= 1 && ebits <= LQ_FPX_MAX_EBITS && mbits >= 0 && mbits <= LQ_FPX_MAX_MBITS;
  const int nbits = 1 + ebits + mbits;
  if (m_rows <= 0 || n_cols <= 0 || m_rows % LQ_FPX_SLAB_ROWS != 0 || n_cols % LQ_FPX_COL_MULTIPLE != 0 || !fields_ok || nbits < LQ_FPX_MIN_NBITS || nbits > LQ_FPX_MAX_NBITS) {
    if (threadIdx.x == 0 && blockIdx.x == 0) lq_report(status, LQ_STATUS_SHAPE);
    return;
  }
  double max_abs = 0.0, sq_err = 0.0, sq_ref = 0.0;
  const bool f16 = out_f16 != 0;
  switch (nbits) {
    case 3: lq_fpx_lanes<3>(packed, scales, out, reference, m_rows, n_cols, ebits, mbits, f16, staged, max_abs, sq_err, sq_ref); break;
    case 4: lq_fpx_lanes<4>(packed, scales, out, reference, m_rows, n_cols, ebits, mbits, f16, staged, max_abs, sq_err, sq_ref); break;
    case 5: lq_fpx_lanes<5>(packed, scales, out, reference, m_rows, n_cols, ebits, mbits, f16, staged, max_abs, sq_err, sq_ref); break;
    case 6: lq_fpx_lanes<6>(packed, scales, out, reference, m_rows, n_cols, ebits, mbits, f16, staged, max_abs, sq_err, sq_ref); break;
    default: lq_fpx_lanes<7>(packed, scales, out, reference, m_rows, n_cols, ebits, mbits, f16, staged, max_abs, sq_err, sq_ref); break;
  }
  // Every thread is past its last read of `staged` (the loop ends with __syncthreads).
  if (partials != nullptr) lq_verify_block_reduce(max_abs, sq_err, sq_ref, reinterpret_cast<double*>(staged), partials);
}
