// FPx dequant and dequant-verify (layout and formula in fpx.cuh). One thread per lane of a
// (64-row, 16-column) chunk, over a grid-stride loop: the thread loads the lane's y words of each
// region (consecutive threads read consecutive words, so a warp reads 128 contiguous bytes per
// word), peels its 32 codes with shifts known at compile time, and writes the 32 weights. The
// launch configuration is chosen in launch.ts.
#include "fpx.cuh"
#include "../common/status.h"
#include "../common/verify.cuh"

// out (nullable): [M][N] weights, float32, or fp16 bits when out_f16 (RNE from the float32 value).
// reference (nullable): float32 [M][N] source weights to compare with, the partials (one per
// block) receiving max |w − ref|, Σ(w − ref)², Σ ref². Threads per block: LQ_VERIFY_THREADS (the
// shared-memory reduction is sized for it; a multiple of 32, so every warp is one chunk's lanes).
#define LQ_VERIFY_THREADS 256

// The grid-stride loop for one code width, so that the regions present, their words and every
// slot's shift are compile-time constants. Adds this thread's verify terms to max_abs, sq_err,
// sq_ref.
template <int NBITS>
__device__ __forceinline__ void lq_fpx_lanes(const uint32_t* __restrict__ packed, const uint16_t* __restrict__ scales, void* __restrict__ out,
                                             const float* __restrict__ reference, int64_t m_rows, int64_t n_cols, int ebits, int mbits, bool out_f16,
                                             double& max_abs, double& sq_err, double& sq_ref) {
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
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < lanes; i += stride) {
    // i = chunk·32 + lane; the lane's word w of region y is word 32·(chunk·y + w) + lane.
    const int64_t chunk = i / LQ_FPX_LANES;
    const int lane = (int)(i % LQ_FPX_LANES);
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
    const int64_t slab = chunk / tiles, tile = chunk - slab * tiles;
    const int64_t row0 = slab * LQ_FPX_SLAB_ROWS + lane / 4;
    const int64_t col0 = tile * LQ_FPX_TILE_COLS + 2 * (lane % 4);
    // The lane's rows are row0 + 8·j, j = 2k + d: eight scales, read once.
    float scale[8];
#pragma unroll
    for (int j = 0; j < 8; j++) scale[j] = __half2float(__ushort_as_half(scales[row0 + 8 * j]));
#pragma unroll
    for (int p = 0; p < LQ_FPX_LANE_CODES; p++) {
      uint32_t code = 0;
      if constexpr (HAS1 != 0) code |= ((word1 >> lq_fpx_slot_shift(1, p)) & 1u) << LOW1;
      if constexpr (HAS2 != 0) code |= ((word2[p / 16] >> lq_fpx_slot_shift(2, p % 16)) & 3u) << LOW2;
      if constexpr (HAS4 != 0) code |= ((word4[p / 8] >> lq_fpx_slot_shift(4, p % 8)) & 15u) << LOW4;
      const int k = p >> 3, g = (p >> 2) & 1, d = (p >> 1) & 1, h0 = p & 1;
      const float w = lq_fpx_weight(code, mbits, sign_shift, unbias, scale[2 * k + d]);
      const int64_t at = (row0 + 16 * k + 8 * d) * n_cols + col0 + 8 * g + h0;
      if (out != nullptr) lq_store(out, at, w, out_f16);
      if (reference != nullptr) {
        const double r = reference[at], e = (double)w - r;
        max_abs = fmax(max_abs, fabs(e));
        sq_err += e * e;
        sq_ref += r * r;
      }
    }
  }
}

extern "C" __global__ void __launch_bounds__(LQ_VERIFY_THREADS) lq_fpx_dequant_verify(
    const uint32_t* __restrict__ packed, const uint16_t* __restrict__ scales, void* __restrict__ out, const float* __restrict__ reference,
    lq_verify_partial* __restrict__ partials, int64_t m_rows, int64_t n_cols, int32_t ebits, int32_t mbits, int32_t out_f16, uint32_t* status) {
  __shared__ double shared[3 * LQ_VERIFY_THREADS];
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
    case 3: lq_fpx_lanes<3>(packed, scales, out, reference, m_rows, n_cols, ebits, mbits, f16, max_abs, sq_err, sq_ref); break;
    case 4: lq_fpx_lanes<4>(packed, scales, out, reference, m_rows, n_cols, ebits, mbits, f16, max_abs, sq_err, sq_ref); break;
    case 5: lq_fpx_lanes<5>(packed, scales, out, reference, m_rows, n_cols, ebits, mbits, f16, max_abs, sq_err, sq_ref); break;
    case 6: lq_fpx_lanes<6>(packed, scales, out, reference, m_rows, n_cols, ebits, mbits, f16, max_abs, sq_err, sq_ref); break;
    default: lq_fpx_lanes<7>(packed, scales, out, reference, m_rows, n_cols, ebits, mbits, f16, max_abs, sq_err, sq_ref); break;
  }
  if (partials != nullptr) lq_verify_block_reduce(max_abs, sq_err, sq_ref, shared, partials);
}
