// VPTQ dequant and dequant-verify (layout and formula in vptq.cuh), two kernels:
//
// Columns kernel (lq_vptq_columns_*, for vl 4 or 8 and in a multiple of 8: the VPTQ models): one
// wave of resident blocks whose warps walk items (slab of 256 ORIGINAL columns, vector row r),
// split evenly over the warps, slab by slab. A lane holds 8 columns of the slab (8 consecutive
// for fp16 output, else two runs of 4 that are 128 apart) and loads their perm, scale, bias and
// group once per slab. Per row it loads the 8 main and residual indices (the host lays them out
// by original column: uint16 main, uint8 residual where they fit, launch.ts), one row ahead, then
// issues all 8 main-centroid gathers (vl fp16 = 16 bytes for v8; the 1 MiB codebook is served by
// L2) before adding the residuals (staged in shared memory when small enough), applies the norm
// in pairs and writes each output row as 16-byte stores: every store, index load and reference
// load of a warp covers whole 32-byte sectors, so that L2 sees one request per sector and the
// gathers (one request each) are most of the rest. With verify, each thread's reference rows of
// its next item are copied into shared memory (cp.async, columns.cuh) while it works on the
// current one, so they arrive during a whole item and hold no register. Measured on the H100
// (issue 9, 11008 × 4096, % of the copy): verify 70.4-70.8 against 65.5 with the earlier L2
// prefetch and loads two rows at a time; float32 out + verify 84.6 against 83.8. For float32
// output and verify the item goes piece by piece (4 columns), one piece's gathers in flight
// while the other is summed (columns-pieces.cuh): float32 out + verify 85.0-85.6. Outlier
// columns go through a scalar fix-up.
//
// Generic kernel (lq_vptq_dequant_verify_*: any other vl or in): one thread per (vector row r,
// original column j), scalar loads and stores, reading the [G][num_idx][gs] indices at k; one
// block per tile of (vector row r, LQ_VPTQ_TILE_COLUMNS consecutive columns), with a block-stride
// loop for tiles past the grid.
//
// Both: one verify partial per block.
#include "vptq.cuh"
#include "../common/status.h"
#include "../common/verify.cuh"

// out (nullable): [out][in] weights, float32 (the 16-bit values widened exactly), or fp16 bits
// when out_f16 (RNE from that float32 value: the value itself for fp16 codebooks). reference
// (nullable): float32 [out][in] source weights to compare with, the partials (one per block)
// receiving max |w − ref|, Σ(w − ref)², Σ ref². Threads per block: LQ_VPTQ_THREADS (the
// shared-memory reduction is sized for it).
#define LQ_VPTQ_THREADS 256
// Columns per tile: 8 per thread (launch.ts reads it: lq_vptq_launch_constants).
#define LQ_VPTQ_TILE_COLUMNS (8 * LQ_VPTQ_THREADS)

template <typename T>
__device__ __forceinline__ void lq_vptq_dequant_verify(
    const T* __restrict__ centroids, const T* __restrict__ res_centroids, const uint16_t* __restrict__ main_indices,
    const uint16_t* __restrict__ res_indices, const T* __restrict__ outlier_centroids, const uint16_t* __restrict__ outlier_indices,
    const uint16_t* __restrict__ inv_perm, const T* __restrict__ weight_scale, const T* __restrict__ weight_bias,
    void* __restrict__ out, const float* __restrict__ reference, lq_verify_partial* __restrict__ partials,
    int64_t out_features, int64_t in_features, int64_t vector_len, int64_t num_centroids, int64_t num_res_centroids,
    int64_t group_num, int64_t group_size, int64_t outlier_size, int64_t outlier_vector_len, int64_t outlier_num_centroids,
    int32_t semantics, int32_t out_f16, uint32_t* status, double* shared) {
  // Every size the index arithmetic below relies on; the host has checked them all already.
  const bool residual = res_centroids != nullptr && res_indices != nullptr;
  if (out_features <= 0 || in_features <= 0 || vector_len <= 0 || num_centroids <= 0 || group_num <= 0 || group_size < 0 ||
      outlier_size < 0 || group_num * group_size + outlier_size != in_features || (residual && num_res_centroids <= 0) ||
      (outlier_size > 0 && (outlier_vector_len <= 0 || outlier_num_centroids <= 0 || outlier_centroids == nullptr || outlier_indices == nullptr))) {
    if (threadIdx.x == 0 && blockIdx.x == 0) lq_report(status, LQ_STATUS_SHAPE);
    return;
  }
  const bool norm = weight_scale != nullptr && weight_bias != nullptr;
  const int64_t num_idx = (out_features + vector_len - 1) / vector_len;
  double max_abs = 0.0, sq_err = 0.0, sq_ref = 0.0;
  bool bad = false;
  // Stores weight w of row i, column j, and adds it to the verify sums.
  auto emit = [&](int64_t i, int64_t j, float w) {
    const int64_t at = i * in_features + j;
    if (out != nullptr) lq_store(out, at, w, out_f16 != 0);
    if (reference != nullptr) {
      const double ref = reference[at], e = (double)w - ref;
      max_abs = fmax(max_abs, fabs(e));
      sq_err += e * e;
      sq_ref += ref * ref;
    }
  };
  // Item (r, j): rows r·vl … r·vl + vl − 1 (fewer in the last, padded, vector row) of column j.
  auto dequant_item = [&](int64_t r, int64_t j) {
    const int64_t k = inv_perm != nullptr ? (int64_t)inv_perm[j] : j;
    if (k >= in_features) {
      bad = true;
      return;
    }
    const T s = norm ? weight_scale[j] : T(), b = norm ? weight_bias[j] : T();
    const int64_t first_row = r * vector_len;
    const int64_t rows = out_features - first_row < vector_len ? out_features - first_row : vector_len;
    if (k < outlier_size) {
      // Outlier vectors have their own length ovl: row i is element i % ovl of outlier vector
      // i / ovl, stepped along without a division per row. Few columns: kept rolled.
      int64_t vector = first_row / outlier_vector_len, element = first_row - vector * outlier_vector_len;
#pragma unroll 1
      for (int64_t t = 0; t < rows; t++) {
        const uint16_t q = outlier_indices[vector * outlier_size + k];
        if (q < outlier_num_centroids) emit(first_row + t, j, lq_vptq_weight(outlier_centroids[q * outlier_vector_len + element], norm, s, b, semantics));
        else bad = true;
        if (++element == outlier_vector_len) vector++, element = 0;
      }
      return;
    }
    // k < in = os + G·gs, so gs > 0 here and g < G.
    const int64_t g = (k - outlier_size) / group_size, e = (k - outlier_size) - g * group_size;
    const int64_t at = (g * num_idx + r) * group_size + e;
    const uint16_t q = main_indices[at];
    const uint16_t q_res = residual ? res_indices[at] : 0;
    if (q >= num_centroids || (residual && q_res >= num_res_centroids)) {
      bad = true;
      return;
    }
    const T* main_vector = centroids + (g * num_centroids + q) * vector_len;
    const T* res_vector = residual ? res_centroids + (g * num_res_centroids + q_res) * vector_len : nullptr;
    for (int64_t t = 0; t < rows; t++) emit(first_row + t, j, lq_vptq_weight(lq_vptq_centroid(main_vector, res_vector, t), norm, s, b, semantics));
  };
  const int64_t chunks = (in_features + LQ_VPTQ_TILE_COLUMNS - 1) / LQ_VPTQ_TILE_COLUMNS;
  for (int64_t tile = blockIdx.x; tile < num_idx * chunks; tile += gridDim.x) {
    const int64_t r = tile / chunks, first_column = (tile - r * chunks) * LQ_VPTQ_TILE_COLUMNS;
    const int64_t end = in_features - first_column < LQ_VPTQ_TILE_COLUMNS ? in_features : first_column + LQ_VPTQ_TILE_COLUMNS;
    for (int64_t j = first_column + threadIdx.x; j < end; j += blockDim.x) dequant_item(r, j);
  }
  if (bad) lq_report(status, LQ_STATUS_INDEX_RANGE);
  if (partials != nullptr) lq_verify_block_reduce(max_abs, sq_err, sq_ref, shared, partials);
}

// One kernel per codebook dtype: the 16-bit arithmetic is fp16's or bf16's.
#define LQ_VPTQ_KERNEL(name, T)                                                                                                        \
  extern "C" __global__ void __launch_bounds__(LQ_VPTQ_THREADS) name(                                                                 \
      const T* __restrict__ centroids, const T* __restrict__ res_centroids, const uint16_t* __restrict__ main_indices,                 \
      const uint16_t* __restrict__ res_indices, const T* __restrict__ outlier_centroids, const uint16_t* __restrict__ outlier_indices, \
      const uint16_t* __restrict__ inv_perm, const T* __restrict__ weight_scale, const T* __restrict__ weight_bias,                    \
      void* __restrict__ out, const float* __restrict__ reference, lq_verify_partial* __restrict__ partials,                           \
      int64_t out_features, int64_t in_features, int64_t vector_len, int64_t num_centroids, int64_t num_res_centroids,                 \
      int64_t group_num, int64_t group_size, int64_t outlier_size, int64_t outlier_vector_len, int64_t outlier_num_centroids,          \
      int32_t semantics, int32_t out_f16, uint32_t* status) {                                                                          \
    __shared__ double shared[3 * LQ_VPTQ_THREADS];                                                                                     \
    lq_vptq_dequant_verify<T>(centroids, res_centroids, main_indices, res_indices, outlier_centroids, outlier_indices, inv_perm,       \
                              weight_scale, weight_bias, out, reference, partials, out_features, in_features, vector_len,              \
                              num_centroids, num_res_centroids, group_num, group_size, outlier_size, outlier_vector_len,               \
                              outlier_num_centroids, semantics, out_f16, status, shared);                                              \
  }

LQ_VPTQ_KERNEL(lq_vptq_dequant_verify_f16, __half)
LQ_VPTQ_KERNEL(lq_vptq_dequant_verify_bf16, __nv_bfloat16)
#include "columns.cuh"

// What launch.ts needs to know of these kernels to size a launch, declared once here and read from
// the loaded module (CudaModule.constantWords), in this order: columns per generic tile; columns
// per slab (the columns kernel's item); the columns kernel's resident blocks per multiprocessor
// (its grid is one wave of them); its verify stash in bytes a thread at vl 4, and at vl 8. Threads
// per block come from each kernel's launch bounds (CudaModule.maxThreadsPerBlock).
extern "C" __constant__ uint32_t lq_vptq_launch_constants[5] = {LQ_VPTQ_TILE_COLUMNS, LQ_VPTQ_WARP_COLUMNS, LQ_VPTQ_COLUMNS_BLOCKS_PER_SM,
                                                                LQ_VPTQ_STASH_UNITS(4) * 16, LQ_VPTQ_STASH_UNITS(8) * 16};
