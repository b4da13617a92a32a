// VPTQ's columns kernel (included by vptq.cu, after the generic kernel): one wave of blocks,
// each warp owning a 256-column slab and walking vector rows, gathers issued before use. See the
// top of vptq.cu for the layouts and semantics both kernels share.
#pragma once
#include "columns-state.cuh"
#include "../common/async-copy.cuh"

// The thread's reference words of an item, staged in shared memory (verify): 16-byte units, two a
// row (row t, unit h: the row's 4 columns of piece h for P = 4, columns 4h … 4h + 3 of the piece
// for P = 8), unit u of a lane at stash[32 · u] (`stash`: the warp's region plus the lane), so that
// a warp's 32 reads of one unit are 512 contiguous bytes, no bank conflict.
#define LQ_VPTQ_STASH_UNITS(VL) (2 * (VL))

// Rows of the item at vector row r: VL, fewer in the last.
template <int VL, typename T>
__device__ __forceinline__ int lq_vptq_item_rows(const lq_vptq_columns_args<T>& a, int64_t r) {
  return a.out_features - r * VL < VL ? (int)(a.out_features - r * VL) : VL;
}

// Copies row t of the item at vector row r (rows of it: its row count; past it, its first row
// again, unused) into units 2t, 2t + 1.
template <int VL, int P, typename T>
__device__ __forceinline__ void lq_vptq_stash_row(const lq_vptq_columns_args<T>& a, const lq_vptq_columns<P>& s, uint4* stash, int64_t r, int rows, int t) {
  const float* row = a.reference + (r * VL + (t < rows ? t : 0)) * a.in;
#pragma unroll
  for (int h = 0; h < 2; h++) lq_cp_async<16>(stash + 32 * (2 * t + h), row + (P == 8 ? s.at[0] + 4 * h : s.at[h]));
}

// The outlier columns of the item at vector row r (the vector pass wrote them as zeros and left
// their verify terms out).
template <typename T, int VL, int P>
__device__ __forceinline__ void lq_vptq_item_outliers(const lq_vptq_columns_args<T>& a, const lq_vptq_columns<P>& s, int64_t r, double& max_abs, double& sq_err,
                                                      double& sq_ref, bool& bad) {
  const int rows = lq_vptq_item_rows<VL>(a, r);
#pragma unroll
  for (int c = 0; c < 8; c++) {
    if ((s.outliers >> c & 1u) == 0) continue;
    const lq_vptq_outlier_sums o = lq_vptq_outlier_column<T>(a.outlier_centroids, a.outlier_indices, a.out, a.reference, a.outlier_vector_len,
                                                             a.outlier_num_centroids, a.os, a.in, s.code[c] & 0xFFFFu, s.at[c / P] + c % P,
                                                             s.scale[c / 2] >> (16 * (c % 2)), s.bias[c / 2] >> (16 * (c % 2)), a.norm, a.semantics, r * VL, rows, P == 8);
    max_abs = fmax(max_abs, o.max_abs);
    sq_err += o.sq_err;
    sq_ref += o.sq_ref;
    if (o.bad) bad = true;
  }
}

// Columns c0 … c0 + N − 1 of an item: their main gathers issued into v (entry 0 stands in for
// outlier, dead and bad columns, zeroed later: every gather is in bounds). Bit e of the result:
// column c0 + e is a group column with valid indices.
template <typename T, int VL, int N, int P>
__device__ __forceinline__ uint32_t lq_vptq_gather_columns(const lq_vptq_columns_args<T>& a, const lq_vptq_columns<P>& s, const lq_vptq_index_words& w, int c0,
                                                           typename lq_vptq_pair_of<T>::type (&v)[N][VL / 2], bool& bad) {
  uint32_t ok = 0;
#pragma unroll
  for (int e = 0; e < N; e++) {
    const int c = c0 + e;
    const uint32_t q_main = (w.main[c / 2] >> (16 * (c % 2))) & 0xFFFFu;
    const bool group = s.code[c] < LQ_VPTQ_OUTLIER_COLUMN;
    const bool valid = group && q_main < a.k_main && (a.res_bytes == 0 || lq_vptq_res_index(w, c, a.res_bytes) < a.k_res);
    if (group && !valid) bad = true;
    ok |= (uint32_t)valid << e;
    lq_vptq_load_pairs<T, VL>(a.centroids + (valid ? (uint64_t)s.code[c] * a.k_main + q_main : 0) * VL, v[e]);
  }
  return ok;
}

// The same columns once their gathers are needed: the residuals (shared memory) added, zeros for
// the columns `ok` leaves out, then the norm.
template <typename T, int VL, int N, int P>
__device__ __forceinline__ void lq_vptq_finish_columns(const lq_vptq_columns_args<T>& a, const lq_vptq_columns<P>& s, const lq_vptq_index_words& w, int c0,
                                                       typename lq_vptq_pair_of<T>::type (&v)[N][VL / 2], uint32_t ok) {
  using T2 = typename lq_vptq_pair_of<T>::type;
  T2 zero;
  memset(&zero, 0, sizeof zero);
  if (a.res_bytes != 0) {
#pragma unroll
    for (int e = 0; e < N; e++) {
      const int c = c0 + e;
      T2 res[VL / 2];
      const bool valid = (ok >> e & 1u) != 0;
      lq_vptq_load_pairs<T, VL>(a.res_codebooks + (valid ? (uint64_t)s.code[c] * a.k_res + lq_vptq_res_index(w, c, a.res_bytes) : 0) * VL, res);
#pragma unroll
      for (int m = 0; m < VL / 2; m++) v[e][m] = __hadd2_rn(v[e][m], res[m]);
    }
  }
#pragma unroll
  for (int e = 0; e < N; e++) {
#pragma unroll
    for (int m = 0; m < VL / 2; m++) v[e][m] = (ok >> e & 1u) != 0 ? v[e][m] : zero;
  }
  if (a.norm) {
#pragma unroll
    for (int e = 0; e < N; e++) {
      const int c = c0 + e;
      const T2 scale = lq_vptq_broadcast<T2>(s.scale, c), bias = lq_vptq_broadcast<T2>(s.bias, c);
#pragma unroll
      for (int m = 0; m < VL / 2; m++) v[e][m] = lq_vptq_norm_pair(v[e][m], scale, bias, a.semantics);
    }
  }
}

// Vector row r of the thread's 8 consecutive columns, fp16 output (P = 8; float32 output and
// verify walk piece by piece instead: columns-pieces.cuh): the 8 gathers (all issued before any
// use), residuals, norm, then per row one 16-byte fp16 store and the verify sums; outlier columns
// after that (lq_vptq_outlier_column). With verify, this item's reference rows are in `stash`
// (copied while the previous item ran), and each row's units are refilled with the next item's
// row (vector row `next`, −1 for none) as soon as they are read, so every reference row has a
// whole item's time to arrive and holds no register while it does.
template <typename T, int VL, int P>
__device__ __forceinline__ void lq_vptq_columns_item(const lq_vptq_columns_args<T>& a, const lq_vptq_columns<P>& s, const lq_vptq_index_words& w,
                                                     int64_t r, int64_t next, uint4* stash, double& max_abs, double& sq_err, double& sq_ref, bool& bad) {
  using T2 = typename lq_vptq_pair_of<T>::type;
  const int64_t first_row = r * VL;
  const int rows = lq_vptq_item_rows<VL>(a, r);
  const int next_rows = next < 0 ? 0 : lq_vptq_item_rows<VL>(a, next);
  T2 v[8][VL / 2];
  const uint32_t ok = lq_vptq_gather_columns<T, VL, 8, P>(a, s, w, 0, v, bad);
  lq_vptq_finish_columns<T, VL, 8, P>(a, s, w, 0, v, ok);
  const bool verify = a.reference != nullptr;
  // This item's reference rows (the only group in flight) have landed.
  if (verify) lq_cp_async_wait<0>();
  // The item's sums in two independent chains (even and odd rows), added to the thread's at the
  // end: float64 adds wait on the one before (a fixed latency), and one chain of 64 was the most
  // common stall in ncu's samples of verify. Float32 out + verify: 84.6 % of the copy against 84.1
  // with one chain (H100, 11008 × 4096; the test's bound on sums in another order holds).
  lq_verify_chains item;
  const bool any_outlier = s.outliers != 0;
#pragma unroll
  for (int t = 0; t < VL; t++) {
    if (t < rows && s.live[0]) {
      float f[8];
#pragma unroll
      for (int e = 0; e < 8; e++) f[e] = t % 2 == 0 ? __low2float(v[e][t / 2]) : __high2float(v[e][t / 2]);
      if (a.out != nullptr) {
        uint32_t h[4];
#pragma unroll
        for (int e = 0; e < 4; e++) h[e] = lq_vptq_f16_word(v[2 * e][t / 2], v[2 * e + 1][t / 2], t % 2, f[2 * e], f[2 * e + 1]);
        lq_vptq_store16(static_cast<__half*>(a.out) + (first_row + t) * a.in + s.at[0], h[0], h[1], h[2], h[3]);
      }
      if (verify) {
#pragma unroll
        for (int q = 0; q < 2; q++) {
          const uint4 u = stash[32 * (2 * t + q)];
          const float ref[4] = {__uint_as_float(u.x), __uint_as_float(u.y), __uint_as_float(u.z), __uint_as_float(u.w)};
          // Outlier columns: lq_vptq_outlier_column sums them.
#pragma unroll
          for (int e = 0; e < 4; e++) {
            const int c = 4 * q + e;
            if (!any_outlier || (s.outliers >> c & 1u) == 0) item.add(t % 2, f[c], ref[e]);
          }
        }
      }
    }
    // The row's units are read (and their words used): the next item's row goes into them.
    if (verify && next_rows > 0) lq_vptq_stash_row<VL, P>(a, s, stash, next, next_rows, t);
  }
  if (verify) {
    lq_cp_async_commit();
    item.add_to(max_abs, sq_err, sq_ref);
  }
  if (s.outliers != 0) lq_vptq_item_outliers<T, VL, P>(a, s, r, max_abs, sq_err, sq_ref, bad);
}

// Marks the column state as changed, emitting nothing: otherwise LLVM hoists everything derived
// from it out of the row loop (column products, broadcast scale and bias pairs), which ptxas then
// cannot keep in 128 registers (about 230 needed, spills under the launch bounds).
template <int P>
__device__ __forceinline__ void lq_vptq_opaque(lq_vptq_columns<P>& s) {
#pragma unroll
  for (int c = 0; c < 8; c++) asm volatile("" : "+r"(s.code[c]));
#pragma unroll
  for (int m = 0; m < 4; m++) asm volatile("" : "+r"(s.scale[m]), "+r"(s.bias[m]));
#pragma unroll
  for (int p = 0; p < 8 / P; p++) asm volatile("" : "+r"(s.at[p]));
  asm volatile("" : "+r"(s.outliers));
}

#include "columns-pieces.cuh"

// One warp's walk down slab `slab` for fp16 output (P = 8; P = 4 walks lq_vptq_columns_walk_pieces):
// vector rows r, r + step, … < num_idx. The slab's columns are set up once, and the next row's
// indices load before this row's gathers.
template <typename T, int VL, int P>
__device__ __forceinline__ void lq_vptq_columns_walk(const lq_vptq_columns_args<T>& a, int64_t num_idx, int64_t slab, int64_t r, int64_t step, uint4* stash,
                                                     double& max_abs, double& sq_err, double& sq_ref, bool& bad) {
  static_assert(P == 8, "P = 4 walks piece by piece (columns-pieces.cuh)");
  if (r >= num_idx) return;
  lq_vptq_columns<P> s;
  lq_vptq_columns_setup(a, slab, s, bad);
  lq_vptq_index_words now, next;
  lq_vptq_load_indices(a, s, r, now);
  // The first item's reference rows (each later item's come during the one before).
  if (a.reference != nullptr) {
    const int rows = lq_vptq_item_rows<VL>(a, r);
#pragma unroll
    for (int t = 0; t < VL; t++) lq_vptq_stash_row<VL, P>(a, s, stash, r, rows, t);
    lq_cp_async_commit();
  }
  // Rolled: one row's gathers in registers at a time.
#pragma unroll 1
  for (;;) {
    const bool more = r + step < num_idx;
    // Clamped to a row that exists, should nvcc issue the loads unguarded.
    if (more) lq_vptq_load_indices(a, s, more ? r + step : r, next);
    lq_vptq_opaque(s);
    lq_vptq_columns_item<T, VL, P>(a, s, now, r, more ? r + step : -1, stash, max_abs, sq_err, sq_ref, bad);
    if (!more) break;
    r += step;
    now = next;
  }
}

// The grid's warps over the (slab, vector row) items: R = warps / slabs walkers per slab, walker w
// of slab s on rows w, w + R, …, so that at any time the warps of all slabs write nearby rows
// whole (contiguous stores and index loads for DRAM), and each warp has its row count within one
// of every other's. Warps are numbered across blocks first, so that the walkers with one more row
// (the first ones) and the idle warps spread over the multiprocessors. Fewer warps than slabs
// (small GPUs, wide rows): each warp walks whole slabs.
template <typename T, int VL, int P>
__device__ __forceinline__ void lq_vptq_columns_grid(const lq_vptq_columns_args<T>& a, int64_t num_idx, uint4* stash, double& max_abs, double& sq_err, double& sq_ref,
                                                     bool& bad) {
  const int64_t slabs = (a.in + LQ_VPTQ_WARP_COLUMNS - 1) / LQ_VPTQ_WARP_COLUMNS;
  const int64_t warps = (int64_t)gridDim.x * (blockDim.x / 32), warp = (int64_t)(threadIdx.x / 32) * gridDim.x + blockIdx.x;
  const int64_t walkers = warps >= slabs ? warps / slabs : 1;
  int64_t slab = warp % slabs, slab_step = slabs;  // one slab
  if (warps < slabs) slab = warp, slab_step = warps;
  else if (warp >= walkers * slabs) slab = slabs;  // idle
  // One call site: one inlined copy of the walk (code size, ptxas time).
#pragma unroll 1
  for (; slab < slabs; slab += slab_step) {
    const int64_t r = warps >= slabs ? warp / slabs : 0;
    if constexpr (P == 4) lq_vptq_columns_walk_pieces<T, VL>(a, num_idx, slab, r, walkers, stash, max_abs, sq_err, sq_ref, bad);
    else lq_vptq_columns_walk<T, VL, P>(a, num_idx, slab, r, walkers, stash, max_abs, sq_err, sq_ref, bad);
  }
}

template <typename T, int VL>
__device__ __forceinline__ void lq_vptq_columns_dequant_verify(
    const T* __restrict__ centroids, const T* __restrict__ res_centroids, const uint16_t* __restrict__ main_indices, const uint8_t* __restrict__ res_indices,
    const T* __restrict__ outlier_centroids, const uint16_t* __restrict__ outlier_indices, const uint16_t* __restrict__ inv_perm,
    const T* __restrict__ weight_scale, const T* __restrict__ weight_bias, void* __restrict__ out, const float* __restrict__ reference,
    lq_verify_partial* __restrict__ partials, int64_t out_features, int64_t in_features, int64_t num_centroids, int64_t num_res_centroids,
    int64_t group_num, int64_t group_size, int64_t outlier_size, int64_t outlier_vector_len, int64_t outlier_num_centroids, int32_t res_index_bytes,
    int32_t res_staged, int32_t semantics, int32_t out_f16, uint32_t* status, unsigned char* dynamic_shared, double* shared) {
  const bool residual = res_index_bytes != 0;
  // 32-bit column and codebook arithmetic below: in ≤ 65536 (launch.ts MAX_IN_FEATURES).
  if (out_features <= 0 || in_features <= 0 || in_features > 65536 || in_features % 8 != 0 || num_centroids <= 0 || num_centroids > 65536 ||
      group_num <= 0 || group_size < 0 || outlier_size < 0 || group_num * group_size + outlier_size != in_features || res_index_bytes < 0 || res_index_bytes > 2 ||
      (residual ? res_centroids == nullptr || res_indices == nullptr || num_res_centroids <= 0 || num_res_centroids > 65536 : res_centroids != nullptr) ||
      (outlier_size > 0 && (outlier_vector_len <= 0 || outlier_num_centroids <= 0 || outlier_centroids == nullptr || outlier_indices == nullptr))) {
    if (threadIdx.x == 0 && blockIdx.x == 0) lq_report(status, LQ_STATUS_SHAPE);
    return;
  }
  // Dynamic shared memory: with verify, the reference stash (LQ_VPTQ_STASH_UNITS 16-byte units a
  // thread), then the staged residual codebooks. A launch without room for the stash is refused.
  uint32_t dynamic_shared_bytes;
  asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(dynamic_shared_bytes));
  const uint32_t stash_bytes = reference != nullptr ? blockDim.x * LQ_VPTQ_STASH_UNITS(VL) * 16u : 0u;
  if (stash_bytes > dynamic_shared_bytes || blockDim.x % 32 != 0) {
    if (threadIdx.x == 0 && blockIdx.x == 0) lq_report(status, LQ_STATUS_SHAPE);
    return;
  }
  uint4* stash = reinterpret_cast<uint4*>(dynamic_shared) + (threadIdx.x / 32) * (LQ_VPTQ_STASH_UNITS(VL) * 32) + threadIdx.x % 32;
  T* staged = reinterpret_cast<T*>(dynamic_shared + stash_bytes);
  const T* res_codebooks = res_centroids;
  // Staged only where the launch gave the shared memory for all of it: random 16-byte reads, a
  // few bank-conflicted cycles per warp, and no L2 request.
  const int64_t words = residual ? group_num * num_res_centroids * VL / 4 : 0;
  if (residual && res_staged != 0 && words * 8 <= (int64_t)(dynamic_shared_bytes - stash_bytes)) {
    for (int64_t w = threadIdx.x; w < words; w += blockDim.x) reinterpret_cast<uint2*>(staged)[w] = reinterpret_cast<const uint2*>(res_centroids)[w];
    __syncthreads();
    res_codebooks = staged;
  }
  const lq_vptq_columns_args<T> a{centroids, res_codebooks, main_indices, res_indices, outlier_centroids, outlier_indices, inv_perm, weight_scale, weight_bias,
                                  out, reference, out_features, outlier_vector_len, outlier_num_centroids, (uint32_t)in_features, (uint32_t)num_centroids,
                                  (uint32_t)num_res_centroids, (uint32_t)outlier_size, (uint32_t)group_size, res_index_bytes, semantics,
                                  weight_scale != nullptr && weight_bias != nullptr};
  const int64_t num_idx = (out_features + VL - 1) / VL;
  double max_abs = 0.0, sq_err = 0.0, sq_ref = 0.0;
  bool bad = false;
  // The piece width follows the output type only, so verify alone and verify beside float32 weights make the same partials.
  if (out_f16 != 0) lq_vptq_columns_grid<T, VL, 8>(a, num_idx, stash, max_abs, sq_err, sq_ref, bad);
  else lq_vptq_columns_grid<T, VL, 4>(a, num_idx, stash, max_abs, sq_err, sq_ref, bad);
  if (bad) lq_report(status, LQ_STATUS_INDEX_RANGE);
  if (partials != nullptr) lq_verify_block_reduce(max_abs, sq_err, sq_ref, shared, partials);
}

// One kernel per codebook dtype and vector length. Dynamic shared memory (launch.ts sizes it): the
// reference stash with verify, then the staged residual codebooks where staged.
#define LQ_VPTQ_COLUMNS_KERNEL(name, T, VL)                                                                                            \
  extern "C" __global__ void __launch_bounds__(LQ_VPTQ_THREADS, LQ_VPTQ_COLUMNS_BLOCKS_PER_SM) name(                                  \
      const T* __restrict__ centroids, const T* __restrict__ res_centroids, const uint16_t* __restrict__ main_indices,                 \
      const uint8_t* __restrict__ res_indices, const T* __restrict__ outlier_centroids, const uint16_t* __restrict__ outlier_indices,  \
      const uint16_t* __restrict__ inv_perm, const T* __restrict__ weight_scale, const T* __restrict__ weight_bias,                    \
      void* __restrict__ out, const float* __restrict__ reference, lq_verify_partial* __restrict__ partials, int64_t out_features,      \
      int64_t in_features, int64_t num_centroids, int64_t num_res_centroids, int64_t group_num, int64_t group_size,                    \
      int64_t outlier_size, int64_t outlier_vector_len, int64_t outlier_num_centroids, int32_t res_index_bytes, int32_t res_staged,     \
      int32_t semantics, int32_t out_f16, uint32_t* status) {                                                                          \
    extern __shared__ __align__(16) unsigned char lq_vptq_staged[];                                                                    \
    __shared__ double shared[96];                                                                                                      \
    lq_vptq_columns_dequant_verify<T, VL>(centroids, res_centroids, main_indices, res_indices, outlier_centroids, outlier_indices,     \
                                          inv_perm, weight_scale, weight_bias, out, reference, partials, out_features, in_features,   \
                                          num_centroids, num_res_centroids, group_num, group_size, outlier_size, outlier_vector_len,  \
                                          outlier_num_centroids, res_index_bytes, res_staged, semantics, out_f16, status,             \
                                          lq_vptq_staged, shared);                                                                    \
  }

LQ_VPTQ_COLUMNS_KERNEL(lq_vptq_columns_v8_f16, __half, 8)
LQ_VPTQ_COLUMNS_KERNEL(lq_vptq_columns_v8_bf16, __nv_bfloat16, 8)
LQ_VPTQ_COLUMNS_KERNEL(lq_vptq_columns_v4_f16, __half, 4)
LQ_VPTQ_COLUMNS_KERNEL(lq_vptq_columns_v4_bf16, __nv_bfloat16, 4)
