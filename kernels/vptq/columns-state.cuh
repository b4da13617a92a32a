// The columns kernel's per-thread state (included by columns.cuh): its arguments, a thread's 8
// columns of its warp's slab, their setup, the index loads and the outlier-column fix-up.
#pragma once
// The columns kernel (described at the top of vptq.cu). main_indices: uint16 [num_idx][in]; res_indices: uint8
// (res_index_bytes 1) or uint16 (2) [num_idx][in], or null (0: no residual); entry [r][j] that of
// vector row r of Q column inv_perm[j] (anything for outlier columns). res_staged: 1 when the
// host sized the dynamic shared memory for all G residual codebooks (checked here too).
#define LQ_VPTQ_WARP_COLUMNS 256
// Blocks per multiprocessor ptxas must allow for (≤ 128 registers; 115-126 used on sm_90, no
// spills): a thread holds its 8 main gathers in flight (32 registers for v8), their residuals,
// the next row's indices, its 8 columns' state and, with verify, the item's float64 sums (the
// reference words wait in shared memory, columns.cuh). 3 blocks (≤ 80 registers) spill 100-250
// bytes per thread. launch.ts reads it (lq_vptq_launch_constants); with verify a block also takes 2 · vl ·
// 16 bytes of stash per thread (64 KiB for v8), which two blocks per multiprocessor leave room for.
#define LQ_VPTQ_COLUMNS_BLOCKS_PER_SM 2
// A column's code (lq_vptq_columns::code): its group g, or one of these two.
#define LQ_VPTQ_OUTLIER_COLUMN 0x80000000u
#define LQ_VPTQ_NO_COLUMN 0xFFFFFFFFu

template <typename T>
struct lq_vptq_columns_args {
  const T* centroids;
  const T* res_codebooks;  // the staged copy in shared memory, or res_centroids
  const uint16_t* main_indices;
  const uint8_t* res_indices;
  const T* outlier_centroids;
  const uint16_t* outlier_indices;
  const uint16_t* inv_perm;
  const T* weight_scale;
  const T* weight_bias;
  void* out;
  const float* reference;
  int64_t out_features, outlier_vector_len, outlier_num_centroids;
  uint32_t in, k_main, k_res, os, gs;
  int32_t res_bytes;  // 1 or 2 per residual index, 0: no residual
  int32_t semantics;
  bool norm;
};

// A thread's 8 columns of its warp's slab, as 8 / P pieces of P consecutive columns (P = 8 for
// fp16 output: one 16-byte store per row; P = 4 otherwise: two pieces 128 columns apart, so that
// every float32 store or reference load of the warp covers 512 contiguous bytes, whole sectors).
// Column c is column c % P of piece c / P. Loaded once per slab, not per vector row.
template <int P>
struct lq_vptq_columns {
  uint32_t at[8 / P];          // original column of each piece's first column, clamped into the
                               // row (in is a multiple of 8) for dead pieces: the column of every
                               // access, as nvcc may issue those of dead pieces too
  bool live[8 / P];            // the piece lies inside the row
  uint32_t code[8];            // group g, LQ_VPTQ_OUTLIER_COLUMN | Q column, or LQ_VPTQ_NO_COLUMN
  uint32_t scale[4], bias[4];  // of columns 2m (low half) and 2m + 1 (high half)
  uint32_t outliers;           // bit c: column c is an outlier column
};

template <typename T, int P>
__device__ __forceinline__ void lq_vptq_columns_setup(const lq_vptq_columns_args<T>& a, int64_t slab, lq_vptq_columns<P>& s, bool& bad) {
  uint32_t k_words[4];
#pragma unroll
  for (int p = 0; p < 8 / P; p++) {
    const uint32_t first = (uint32_t)slab * LQ_VPTQ_WARP_COLUMNS + p * 32 * P + threadIdx.x % 32 * P;
    s.live[p] = first < a.in;
    const uint32_t j = s.at[p] = s.live[p] ? first : a.in - P;
    if (a.inv_perm != nullptr) {
      lq_vptq_stream_words<2 * P>(a.inv_perm + j, k_words + p * P / 2);
    } else {
#pragma unroll
      for (int m = 0; m < P / 2; m++) k_words[p * P / 2 + m] = (j + 2 * m) | (j + 2 * m + 1) << 16;
    }
    if (a.norm) {
      lq_vptq_stream_words<2 * P>(a.weight_scale + j, s.scale + p * P / 2);
      lq_vptq_stream_words<2 * P>(a.weight_bias + j, s.bias + p * P / 2);
    } else {
#pragma unroll
      for (int m = 0; m < P / 2; m++) s.scale[p * P / 2 + m] = s.bias[p * P / 2 + m] = 0;
    }
  }
  s.outliers = 0;
#pragma unroll
  for (int c = 0; c < 8; c++) {
    const uint32_t k = (k_words[c / 2] >> (16 * (c % 2))) & 0xFFFFu;
    s.code[c] = LQ_VPTQ_NO_COLUMN;
    if (!s.live[c / P]) continue;
    if (k >= a.in) {
      bad = true;
    } else if (k < a.os) {
      s.code[c] = LQ_VPTQ_OUTLIER_COLUMN | k;
      s.outliers |= 1u << c;
    } else {
      s.code[c] = (k - a.os) / a.gs;  // k < in = os + G·gs: gs > 0 and g < G
    }
  }
}

// The indices of vector row r for the thread's 8 columns: main of column c in half c % 2 of
// main[c / 2]; residual in byte c % 4 of res[c / 4] (1 byte) or as main (2 bytes). The residual
// width is a (uniform) branch rather than a template: a third of the code for ptxas to compile.
struct lq_vptq_index_words {
  uint32_t main[4], res[4];
};

// Residual index of column c.
__device__ __forceinline__ uint32_t lq_vptq_res_index(const lq_vptq_index_words& w, int c, int32_t res_bytes) {
  return res_bytes == 1 ? (w.res[c / 4] >> (8 * (c % 4))) & 0xFFu : (w.res[c / 2] >> (16 * (c % 2))) & 0xFFFFu;
}

template <typename T, int P>
__device__ __forceinline__ void lq_vptq_load_indices(const lq_vptq_columns_args<T>& a, const lq_vptq_columns<P>& s, int64_t r, lq_vptq_index_words& w) {
#pragma unroll
  for (int m = 0; m < 4; m++) w.res[m] = 0;
#pragma unroll
  for (int p = 0; p < 8 / P; p++) {
    const int64_t at = r * a.in + s.at[p];
    lq_vptq_stream_words<2 * P>(a.main_indices + at, w.main + p * P / 2);
    if (a.res_bytes == 1) lq_vptq_stream_words<P>(a.res_indices + at, w.res + p * P / 4);
    else if (a.res_bytes == 2) lq_vptq_stream_words<2 * P>(a.res_indices + 2 * at, w.res + p * P / 2);
  }
}

// One outlier column (few; their own vector length ovl) of one vector row, after the vector pass
// wrote it as zeros (then normed): each weight on its own, stored over that one (the same thread,
// so in program order), with its verify terms, which the vector pass left out. Not inlined: one
// small copy per dtype instead of one per column, vector length and piece width (ptxas time).
struct lq_vptq_outlier_sums {
  double max_abs, sq_err, sq_ref;
  bool bad;
};

template <typename T>
__device__ __noinline__ lq_vptq_outlier_sums lq_vptq_outlier_column(const T* outlier_centroids, const uint16_t* outlier_indices, void* out, const float* reference,
                                                                    int64_t ovl, int64_t k_outlier, int64_t os, int64_t in, int64_t k, int64_t j, uint32_t scale_bits,
                                                                    uint32_t bias_bits, bool norm, int32_t semantics, int64_t first_row, int rows, bool out_f16) {
  lq_vptq_outlier_sums sums{0.0, 0.0, 0.0, false};
  T scale, bias;
  const uint16_t scale_half = scale_bits, bias_half = bias_bits;
  memcpy(&scale, &scale_half, 2);
  memcpy(&bias, &bias_half, 2);
  for (int t = 0; t < rows; t++) {
    const int64_t i = first_row + t, vector = i / ovl;
    const uint16_t q = outlier_indices[vector * os + k];
    if (q >= k_outlier) {
      sums.bad = true;
      continue;
    }
    // q clamped as well, should nvcc issue the load before the check.
    const float w = lq_vptq_weight(outlier_centroids[(q < k_outlier ? q : 0) * ovl + (i - vector * ovl)], norm, scale, bias, semantics);
    if (out != nullptr) lq_store(out, i * in + j, w, out_f16);
    if (reference != nullptr) lq_verify_accumulate(w, reference[i * in + j], sums.max_abs, sums.sq_err, sums.sq_ref);
  }
  return sums;
}
