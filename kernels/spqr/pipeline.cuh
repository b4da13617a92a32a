// The pipelined SpQR kernel body (spqr.cu instantiates it; launch-shape.ts picks it where it fits):
// one persistent wave of blocks, block b taking batches b, b + grid, … of R consecutive rows, with
// the input of the batch after next copied into shared memory (cp.async) while the block works on
// the current one.
//
// Why (issue 9): the stripe kernels (spqr.cu) stalled on memory latency. ncu on the H100 (11008 ×
// 4096, fp16 out): 0.45 instructions issued per scheduler cycle, no eligible warp 55 % of the
// time, the same 65 µs at a 1.58 GHz SM clock as at 1.98, DRAM at 56 % of its peak. Each stripe
// began with a chain of dependent loads (statistics, permutation, CSR offsets, then the entries),
// each batch's codes were held in registers (80 a thread, so 3 blocks per multiprocessor), and
// shorter stripes (more blocks, a shorter tail) were slower for the longer chains. Here a batch's
// codes, scale and zero codes and tile statistics arrive in shared memory a whole batch ahead and
// hold no register; the CSR offsets are read one batch ahead and the entries loaded during the
// previous batch's output; the permutation is checked once per block.
//
// Its statistics come in a layout of their own (pipeline-layout.ts), so that each of a
// batch's copies is a run of whole 16-byte chunks (as [G][m] the scale codes of a batch are G
// runs of R bytes, m bytes apart: a 32-byte sector fetched for every 4 bytes):
//
//   scale_codes  uint8   [m / R][code_stride]    qs of (row b·R + i, group g) at g·R + i
//   zero_codes   uint8   [m / R][code_stride]    qz, likewise
//   stats        ushort4 [m / beta1][stat_groups] (s_s, z_s, s_z, z_z) of tile (g, tile row)
//
// code_stride = G·R rounded up to 16 bytes, stat_groups = G rounded up to even (16 bytes).
//
// Shared memory (dynamic): [64 B: the CSR offsets of two batches][R · 2n: the batch's rows, fp16,
// column-interleaved as stripe-phases.cuh lays them][2 stages of: R · n code bytes, code_stride
// scale codes, code_stride zero codes, 8 · stat_groups bytes of statistics]. A batch lies inside
// one tile row (beta1 % R == 0); n % 16 == 0 for the 16-byte code copies.
//
// Per batch, three barriers: (1) its copies landed (and the previous output finished with the
// rows); decode from the stage into the rows, with each thread's (s, z) of a group in registers
// (thread t takes groups t, t + T, …: no table, no barrier for one); (2) the stage is free: copy
// the batch after next into it; the outliers; (3) the next batch's entries into registers, then
// the output (stripe-emit.cuh).
#pragma once
#include "stripe-phases.cuh"
#include "stripe-emit.cuh"
#include "../common/async-copy.cuh"
#include "../common/status.h"

#define LQ_SPQR_PIPE_OFFSET_BYTES 64
// Columns per thread whose permuted indices stay in registers across batches (R = 2 kernels): 16,
// i.e. 8 registers (two 8-column items, or four 4-column ones). 48 (every column of rows up to
// 12288 wide) measured fp16 / float32 79.8 / 81.2 % of the copy against 79.6 / 86.1 at 4096 ×
// 11008, 256 threads a block (H100, issue 9): the float32 kernel reached 128 registers.
#define LQ_SPQR_PIPE_CACHED_COLUMNS 16
// Threads a block of the R = 2 kernels but float32 out alone (spqr.cu). At R = 2 (rows too wide
// for 4, e.g. 4096 × 11008) the rows and stages leave room for 2 blocks per multiprocessor, and
// 256 threads a block were too few warps to hide the loads of each item: ncu's largest stalls
// were long-scoreboard waits on an item's inv_perm and reference words. At 512 threads (64
// registers, no spills) the H100 measured, % of the copy, fp16 / float32 / verify / float32 out +
// verify: 82.0–82.3 / 80.7 / 83.6–83.8 / 90.6, against 79.1–79.9 / 86.2 / 74.8–75.0 / 84.5–84.6
// at 256 and 81.5–81.7 / 82.9–83.5 / 81.4–81.5 / 89.7–89.8 at 384 (issue 9, bench/RESULTS.md).
// Float32 out alone keeps 256. The R = 4 kernels spill below 80 registers, so they keep 256.
#define LQ_SPQR_PIPE_WIDE_THREADS 512

__host__ __device__ constexpr int64_t lq_spqr_pipe_code_stride(int64_t rows, int64_t groups) { return (groups * rows + 15) & ~(int64_t)15; }
__host__ __device__ constexpr int64_t lq_spqr_pipe_stat_bytes(int64_t groups) { return ((groups + 1) & ~(int64_t)1) * 8; }
__host__ __device__ constexpr int64_t lq_spqr_pipe_stage_bytes(int64_t rows, int64_t n, int64_t groups) {
  return rows * n + 2 * lq_spqr_pipe_code_stride(rows, groups) + lq_spqr_pipe_stat_bytes(groups);
}
// The shared-memory bytes of a launch (launch-shape.ts computes the same).
__host__ __device__ constexpr int64_t lq_spqr_pipe_shared_bytes(int64_t rows, int64_t n, int64_t groups) {
  return LQ_SPQR_PIPE_OFFSET_BYTES + rows * 2 * n + 2 * lq_spqr_pipe_stage_bytes(rows, n, groups);
}

struct lq_spqr_pipe_stage {
  unsigned char* codes;  // [R][n]
  unsigned char* scale_codes;  // [G][R]
  unsigned char* zero_codes;  // [G][R]
  uint2* stats;  // [G]
};

__device__ __forceinline__ lq_spqr_pipe_stage lq_spqr_pipe_stage_at(unsigned char* base, int rows, int n, int groups) {
  const int code_stride = (int)lq_spqr_pipe_code_stride(rows, groups);
  lq_spqr_pipe_stage s;
  s.codes = base;
  s.scale_codes = base + rows * n;
  s.zero_codes = s.scale_codes + code_stride;
  s.stats = reinterpret_cast<uint2*>(s.zero_codes + code_stride);
  return s;
}

// 16-byte chunks [0, bytes) of `from` into `to`, spread over the block's NT threads.
template <int NT>
__device__ __forceinline__ void lq_spqr_pipe_copy_run(unsigned char* to, const unsigned char* from, int bytes) {
  for (int c = (int)threadIdx.x; c < bytes / 16; c += NT) lq_cp_async<16>(to + 16 * c, from + 16 * c);
}

// Every copy of batch b (rows b·R … b·R + R − 1) into `stage`, then the group closes (an empty
// group past the last batch keeps every thread's group count the same).
template <int R, int NT>
__device__ __forceinline__ void lq_spqr_pipe_copy(const lq_spqr_pipe_stage& stage, bool valid, int64_t b, const uint8_t* codes, const uint8_t* scale_codes, const uint8_t* zero_codes,
                                                  const ushort4* stats, int64_t beta1, int n, int groups) {
  if (valid) {
    const int code_stride = (int)lq_spqr_pipe_code_stride(R, groups), stat_bytes = (int)lq_spqr_pipe_stat_bytes(groups);
    lq_spqr_pipe_copy_run<NT>(stage.codes, codes + b * R * n, R * n);
    lq_spqr_pipe_copy_run<NT>(stage.scale_codes, scale_codes + b * code_stride, code_stride);
    lq_spqr_pipe_copy_run<NT>(stage.zero_codes, zero_codes + b * code_stride, code_stride);
    lq_spqr_pipe_copy_run<NT>(reinterpret_cast<unsigned char*>(stage.stats), reinterpret_cast<const unsigned char*>(stats) + (b * R / beta1) * stat_bytes, stat_bytes);
  }
  lq_cp_async_commit();
}

// The R codes of group g (bytes g·R … g·R + R − 1 of a stage's scale or zero codes), row i in byte i.
template <int R>
__device__ __forceinline__ uint32_t lq_spqr_pipe_group_codes(const unsigned char* p, int g) {
  if constexpr (R == 4) return *reinterpret_cast<const uint32_t*>(p + 4 * g);
  else if constexpr (R == 2) return *reinterpret_cast<const uint16_t*>(p + 2 * g);
  else return p[g];
}

// Warp 0: lane i ≤ R loads CSR offset r + i of the batch at row r (lq_spqr_pipe_load_offset, a
// batch ahead), then checks and stores them (lq_spqr_pipe_store_offsets). Offsets outside 0 … nnz
// or decreasing (the host checked them; a kernel given bad ones must stay inside cols/values)
// report bit 2 and read as an empty batch.
template <int R>
__device__ __forceinline__ int32_t lq_spqr_pipe_load_offset(const int32_t* row_offsets, int64_t r, bool valid) {
  const int lane = (int)threadIdx.x;
  return valid && lane <= R ? __ldg(row_offsets + r + lane) : 0;
}

template <int R>
__device__ __forceinline__ void lq_spqr_pipe_store_offsets(int32_t offset, int32_t* to, int64_t nnz, uint32_t& bad) {
  const int lane = (int)threadIdx.x;
  const int32_t previous = __shfl_up_sync(0xFFFFFFFFu, offset, 1);
  const bool wrong = lane <= R && (offset < 0 || offset > nnz || (lane > 0 && offset < previous));
  const int32_t first = __shfl_sync(0xFFFFFFFFu, offset, 0);
  if (__any_sync(0xFFFFFFFFu, wrong)) {
    bad |= 2u;
    offset = min(max(first, 0), (int32_t)nnz);
  }
  if (lane <= R) to[lane] = offset;
}

// The order in which thread t decodes its group's pieces: piece first + (k ^ order) at step k.
// Lanes hold groups 32R bytes apart (beta2 = 16), so in a fixed order a warp's k-th unit stores
// would meet in at most 4 of a bank row's 8 sixteen-byte slots, whatever the swizzle inside a
// piece (lq_spqr_swizzle): 2-way conflicts. Starting at piece `order` adds the lane bit the
// swizzle leaves free. A power of two of pieces per group only (else 0: the plain order).
template <int R>
__device__ __forceinline__ int lq_spqr_pipe_piece_order(int t, const lq_spqr_shape& sh) {
  if (sh.group_shift <= 0) return 0;
  return (R == 2 ? t >> 1 : t) & (sh.group_pieces - 1);
}

template <int OUT, bool VERIFY, int R, int C, int NT>
__device__ __forceinline__ void lq_spqr_pipeline(const uint8_t* codes, const uint8_t* scale_codes, const uint8_t* zero_codes, const ushort4* stats, const int32_t* row_offsets,
                                                 const uint16_t* cols, const uint16_t* values, const uint16_t* inv_perm, void* out, const float* reference,
                                                 lq_verify_partial* partials, int64_t m, int n, int64_t beta1, int beta2, int64_t nnz, uint32_t over, bool ptcsr,
                                                 uint32_t* status) {
  extern __shared__ __align__(16) unsigned char lq_spqr_shared[];
  const int t = (int)threadIdx.x;
  lq_spqr_shape sh;
  sh.n = n, sh.pieces = n / 8, sh.groups = n / beta2, sh.group_pieces = beta2 / 8;
  sh.group_shift = (sh.group_pieces & (sh.group_pieces - 1)) == 0 ? __ffs(sh.group_pieces) - 1 : -1;
  int32_t* ring = reinterpret_cast<int32_t*>(lq_spqr_shared);
  unsigned char* rows_buf = lq_spqr_shared + LQ_SPQR_PIPE_OFFSET_BYTES;
  const int stage_bytes = (int)lq_spqr_pipe_stage_bytes(R, n, sh.groups);
  unsigned char* stages = rows_buf + R * 2 * n;
  const bool outliers = row_offsets != nullptr;
  const int64_t batches = m / R, grid = gridDim.x;
  double max_abs = 0.0, sq_err = 0.0, sq_ref = 0.0;
  uint32_t bad = 0;

  // Every stored column of the permutation < n, once per block: the gathers need no clamp.
  bool perm_bad = false;
  for (int p = t; inv_perm != nullptr && p < sh.pieces; p += NT) {
    const uint4 v = __ldg(reinterpret_cast<const uint4*>(inv_perm + 8 * p));
    const uint32_t high = __vmaxu2(__vmaxu2(v.x, v.y), __vmaxu2(v.z, v.w));
    perm_bad |= max(high & 0xFFFFu, high >> 16) >= (uint32_t)n;
  }
  if (__syncthreads_or(perm_bad)) {
    if (t == 0) lq_report(status, LQ_STATUS_INDEX_RANGE);
    return;
  }

  // The permuted columns of the thread's first items, the same in every batch (stripe-emit.cuh),
  // at R = 2 only (the R = 4 kernels have 80 registers; the R = 2 ones fit them in 64 at 512
  // threads a block, 128 at 256). Measured at 256 threads on the H100 (issue 9, 2026-11-24, % of
  // the copy, fp16 / float32): R = 2 (4096 × 11008) 69.8 / 85.0 cached against 64.9 / 83.4; R = 4
  // (11008 × 4096) 78.3 / 81.5 cached (with 16-byte decode loads too) against 80.4 / 84.4, and
  // verify at R = 4 spilled 16-20 bytes with them.
  constexpr int K = VERIFY || R > 2 ? 0 : LQ_SPQR_PIPE_CACHED_COLUMNS / C;
  uint32_t cached[K > 0 ? K : 1][C / 2];
#pragma unroll
  for (int k = 0; k < K; k++) {
    const int item = t + k * NT;
    if (item < n / C) lq_spqr_item_columns<C>(inv_perm, item, cached[k]);
  }

  int64_t b = blockIdx.x;
  const auto stage = [&](int k) { return lq_spqr_pipe_stage_at(stages + (k & 1) * stage_bytes, R, n, sh.groups); };
  const auto copy = [&](int k, int64_t batch) { lq_spqr_pipe_copy<R, NT>(stage(k), batch < batches, batch, codes, scale_codes, zero_codes, stats, beta1, n, sh.groups); };
  if (outliers && t < 32) lq_spqr_pipe_store_offsets<R>(lq_spqr_pipe_load_offset<R>(row_offsets, b * R, b < batches), ring, nnz, bad);
  copy(0, b);
  copy(1, b + grid);
  __syncthreads();
  lq_spqr_entry entry{};
  if (outliers && b < batches) lq_spqr_load_entry(entry, ring[0] + t, ring, R, cols, values);

  // Every loop bound and branch around a barrier is uniform over the block.
  for (int k = 0; b < batches; k++, b += grid) {
    const int64_t r = b * R, next = b + grid;
    int32_t* offsets = ring + 8 * (k & 1);
    int32_t* next_offsets = ring + 8 * ((k + 1) & 1);
    int32_t next_offset = 0;
    if (outliers && t < 32) next_offset = lq_spqr_pipe_load_offset<R>(row_offsets, next * R, next < batches);
    // 1. This batch's copies landed (the next batch's may still be in flight); the rows are free.
    lq_cp_async_wait<1>();
    __syncthreads();
    const lq_spqr_pipe_stage in = stage(k);
    for (int g = t; g < sh.groups; g += NT) {
      const uint32_t scale_word = lq_spqr_pipe_group_codes<R>(in.scale_codes, g), zero_word = lq_spqr_pipe_group_codes<R>(in.zero_codes, g);
      const uint2 so = in.stats[g];
      __half2 s[R], z[R];
#pragma unroll
      for (int i = 0; i < R; i++) {
        const uint32_t code_s = (scale_word >> (8 * i)) & 0xFFu, code_z = (zero_word >> (8 * i)) & 0xFFu;
        const __half2 sz = lq_spqr_grid2(0x64006400u | code_s | (code_z << 16), lq_bits_as_half2(so.x), lq_bits_as_half2(so.y));
        s[i] = __low2half2(sz), z[i] = __high2half2(sz);
      }
      const int first = g * sh.group_pieces, order = lq_spqr_pipe_piece_order<R>(t, sh);
      int pp = 0;
      // Verify: two pieces a 16-byte load per row where groups hold pairs (beta2 % 16 == 0: every
      // pair aligned), conflict-free across the warp, where 8-byte loads 16 bytes apart conflict
      // 2-way. Measured on the H100 (11008 × 4096, % of the copy): verify 87.9-89.5 with them,
      // 86.9-87.5 without; float32 out 80.4-81.9 with them, 83.9-84.9 without (fp16 about even).
      for (; VERIFY && (sh.group_pieces & 1) == 0 && pp < sh.group_pieces; pp += 2) {
        const int pair = first + (pp ^ (order & ~1)), swap = order & 1;
        uint2 lo[R], hi[R];
#pragma unroll
        for (int i = 0; i < R; i++) {
          const uint4 w = *reinterpret_cast<const uint4*>(in.codes + i * n + 8 * pair);
          lo[i] = swap ? make_uint2(w.z, w.w) : make_uint2(w.x, w.y), hi[i] = swap ? make_uint2(w.x, w.y) : make_uint2(w.z, w.w);
        }
        lq_spqr_decode_piece_sz<R>(lo, pair + swap, rows_buf, s, z, over, bad);
        lq_spqr_decode_piece_sz<R>(hi, pair + 1 - swap, rows_buf, s, z, over, bad);
        lq_spqr_in_order();
      }
      for (; pp < sh.group_pieces; pp++) {
        const int piece = first + (pp ^ order);
        uint2 q[R];
#pragma unroll
        for (int i = 0; i < R; i++) q[i] = *reinterpret_cast<const uint2*>(in.codes + i * n + 8 * piece);
        lq_spqr_decode_piece_sz<R>(q, piece, rows_buf, s, z, over, bad);
        lq_spqr_in_order();
      }
    }
    if (outliers && t < 32) lq_spqr_pipe_store_offsets<R>(next_offset, next_offsets, nnz, bad);
    // 2. The stage is read: the batch after next goes into it. The outliers.
    __syncthreads();
    copy(k, b + 2 * grid);
    if (outliers) lq_spqr_outliers<R, NT>(entry, offsets, R, rows_buf, n, cols, values, row_offsets, r, ptcsr, bad);
    // 3. The next batch's first entries in flight, then the output.
    __syncthreads();
    if (outliers && next < batches) lq_spqr_load_entry(entry, next_offsets[0] + t, next_offsets, R, cols, values);
    lq_spqr_emit_cached<OUT, VERIFY, R, C, K, NT>(rows_buf, r, R, sh, inv_perm, cached, out, reference, max_abs, sq_err, sq_ref);
  }
  lq_cp_async_wait<0>();
  if (bad != 0) lq_report(status, ((bad & 1u) ? LQ_STATUS_CODE_RANGE : 0u) | ((bad & 2u) ? LQ_STATUS_INDEX_RANGE : 0u));
  if (VERIFY) {
    // The reduction's 96 doubles may overlap what other warps are still reading.
    __syncthreads();
    lq_verify_block_reduce(max_abs, sq_err, sq_ref, reinterpret_cast<double*>(lq_spqr_shared), partials);
  }
}
