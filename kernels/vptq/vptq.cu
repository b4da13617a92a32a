// VPTQ dequant and dequant-verify (layout and formula in vptq.cuh), two kernels:
//
// Columns kernel (lq_vptq_columns_*, for vl 4 or 8 and in a multiple of 8: the VPTQ models):
// one thread per work item (vector row r, 8 consecutive ORIGINAL columns j0 … j0 + 7), which
// writes the vl rows r·vl … of those 8 columns: one 16-byte fp16 store (two float32) per row,
// one 16-byte reference load pair per row for verify. The host lays the indices out by original
// column (column_indices[r][j] = main | res << 16 of Q column inv_perm[j], launch.ts), so a
// thread's 8 indices are one 32-byte coalesced load, not 16 scattered 2-byte ones; inv_perm,
// scale and bias are 16-byte loads. Per column, the main centroid (vl fp16 = 16 bytes for v8) is
// one aligned vector load gathered from the codebook (65536·8 fp16 = 1 MiB per group: L2, too
// large for shared memory); the residual codebook (256·8 fp16 = 4 KiB) is staged in shared
// memory when the host finds it small enough, and gathered from global memory (L1) otherwise.
//
// Generic kernel (lq_vptq_dequant_verify_*: any other vl or in): one thread per (vector row r,
// original column j), scalar loads and stores, reading the [G][num_idx][gs] indices at k.
//
// Both: one block per tile of (vector row r, LQ_VPTQ_TILE_COLUMNS consecutive columns), with a
// block-stride loop for tiles past the grid; one verify partial per block.
#include "vptq.cuh"
#include "../common/status.h"
#include "../common/verify.cuh"

// out (nullable): [out][in] weights, float32 (the 16-bit values widened exactly), or fp16 bits
// when out_f16 (RNE from that float32 value: the value itself for fp16 codebooks). reference
// (nullable): float32 [out][in] source weights to compare with, the partials (one per block)
// receiving max |w − ref|, Σ(w − ref)², Σ ref². Threads per block: LQ_VPTQ_THREADS (the
// shared-memory reduction is sized for it).
#define LQ_VPTQ_THREADS 256
// Columns per tile: 8 per thread. launch.ts's TILE_COLUMNS.
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

// The columns kernel (top of the file). column_indices: uint32 [num_idx][in], main | res << 16
// of Q column inv_perm[j] (unused for outlier columns). res_staged: 1 when the host sized the
// dynamic shared memory for all G residual codebooks (G · k_res · VL values; checked here too).
template <typename T, int VL>
__device__ __forceinline__ void lq_vptq_columns_dequant_verify(
    const T* __restrict__ centroids, const T* __restrict__ res_centroids, const uint32_t* __restrict__ column_indices,
    const T* __restrict__ outlier_centroids, const uint16_t* __restrict__ outlier_indices, const uint16_t* __restrict__ inv_perm,
    const T* __restrict__ weight_scale, const T* __restrict__ weight_bias, void* __restrict__ out, const float* __restrict__ reference,
    lq_verify_partial* __restrict__ partials, int64_t out_features, int64_t in_features, int64_t num_centroids, int64_t num_res_centroids,
    int64_t group_num, int64_t group_size, int64_t outlier_size, int64_t outlier_vector_len, int64_t outlier_num_centroids,
    int32_t res_staged, int32_t semantics, int32_t out_f16, uint32_t* status, T* staged, double* shared) {
  using T2 = typename lq_vptq_pair_of<T>::type;
  const bool residual = res_centroids != nullptr;
  // 16-bit column and index arithmetic below: in ≤ 65536 (launch.ts MAX_IN_FEATURES).
  if (out_features <= 0 || in_features <= 0 || in_features > 65536 || in_features % 8 != 0 || num_centroids <= 0 || num_centroids > 65536 ||
      group_num <= 0 || group_size < 0 || outlier_size < 0 || group_num * group_size + outlier_size != in_features ||
      (residual && (num_res_centroids <= 0 || num_res_centroids > 65536)) ||
      (outlier_size > 0 && (outlier_vector_len <= 0 || outlier_num_centroids <= 0 || outlier_centroids == nullptr || outlier_indices == nullptr))) {
    if (threadIdx.x == 0 && blockIdx.x == 0) lq_report(status, LQ_STATUS_SHAPE);
    return;
  }
  const T* res_codebooks = res_centroids;
  // Staged only where the launch gave the shared memory for all of it: every thread gathers
  // residuals from anywhere in it (random 16-byte reads), a few bank-conflicted cycles per warp
  // from shared memory, one wavefront per cache line touched from L1.
  uint32_t dynamic_shared_bytes;
  asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(dynamic_shared_bytes));
  const int64_t words = residual ? group_num * num_res_centroids * VL / 4 : 0;
  if (residual && res_staged != 0 && words * 8 <= (int64_t)dynamic_shared_bytes) {
    for (int64_t w = threadIdx.x; w < words; w += blockDim.x) reinterpret_cast<uint2*>(staged)[w] = reinterpret_cast<const uint2*>(res_centroids)[w];
    __syncthreads();
    res_codebooks = staged;
  }
  const bool norm = weight_scale != nullptr && weight_bias != nullptr;
  const int64_t num_idx = (out_features + VL - 1) / VL;
  const uint32_t in = (uint32_t)in_features, os = (uint32_t)outlier_size, gs = (uint32_t)group_size;
  double max_abs = 0.0, sq_err = 0.0, sq_ref = 0.0;
  bool bad = false;
  T2 zero;
  memset(&zero, 0, sizeof zero);
  const int64_t chunks = (in_features + LQ_VPTQ_TILE_COLUMNS - 1) / LQ_VPTQ_TILE_COLUMNS;
  for (int64_t tile = blockIdx.x; tile < num_idx * chunks; tile += gridDim.x) {
    const int64_t r = tile / chunks;
    const uint32_t j0 = (uint32_t)(tile - r * chunks) * LQ_VPTQ_TILE_COLUMNS + 8 * threadIdx.x;
    if (j0 >= in) continue;
    // Q column k[c] of original column j0 + c; words of 16-bit pairs, column 2m in the low half.
    uint32_t k[8];
    if (inv_perm != nullptr) {
      const uint4 u = *reinterpret_cast<const uint4*>(inv_perm + j0);
      const uint32_t words[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
      for (int m = 0; m < 4; m++) k[2 * m] = words[m] & 0xFFFFu, k[2 * m + 1] = words[m] >> 16;
    } else {
#pragma unroll
      for (int c = 0; c < 8; c++) k[c] = j0 + c;
    }
    uint32_t q[8];
    {
      const uint4* at = reinterpret_cast<const uint4*>(column_indices + r * in_features + j0);
      const uint4 a = at[0], b = at[1];
      q[0] = a.x, q[1] = a.y, q[2] = a.z, q[3] = a.w, q[4] = b.x, q[5] = b.y, q[6] = b.z, q[7] = b.w;
    }
    // Scale and bias of each column broadcast to both halves of a pair.
    T2 s[8], b[8];
    if (norm) {
      const uint4 us = *reinterpret_cast<const uint4*>(weight_scale + j0), ub = *reinterpret_cast<const uint4*>(weight_bias + j0);
      const uint32_t ws[4] = {us.x, us.y, us.z, us.w}, wb[4] = {ub.x, ub.y, ub.z, ub.w};
#pragma unroll
      for (int c = 0; c < 8; c++) {
        const uint32_t sh = (ws[c / 2] >> (16 * (c % 2))) & 0xFFFFu, bh = (wb[c / 2] >> (16 * (c % 2))) & 0xFFFFu;
        const uint32_t sp = sh * 0x10001u, bp = bh * 0x10001u;
        memcpy(&s[c], &sp, 4);
        memcpy(&b[c], &bp, 4);
      }
    }
    const int64_t first_row = r * VL;
    const int rows = out_features - first_row < VL ? (int)(out_features - first_row) : VL;
    // v[c][m]: rows 2m and 2m + 1 of column j0 + c.
    T2 v[8][VL / 2];
#pragma unroll
    for (int c = 0; c < 8; c++) {
#pragma unroll
      for (int m = 0; m < VL / 2; m++) v[c][m] = zero;
      if (k[c] >= in) {
        bad = true;
      } else if (k[c] < os) {
        // Outlier column: its own vector length ovl, so row by row (unrolled: `one` stays in registers).
        T one[VL];
#pragma unroll
        for (int t = 0; t < VL; t++) {
          one[t] = T();
          if (t >= rows) continue;
          const int64_t i = first_row + t, vector = i / outlier_vector_len;
          const uint16_t qo = outlier_indices[vector * outlier_size + k[c]];
          if (qo < outlier_num_centroids) one[t] = outlier_centroids[qo * outlier_vector_len + (i - vector * outlier_vector_len)];
          else bad = true;
        }
#pragma unroll
        for (int m = 0; m < VL / 2; m++) v[c][m] = lq_vptq_make_pair(one[2 * m], one[2 * m + 1]);
      } else {
        const uint32_t g = (k[c] - os) / gs, q_main = q[c] & 0xFFFFu, q_res = q[c] >> 16;
        if (q_main >= num_centroids || (residual && q_res >= num_res_centroids)) {
          bad = true;
        } else {
          lq_vptq_load_pairs<T, VL>(centroids + ((int64_t)g * num_centroids + q_main) * VL, v[c]);
          if (residual) {
            T2 res[VL / 2];
            lq_vptq_load_pairs<T, VL>(res_codebooks + ((int64_t)g * num_res_centroids + q_res) * VL, res);
#pragma unroll
            for (int m = 0; m < VL / 2; m++) v[c][m] = __hadd2_rn(v[c][m], res[m]);
          }
        }
      }
      if (norm) {
#pragma unroll
        for (int m = 0; m < VL / 2; m++) v[c][m] = lq_vptq_norm_pair(v[c][m], s[c], b[c], semantics);
      }
    }
#pragma unroll
    for (int t = 0; t < VL; t++) {
      if (t >= rows) break;
      float w[8];
#pragma unroll
      for (int c = 0; c < 8; c++) w[c] = t % 2 == 0 ? __low2float(v[c][t / 2]) : __high2float(v[c][t / 2]);
      const int64_t at = (first_row + t) * in_features + j0;
      if (out != nullptr) lq_store_vector<8>(out, at, w, out_f16 != 0);
      if (reference != nullptr) {
        const float4 r0 = *reinterpret_cast<const float4*>(reference + at), r1 = *reinterpret_cast<const float4*>(reference + at + 4);
        const float ref[8] = {r0.x, r0.y, r0.z, r0.w, r1.x, r1.y, r1.z, r1.w};
#pragma unroll
        for (int c = 0; c < 8; c++) lq_verify_accumulate(w[c], ref[c], max_abs, sq_err, sq_ref);
      }
    }
  }
  if (bad) lq_report(status, LQ_STATUS_INDEX_RANGE);
  if (partials != nullptr) lq_verify_block_reduce(max_abs, sq_err, sq_ref, shared, partials);
}

// Blocks of the columns kernel per multiprocessor that ptxas must allow for: 2 gives it ~110
// registers and no spills (a thread holds 8 columns × vl pairs plus its in-flight gathers); 3
// caps it at 80 and spills ~50 bytes. Which is faster is the H100's to say (bench/gpu-dequant.ts).
#define LQ_VPTQ_COLUMNS_BLOCKS_PER_SM 2

// One kernel per codebook dtype and vector length. Dynamic shared memory: the staged residual
// codebooks (launch.ts sizes it; 0 when not staged).
#define LQ_VPTQ_COLUMNS_KERNEL(name, T, VL)                                                                                            \
  extern "C" __global__ void __launch_bounds__(LQ_VPTQ_THREADS, LQ_VPTQ_COLUMNS_BLOCKS_PER_SM) name(                                  \
      const T* __restrict__ centroids, const T* __restrict__ res_centroids, const uint32_t* __restrict__ column_indices,               \
      const T* __restrict__ outlier_centroids, const uint16_t* __restrict__ outlier_indices, const uint16_t* __restrict__ inv_perm,    \
      const T* __restrict__ weight_scale, const T* __restrict__ weight_bias, void* __restrict__ out, const float* __restrict__ reference, \
      lq_verify_partial* __restrict__ partials, int64_t out_features, int64_t in_features, int64_t num_centroids,                      \
      int64_t num_res_centroids, int64_t group_num, int64_t group_size, int64_t outlier_size, int64_t outlier_vector_len,              \
      int64_t outlier_num_centroids, int32_t res_staged, int32_t semantics, int32_t out_f16, uint32_t* status) {                       \
    extern __shared__ __align__(16) unsigned char lq_vptq_staged[];                                                                    \
    __shared__ double shared[96];                                                                                                      \
    lq_vptq_columns_dequant_verify<T, VL>(centroids, res_centroids, column_indices, outlier_centroids, outlier_indices, inv_perm,      \
                                          weight_scale, weight_bias, out, reference, partials, out_features, in_features,             \
                                          num_centroids, num_res_centroids, group_num, group_size, outlier_size, outlier_vector_len,  \
                                          outlier_num_centroids, res_staged, semantics, out_f16, status,                              \
                                          reinterpret_cast<T*>(lq_vptq_staged), shared);                                              \
  }

LQ_VPTQ_COLUMNS_KERNEL(lq_vptq_columns_v8_f16, __half, 8)
LQ_VPTQ_COLUMNS_KERNEL(lq_vptq_columns_v8_bf16, __nv_bfloat16, 8)
LQ_VPTQ_COLUMNS_KERNEL(lq_vptq_columns_v4_f16, __half, 4)
LQ_VPTQ_COLUMNS_KERNEL(lq_vptq_columns_v4_bf16, __nv_bfloat16, 4)
