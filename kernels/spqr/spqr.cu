// SpQR dequant and dequant-verify (layout and formula in spqr.cuh): the pipelined kernels
// (pipeline.cuh, instantiated at the end) where they fit, else the stripe kernels below where
// the shape allows (n and beta2 multiples of 8, a batch of rows in 48 KiB of shared memory), else
// the per-element one of elements.cuh; launch-shape.ts chooses and says why.
//
// Stripe kernels: block b owns the `stripe` (≤ 16) consecutive rows from b · stripe, T = 256
// threads, and walks them in batches of R (4, 2 or 1) rows, decoded whole into shared memory,
// column-interleaved (the R rows of a stored column adjacent; the output gathers across the row;
// stripe-phases.cuh has the layout and the phases, stripe-emit.cuh the output):
//  0. once per stripe: (s, z) of every (row, group) decoded once into shared memory, from one
//     vector load of the stripe's scale codes of a group (16 bytes at a 16-row stripe; likewise
//     the zero codes) and one 8-byte load of the tile's statistics; the stripe's CSR offsets;
//     the permutation checked (every stored index < n, so the gathers need no clamp);
//  1. decode: one piece (8 stored columns) of all R rows per item, R 8-byte code loads, four
//     fp16x2 grid operations per row (lq_spqr_grid2: bit for bit the float32 path's roundings),
//     byte permutes into column order, R 16-byte shared stores;
//  2. outliers: one thread per CSR entry of the batch; the first of a run of equal columns (rows
//     sorted by column, stably, on the host) adds the run in entry order in float32 onto the
//     dense fp16 and rounds once: W = h(dense + v₁ + …); no search, no atomics, no second pass
//     over the output;
//  3. emit, piece-major: a thread takes 8 original columns (one 16-byte inv_perm load, their 8
//     shared addresses made once) for all R rows: 8 gathers of 2R bytes, byte permutes into rows,
//     per row a 16-byte fp16 store or two float32 ones (16-byte reference loads for verify).
// Three barriers per batch. The next batch's codes and first outlier entries are loaded before
// step 3 (with verify, in step 1: the reference loads need those registers), so their latency
// hides behind the stores; LQ_SPQR_BLOCKS_PER_SM blocks of 256 threads per multiprocessor (≤ 80
// registers, ≤ 48 KiB of shared memory each) keep 3 × R rows in flight per multiprocessor.
//
// out: [m][n] weights, float32 or fp16 bits (the kernel's name says which, or none). reference
// (verify kernels): float32 [m][n] source weights in the output's column order, the partials (one
// per block) receiving max |w − ref|, Σ(w − ref)², Σ ref². row_offsets (nullable): no outliers
// (dense only). inv_perm (nullable): stored column order out. ptcsr: reproduce the PTCSR quirk
// (m % 16 == 0). Dynamic shared memory: [LQ_SPQR_OFFSET_BYTES: the stripe's offsets][align16(stripe
// · G · 4) bytes: (s, z)][R · 2n bytes: the rows], at least the 96 doubles of the verify
// reduction, which reuses it at the end.
#include "spqr.cuh"
#include "stripe-phases.cuh"
#include "stripe-emit.cuh"
#include "pipeline.cuh"
#include "elements.cuh"
#include "../common/status.h"
#include "../common/verify.cuh"

template <int OUT, bool VERIFY, int R, int C>
__device__ __forceinline__ void lq_spqr_stripes(const uint8_t* codes, const uint8_t* scale_codes, const uint8_t* zero_codes, const ushort4* stats, const int32_t* row_offsets,
                                                const uint16_t* cols, const uint16_t* values, const uint16_t* inv_perm, void* out, const float* reference,
                                                lq_verify_partial* partials, int64_t m, int n, int64_t beta1, int beta2, int64_t nnz, uint32_t over, bool ptcsr,
                                                int stripe, uint32_t* status) {
  extern __shared__ __align__(16) unsigned char lq_spqr_shared[];
  constexpr int T = LQ_SPQR_THREADS;
  // Verify keeps its registers for the reference loads: no codes held across the barriers.
  constexpr bool PREFETCH = !VERIFY;
  const int t = (int)threadIdx.x;
  lq_spqr_shape sh;
  sh.n = n, sh.pieces = n / 8, sh.groups = n / beta2, sh.group_pieces = beta2 / 8;
  sh.group_shift = (sh.group_pieces & (sh.group_pieces - 1)) == 0 ? __ffs(sh.group_pieces) - 1 : -1;
  int32_t* offsets = reinterpret_cast<int32_t*>(lq_spqr_shared);
  __half2* sz = reinterpret_cast<__half2*>(lq_spqr_shared + LQ_SPQR_OFFSET_BYTES);
  unsigned char* rows_buf = lq_spqr_shared + LQ_SPQR_OFFSET_BYTES + lq_spqr_align16(stripe * sh.groups * 4);
  const bool outliers = row_offsets != nullptr;
  double max_abs = 0.0, sq_err = 0.0, sq_ref = 0.0;
  uint32_t bad = 0;
  // Every loop bound and branch around a barrier is uniform over the block.
  for (int64_t s = blockIdx.x; s * stripe < m; s += gridDim.x) {
    const int64_t r0 = s * stripe;
    const int rows = (int)min((int64_t)stripe, m - r0);
    int rb = min(R, rows);
    // 0. Loads first (offsets, the first batch's codes, statistics, permutation), then their uses.
    bool index_bad = false;
    if (outliers && t < 32) {
      // The host checked the offsets; these bounds keep a kernel given bad ones inside cols/values.
      const int32_t offset = t <= rows ? __ldg(row_offsets + r0 + t) : 0;
      const int32_t previous = __shfl_up_sync(0xFFFFFFFFu, offset, 1);
      index_bad = t <= rows && (offset < 0 || offset > nnz || (t > 0 && offset < previous));
      if (t <= rows) offsets[t] = offset;
    }
    uint2 ahead[8 / R][R];
    if (PREFETCH) lq_spqr_load_ahead<R>(ahead, codes, r0, rb, sh);
    lq_spqr_build_table(sz, scale_codes, zero_codes, stats, m, beta1, stripe, r0, rows, sh.groups);
    for (int p = t; inv_perm != nullptr && p < sh.pieces; p += T) {
      const uint4 v = __ldg(reinterpret_cast<const uint4*>(inv_perm + 8 * p));
      const uint32_t high = __vmaxu2(__vmaxu2(v.x, v.y), __vmaxu2(v.z, v.w));
      index_bad |= max(high & 0xFFFFu, high >> 16) >= (uint32_t)n;
    }
    // A bad stored index or offset: report, and leave the stripe (the gathers below need no clamp).
    if (__syncthreads_or(index_bad)) {
      bad |= 2u;
      break;
    }
    lq_spqr_entry entry{};
    if (PREFETCH && outliers) lq_spqr_load_entry(entry, offsets[0] + t, offsets, rb, cols, values);
    for (int b0 = 0; b0 < rows;) {
      const int64_t r = r0 + b0;
      // 1. Dense rows (loads first).
      if (!PREFETCH) {
        lq_spqr_load_ahead<R>(ahead, codes, r, rb, sh);
        if (outliers) lq_spqr_load_entry(entry, offsets[b0] + t, offsets + b0, rb, cols, values);
      }
      lq_spqr_decode<R>(ahead, codes, r, rb, rows_buf, sz + b0 * sh.groups, sh, over, bad);
      __syncthreads();
      // 2. Outliers.
      if (outliers) lq_spqr_outliers<R>(entry, offsets + b0, rb, rows_buf, n, cols, values, row_offsets, r, ptcsr, bad);
      __syncthreads();
      // 3. Out, with the next batch's loads in flight.
      const int next = b0 + rb, next_rb = min(R, rows - next);
      if (PREFETCH && next < rows) {
        lq_spqr_load_ahead<R>(ahead, codes, r0 + next, next_rb, sh);
        if (outliers) lq_spqr_load_entry(entry, offsets[next] + t, offsets + next, next_rb, cols, values);
      }
      lq_spqr_emit<OUT, VERIFY, R, C>(rows_buf, r, rb, sh, inv_perm, out, reference, max_abs, sq_err, sq_ref);
      b0 = next, rb = next_rb;
      // The next batch overwrites the rows only after every thread has read them.
      if (b0 < rows) __syncthreads();
    }
    // The next stripe's offsets and table are written only after every thread has read these.
    if (s + gridDim.x < (m + stripe - 1) / stripe) __syncthreads();
  }
  if (bad != 0) lq_report(status, ((bad & 1u) ? LQ_STATUS_CODE_RANGE : 0u) | ((bad & 2u) ? LQ_STATUS_INDEX_RANGE : 0u));
  if (VERIFY) {
    // The reduction's 96 doubles may overlap what other warps are still reading.
    __syncthreads();
    lq_verify_block_reduce(max_abs, sq_err, sq_ref, reinterpret_cast<double*>(lq_spqr_shared), partials);
  }
}

// The launch's checks, then the body. One kernel per output kind and verify (named below): as one
// kernel with a switch the six bodies would share one register allocation and spill far more.
template <int OUT, bool VERIFY, int R, int C>
__device__ __forceinline__ void lq_spqr_stripes_checked(const uint8_t* codes, const uint8_t* scale_codes, const uint8_t* zero_codes, const ushort4* stats,
                                                        const int32_t* row_offsets, const uint16_t* cols, const uint16_t* values, const uint16_t* inv_perm, void* out,
                                                        const float* reference, lq_verify_partial* partials, int64_t m, int64_t n, int64_t beta1, int64_t beta2, int64_t nnz,
                                                        uint32_t max_code, int32_t ptcsr, int32_t stripe_rows, int32_t batch_rows, uint32_t* status) {
  uint32_t shared_bytes;
  asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(shared_bytes));
  const bool stripe_ok = stripe_rows == 1 || stripe_rows == 2 || stripe_rows == 4 || stripe_rows == 8 || stripe_rows == 16;
  const bool sizes_ok = m > 0 && n > 0 && n <= 65536 && n % 8 == 0 && beta1 > 0 && beta2 > 0 && beta2 % 8 == 0 && m % beta1 == 0 && n % beta2 == 0 && nnz >= 0 &&
                        nnz <= INT32_MAX - 4 * LQ_SPQR_THREADS && stripe_ok && batch_rows == R && R <= stripe_rows &&
                        blockDim.x == LQ_SPQR_THREADS && (ptcsr == 0 || m % LQ_SPQR_PTCSR_ROWS == 0) && (max_code & (max_code + 1)) == 0 &&
                        (OUT == 0 || out != nullptr) && (!VERIFY || (reference != nullptr && partials != nullptr));
  // The shared memory the host gave must hold the offsets, the table and the rows (and the reduction's 96 doubles).
  if (!sizes_ok || (int64_t)shared_bytes < max((int64_t)768, LQ_SPQR_OFFSET_BYTES + ((stripe_rows * (n / beta2) * 4 + 15) & ~(int64_t)15) + batch_rows * 2 * n)) {
    if (threadIdx.x == 0 && blockIdx.x == 0) lq_report(status, LQ_STATUS_SHAPE);
    return;
  }
  // Bits that no code of the format's width sets, in each byte (max_code = 2^bits − 1).
  const uint32_t over = max_code >= 255u ? 0u : ~(max_code * 0x01010101u);
  lq_spqr_stripes<OUT, VERIFY, R, C>(codes, scale_codes, zero_codes, stats, row_offsets, cols, values, inv_perm, out, reference, partials, m, (int)n, beta1, (int)beta2, nnz,
                                  over, ptcsr != 0, stripe_rows, status);
}

// The arguments of every stripe kernel; `out` and `reference` are ignored by kernels that write
// no weights or verify nothing.
#define LQ_SPQR_STRIPE_KERNEL(name, OUT, VERIFY, R, C)                                                                                                     \
  extern "C" __global__ void __launch_bounds__(LQ_SPQR_THREADS, LQ_SPQR_BLOCKS_PER_SM) name(                                                           \
      const uint8_t* __restrict__ codes, const uint8_t* __restrict__ scale_codes, const uint8_t* __restrict__ zero_codes,                              \
      const ushort4* __restrict__ stats, const int32_t* __restrict__ row_offsets, const uint16_t* __restrict__ cols,                                   \
      const uint16_t* __restrict__ values, const uint16_t* __restrict__ inv_perm, void* __restrict__ out, const float* __restrict__ reference,         \
      lq_verify_partial* __restrict__ partials, int64_t m, int64_t n, int64_t beta1, int64_t beta2, int64_t nnz, uint32_t max_code, int32_t ptcsr,    \
      int32_t stripe_rows, int32_t batch_rows, uint32_t* status) {                                                                                     \
    lq_spqr_stripes_checked<OUT, VERIFY, R, C>(codes, scale_codes, zero_codes, stats, row_offsets, cols, values, inv_perm, out, reference, partials, m, n,   \
                                         beta1, beta2, nnz, max_code, ptcsr, stripe_rows, batch_rows, status);                                      \
  }

// Output kind: 0 none, 1 fp16 bits, 2 float32; then R, the rows of a batch; then C, the columns of
// an emit item (stripe-emit.cuh). The names end in _r<R>, and "s" for C = 4. launch-shape.ts takes the
// first that fits in shared memory of, per mode:
//  - fp16 out, and neither output nor verify (the kernel only checks: codes in range, indices, as
//    a launch asking for nothing does): R = 4, 2, 1 with 8-column items;
//  - float32 out, and verify with any output: R = 4 with 4-column items (_r4s), then R = 2, 1 with
//    8-column items, the fallbacks where 4 rows of 2n bytes do not fit in 48 KiB (above about 5.4K
//    columns at 16-column groups). fp16 keeps 8-column items: a warp's 16-byte stores are already
//    512 contiguous bytes, which C = 4 gives float32 (stripe-emit.cuh).
// Why (issue 9, H100, 2026-11-23, % of a ~3000 GB/s copy, one run, fp16 / float32 / verify): 4s
// 72.0 / 82.2 / 75.1; float32 at R = 4, 2, 1 with 8-column items 68.6, 71.2, 72.2 (verify at R = 4
// with them spilled 44 … 76 bytes per thread); verify at R = 2, 1 with them 74.5, 63.5, at 2s
// 71.1; the old main kernel 64.5 / 74.6 / 76.3. The fp16 kernel, the same in every run, read
// 71.5 … 72.1: differences of about a point are noise (4s verify vs the old kernel's included).
#define LQ_SPQR_KERNELS(R)                                          \
  LQ_SPQR_STRIPE_KERNEL(lq_spqr_stripes_f16_r##R, 1, false, R, 8)   \
  LQ_SPQR_STRIPE_KERNEL(lq_spqr_stripes_check_r##R, 0, false, R, 8)
#define LQ_SPQR_WIDE_KERNELS(R, C, suffix)                                    \
  LQ_SPQR_STRIPE_KERNEL(lq_spqr_stripes_f32_r##suffix, 2, false, R, C)        \
  LQ_SPQR_STRIPE_KERNEL(lq_spqr_stripes_verify_r##suffix, 0, true, R, C)      \
  LQ_SPQR_STRIPE_KERNEL(lq_spqr_stripes_f16_verify_r##suffix, 1, true, R, C)  \
  LQ_SPQR_STRIPE_KERNEL(lq_spqr_stripes_f32_verify_r##suffix, 2, true, R, C)
LQ_SPQR_KERNELS(4)
LQ_SPQR_KERNELS(2)
LQ_SPQR_KERNELS(1)
LQ_SPQR_WIDE_KERNELS(4, 4, 4s)
LQ_SPQR_WIDE_KERNELS(2, 8, 2)
LQ_SPQR_WIDE_KERNELS(1, 8, 1)

// The pipelined kernels (pipeline.cuh), where launch-shape.ts finds that they fit: the same output
// kinds and items as the stripe kernels, R = 4 or 2 rows a batch, persistent (one wave). Their
// scale codes, zero codes and statistics come in pipeline.cuh's layout, not spqr.cuh's.
template <int OUT, bool VERIFY, int R, int C, int NT>
__device__ __forceinline__ void lq_spqr_pipeline_checked(const uint8_t* codes, const uint8_t* scale_codes, const uint8_t* zero_codes, const ushort4* stats,
                                                         const int32_t* row_offsets, const uint16_t* cols, const uint16_t* values, const uint16_t* inv_perm, void* out,
                                                         const float* reference, lq_verify_partial* partials, int64_t m, int64_t n, int64_t beta1, int64_t beta2, int64_t nnz,
                                                         uint32_t max_code, int32_t ptcsr, uint32_t* status) {
  uint32_t shared_bytes;
  asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(shared_bytes));
  // Batches inside one tile row (beta1 % R, so m % R too), 16-byte code copies (n % 16).
  const bool sizes_ok = m > 0 && n > 0 && n <= 65536 && n % 16 == 0 && beta1 > 0 && beta2 > 0 && beta2 % 8 == 0 && m % beta1 == 0 && n % beta2 == 0 && beta1 % R == 0 &&
                        nnz >= 0 && nnz <= INT32_MAX - 4 * NT && blockDim.x == NT && (ptcsr == 0 || m % LQ_SPQR_PTCSR_ROWS == 0) &&
                        (max_code & (max_code + 1)) == 0 && (OUT == 0 || out != nullptr) && (!VERIFY || (reference != nullptr && partials != nullptr));
  if (!sizes_ok || (int64_t)shared_bytes < max((int64_t)768, lq_spqr_pipe_shared_bytes(R, n, n / beta2))) {
    if (threadIdx.x == 0 && blockIdx.x == 0) lq_report(status, LQ_STATUS_SHAPE);
    return;
  }
  const uint32_t over = max_code >= 255u ? 0u : ~(max_code * 0x01010101u);
  lq_spqr_pipeline<OUT, VERIFY, R, C, NT>(codes, scale_codes, zero_codes, stats, row_offsets, cols, values, inv_perm, out, reference, partials, m, (int)n, beta1, (int)beta2, nnz,
                                      over, ptcsr != 0, status);
}

// NT: threads a block, declared once here: the launch bounds carry it to the host, which launches
// what the driver reports for them (launch-shape.ts pipelineLaunch, CudaModule.maxThreadsPerBlock),
// and the kernel refuses any other block size. BLOCKS: resident blocks
// per multiprocessor the registers are budgeted for (shared memory decides the rest: launch-shape.ts
// asks the driver how many fit).
#define LQ_SPQR_PIPE_KERNEL(name, OUT, VERIFY, R, C, NT, BLOCKS)                                                                                        \
  extern "C" __global__ void __launch_bounds__(NT, BLOCKS) name(                                                                                       \
      const uint8_t* __restrict__ codes, const uint8_t* __restrict__ scale_codes, const uint8_t* __restrict__ zero_codes,                              \
      const ushort4* __restrict__ stats, const int32_t* __restrict__ row_offsets, const uint16_t* __restrict__ cols,                                   \
      const uint16_t* __restrict__ values, const uint16_t* __restrict__ inv_perm, void* __restrict__ out, const float* __restrict__ reference,         \
      lq_verify_partial* __restrict__ partials, int64_t m, int64_t n, int64_t beta1, int64_t beta2, int64_t nnz, uint32_t max_code, int32_t ptcsr,    \
      uint32_t* status) {                                                                                                                              \
    lq_spqr_pipeline_checked<OUT, VERIFY, R, C, NT>(codes, scale_codes, zero_codes, stats, row_offsets, cols, values, inv_perm, out, reference, partials, m, n, \
                                               beta1, beta2, nnz, max_code, ptcsr, status);                                                            \
  }
// Names: lq_spqr_pipe_<output>[_verify]_r<R>[s], as the stripe kernels'. NT for every kernel but
// float32 out alone, which takes NT_F32 (pipeline.cuh LQ_SPQR_PIPE_WIDE_THREADS says why).
#define LQ_SPQR_PIPE_KERNELS(R, C, suffix, NT, NT_F32, BLOCKS)                                    \
  LQ_SPQR_PIPE_KERNEL(lq_spqr_pipe_f16_r##R, 1, false, R, 8, NT, BLOCKS)                         \
  LQ_SPQR_PIPE_KERNEL(lq_spqr_pipe_check_r##R, 0, false, R, 8, NT, BLOCKS)                       \
  LQ_SPQR_PIPE_KERNEL(lq_spqr_pipe_f32_r##suffix, 2, false, R, C, NT_F32, BLOCKS)                \
  LQ_SPQR_PIPE_KERNEL(lq_spqr_pipe_verify_r##suffix, 0, true, R, C, NT, BLOCKS)                  \
  LQ_SPQR_PIPE_KERNEL(lq_spqr_pipe_f16_verify_r##suffix, 1, true, R, C, NT, BLOCKS)              \
  LQ_SPQR_PIPE_KERNEL(lq_spqr_pipe_f32_verify_r##suffix, 2, true, R, C, NT, BLOCKS)
LQ_SPQR_PIPE_KERNELS(4, 4, 4s, LQ_SPQR_THREADS, LQ_SPQR_THREADS, 3)
LQ_SPQR_PIPE_KERNELS(2, 4, 2s, LQ_SPQR_PIPE_WIDE_THREADS, LQ_SPQR_THREADS, 2)
