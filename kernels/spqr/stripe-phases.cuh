// The phases of the stripe kernel (spqr.cu): what one thread does between two block barriers.
// A batch is `rb` consecutive rows of the block's stripe; its items are (row, piece) pairs, a
// piece being 8 consecutive columns (stored order when decoding, original order when writing).
// Thread t takes items t, t + T, t + 2T, … of the batch's rb · P (P = n / 8 pieces per row); the
// walk below steps through them without a division.
#pragma once
#include "spqr.cuh"
#include "../common/verify.cuh"

#define LQ_SPQR_THREADS 256
// Resident blocks per multiprocessor the kernels are compiled for: 3 leaves each thread 80 registers,
// which every stripe kernel's phases fit in without spilling (at 4, i.e. 64 registers, they spilled
// 44 … 92 bytes per thread to local memory, reloaded in the batch loop: more instructions per byte).
#define LQ_SPQR_BLOCKS_PER_SM 3
// Items per thread whose codes are loaded a phase ahead, in registers (2 each).
#define LQ_SPQR_AHEAD 8
// Rows of a batch and of a stripe at most (launch.ts chooses them; the kernel checks).
#define LQ_SPQR_MAX_BATCH 8
#define LQ_SPQR_MAX_STRIPE 16
// Shared memory for the stripe's CSR offsets (LQ_SPQR_MAX_STRIPE + 1 int32, 16-byte aligned).
#define LQ_SPQR_OFFSET_BYTES 80
// A column no outlier has (columns are uint16): ends a run of equal columns.
#define LQ_SPQR_NO_COLUMN 0x10000u

__device__ __forceinline__ int lq_spqr_align16(int bytes) { return (bytes + 15) & ~15; }

// A compiler-only fence between the items of a phase: without it the shared-memory loads of all
// unrolled items are hoisted to the front, which takes far more registers than the 80 that
// LQ_SPQR_BLOCKS_PER_SM blocks per multiprocessor leave (the global loads that should overlap
// are issued before it).
__device__ __forceinline__ void lq_spqr_in_order() { asm volatile("" ::: "memory"); }

// The walk over a thread's items: (row, piece) of item t, then + T at each step.
struct lq_spqr_walk {
  int row, piece;
  __device__ __forceinline__ void step(int step_rows, int step_pieces, int pieces) {
    row += step_rows;
    piece += step_pieces;
    if (piece >= pieces) {
      piece -= pieces;
      row++;
    }
  }
};

struct lq_spqr_shape {
  int n, pieces, groups, group_pieces, group_shift;  // group_shift: log2(group_pieces), or −1
  int first_row, first_piece, step_rows, step_pieces;
  __device__ __forceinline__ int group_of(int piece) const { return group_shift >= 0 ? piece >> group_shift : piece / group_pieces; }
  // An opaque copy: each phase recomputes its walk (a few integer operations) rather than keeping
  // the walk of an earlier phase (the same items) alive in registers across the barriers.
  __device__ __forceinline__ lq_spqr_walk start() const {
    lq_spqr_walk w;
    asm volatile("mov.b32 %0, %2;\n\tmov.b32 %1, %3;" : "=r"(w.row), "=r"(w.piece) : "r"(first_row), "r"(first_piece));
    return w;
  }
  __device__ __forceinline__ void step(lq_spqr_walk& w) const { w.step(step_rows, step_pieces, pieces); }
};

// Statistics of the stripe's rows r0 … r0 + rows − 1 into sz[rr · G + g] = (s, z) of (row r0 + rr,
// group g), as two fp16: each thread takes groups g, g + T, …; the stripe's scale (zero) codes of one
// group are `stripe` adjacent bytes of the [G][m] array, one vector load when m % stripe == 0 (so the
// stripe never runs past row m − 1), byte by byte otherwise; one tile's statistics for the whole
// stripe when beta1 % stripe == 0, else one load per row.
__device__ __forceinline__ void lq_spqr_load_stat_codes(const uint8_t* p, int stripe, bool vector, int rows, uint32_t q[4]) {
  q[0] = q[1] = q[2] = q[3] = 0;
  if (vector && stripe == 16) {
    const uint4 v = __ldg(reinterpret_cast<const uint4*>(p));
    q[0] = v.x, q[1] = v.y, q[2] = v.z, q[3] = v.w;
  } else if (vector && stripe == 8) {
    const uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
    q[0] = v.x, q[1] = v.y;
  } else if (vector && stripe == 4) {
    q[0] = __ldg(reinterpret_cast<const uint32_t*>(p));
  } else {
#pragma unroll
    for (int rr = 0; rr < LQ_SPQR_MAX_STRIPE; rr++) {
      if (rr < rows) q[rr / 4] |= (uint32_t)__ldg(p + rr) << (8 * (rr % 4));
    }
  }
}

__device__ __forceinline__ void lq_spqr_build_table(__half2* sz, const uint8_t* scale_codes, const uint8_t* zero_codes, const ushort4* stats, int64_t m, int64_t beta1,
                                                    int stripe, int64_t r0, int rows, int groups) {
  const int64_t row_groups = m / beta1;
  const bool vector = m % stripe == 0, one_tile = beta1 % stripe == 0;
  for (int g = threadIdx.x; g < groups; g += LQ_SPQR_THREADS) {
    uint32_t qs[4], qz[4];
    lq_spqr_load_stat_codes(scale_codes + (int64_t)g * m + r0, stripe, vector, rows, qs);
    lq_spqr_load_stat_codes(zero_codes + (int64_t)g * m + r0, stripe, vector, rows, qz);
    // (s_s, z_s) and (s_z, z_z): the scales and the zeros of (s, z), as fp16x2.
    const uint2* tile_stats = reinterpret_cast<const uint2*>(stats) + (int64_t)g * row_groups;
    uint2 so = __ldg(tile_stats + r0 / beta1);
#pragma unroll
    for (int rr = 0; rr < LQ_SPQR_MAX_STRIPE; rr++) {
      if (rr >= rows) break;
      if (!one_tile) so = __ldg(tile_stats + (r0 + rr) / beta1);
      const uint32_t code_s = (qs[rr / 4] >> (8 * (rr % 4))) & 0xFFu, code_z = (qz[rr / 4] >> (8 * (rr % 4))) & 0xFFu;
      sz[rr * groups + g] = lq_spqr_grid2(0x64006400u | code_s | (code_z << 16), lq_bits_as_half2(so.x), lq_bits_as_half2(so.y));
    }
  }
}

// The codes of the thread's first LQ_SPQR_AHEAD items of the batch starting at row `r`.
__device__ __forceinline__ void lq_spqr_load_ahead(uint2 ahead[LQ_SPQR_AHEAD], const uint8_t* codes, int64_t r, int rb, const lq_spqr_shape& sh) {
  lq_spqr_walk w = sh.start();
#pragma unroll
  for (int k = 0; k < LQ_SPQR_AHEAD; k++) {
    ahead[k] = w.row < rb ? __ldg(reinterpret_cast<const uint2*>(codes + (r + w.row) * sh.n + 8 * w.piece)) : make_uint2(0u, 0u);
    sh.step(w);
  }
}

// 8 dense weights h(s·h(q − z)) of one piece into the batch's shared rows (16-byte store);
// `over` has the bits no code of the format's width sets.
__device__ __forceinline__ void lq_spqr_decode_piece(uint2 q, int row, int piece, uint16_t* rows_buf, const __half2* sz_batch, const lq_spqr_shape& sh, uint32_t over, uint32_t& bad) {
  bad |= ((q.x | q.y) & over) != 0u ? 1u : 0u;
  const __half2 sz = sz_batch[row * sh.groups + sh.group_of(piece)];
  const __half2 s = __low2half2(sz), z = __high2half2(sz);
  // __byte_perm picks code bytes (0 … 3) and 0x64 (byte 4 of the second word) into 1024 + code.
  const uint4 bits = make_uint4(lq_half2_as_bits(lq_spqr_grid2(__byte_perm(q.x, 0x64646464u, 0x4140), s, z)),
                                lq_half2_as_bits(lq_spqr_grid2(__byte_perm(q.x, 0x64646464u, 0x4342), s, z)),
                                lq_half2_as_bits(lq_spqr_grid2(__byte_perm(q.y, 0x64646464u, 0x4140), s, z)),
                                lq_half2_as_bits(lq_spqr_grid2(__byte_perm(q.y, 0x64646464u, 0x4342), s, z)));
  reinterpret_cast<uint4*>(rows_buf)[row * sh.pieces + piece] = bits;
}

__device__ __forceinline__ void lq_spqr_decode(const uint2 ahead[LQ_SPQR_AHEAD], const uint8_t* codes, int64_t r, int rb, uint16_t* rows_buf, const __half2* sz_batch,
                                               const lq_spqr_shape& sh, uint32_t over, uint32_t& bad) {
  lq_spqr_walk w = sh.start();
#pragma unroll
  for (int k = 0; k < LQ_SPQR_AHEAD; k++) {
    if (w.row < rb) lq_spqr_decode_piece(ahead[k], w.row, w.piece, rows_buf, sz_batch, sh, over, bad);
    lq_spqr_in_order();
    sh.step(w);
  }
  // Rows longer than LQ_SPQR_AHEAD · T / rb pieces: the rest, loaded here.
  for (; w.row < rb; sh.step(w)) {
    const uint2 q = __ldg(reinterpret_cast<const uint2*>(codes + (r + w.row) * sh.n + 8 * w.piece));
    lq_spqr_decode_piece(q, w.row, w.piece, rows_buf, sz_batch, sh, over, bad);
  }
}

// One outlier entry e with its neighbours' columns (NO_COLUMN past its row's ends): the first of a
// run of equal columns adds the whole run. `offsets` (shared memory) holds row_offsets of the
// batch's rows 0 … rb (validated: never decreasing, within 0 … nnz).
struct lq_spqr_entry {
  int32_t e;
  int row;
  uint32_t col, prev, next, value;
};

// The batch row of entry e (offsets[0] ≤ e < offsets[rb]): the last row starting at or before it.
__device__ __forceinline__ int lq_spqr_row_of(int32_t e, const int32_t* offsets, int rb) {
  int row = 0;
#pragma unroll
  for (int k = 1; k < LQ_SPQR_MAX_BATCH; k++) row = k < rb && e >= offsets[k] ? k : row;
  return row;
}

__device__ __forceinline__ void lq_spqr_load_entry(lq_spqr_entry& en, int32_t e, const int32_t* offsets, int rb, const uint16_t* cols, const uint16_t* values) {
  en = {e, 0, LQ_SPQR_NO_COLUMN, LQ_SPQR_NO_COLUMN, LQ_SPQR_NO_COLUMN, 0u};
  if (e >= offsets[rb]) return;
  en.row = lq_spqr_row_of(e, offsets, rb);
  en.col = __ldg(cols + e);
  en.prev = e > offsets[en.row] ? __ldg(cols + e - 1) : LQ_SPQR_NO_COLUMN;
  en.next = e + 1 < offsets[en.row + 1] ? __ldg(cols + e + 1) : LQ_SPQR_NO_COLUMN;
  en.value = __ldg(values + e);
}

// W = h(dense + v₁ + v₂ + …) at the run's column, adds in entry order, each rounded to float32.
__device__ __forceinline__ void lq_spqr_apply_entry(const lq_spqr_entry& en, const int32_t* offsets, uint16_t* rows_buf, int n, const uint16_t* cols, const uint16_t* values,
                                                    const int32_t* row_offsets, int64_t r, bool ptcsr, uint32_t& bad) {
  if (en.col == LQ_SPQR_NO_COLUMN || en.col == en.prev) return;
  if (en.col >= (uint32_t)n) {
    bad |= 2u;
    return;
  }
  uint16_t* at = rows_buf + en.row * n + en.col;
  float x = __fadd_rn(lq_spqr_f16(*at), lq_spqr_f16((uint16_t)en.value));
  // A repeated column (never in files SpQR writes): the rest of the run.
  for (int32_t e = en.e + 1; en.next == en.col && e < offsets[en.row + 1] && __ldg(cols + e) == en.col; e++) x = __fadd_rn(x, lq_spqr_f16(__ldg(values + e)));
  // __fadd_rn: x + 0 is not an identity (−0 + 0 = +0) and must not be folded away.
  if (ptcsr && en.col == 0 && lq_spqr_ptcsr_padded(row_offsets, r + en.row)) x = __fadd_rn(x, 0.0f);
  *at = __half_as_ushort(__float2half_rn(x));
}

__device__ __forceinline__ void lq_spqr_outliers(const lq_spqr_entry& first, const int32_t* offsets, int rb, uint16_t* rows_buf, int n, const uint16_t* cols,
                                                 const uint16_t* values, const int32_t* row_offsets, int64_t r, bool ptcsr, uint32_t& bad) {
  lq_spqr_apply_entry(first, offsets, rows_buf, n, cols, values, row_offsets, r, ptcsr, bad);
  for (int32_t e = first.e + LQ_SPQR_THREADS; e < offsets[rb]; e += LQ_SPQR_THREADS) {
    lq_spqr_entry en;
    lq_spqr_load_entry(en, e, offsets, rb, cols, values);
    lq_spqr_apply_entry(en, offsets, rows_buf, n, cols, values, row_offsets, r, ptcsr, bad);
  }
  // The PTCSR +0 on a column 0 without outliers (sorted rows: then none is at column 0), thread k for row k.
  const int k = (int)threadIdx.x;
  if (ptcsr && k < rb) {
    const int32_t lo = offsets[k], hi = offsets[k + 1];
    if ((lo == hi || __ldg(cols + lo) != 0) && lq_spqr_ptcsr_padded(row_offsets, r + k)) {
      uint16_t* at = rows_buf + k * n;
      *at = __half_as_ushort(__float2half_rn(__fadd_rn(lq_spqr_f16(*at), 0.0f)));
    }
  }
}

// Original column order out, pieces of 8: one 16-byte inv_perm load, 8 gathers from the shared
// row, one 16-byte fp16 store or two float32 ones, two 16-byte reference loads for verify. The
// loads of U items go first, so their latencies overlap. OUT: 0 none, 1 fp16, 2 float32.
template <int OUT, bool VERIFY>
__device__ __forceinline__ void lq_spqr_emit(const uint16_t* rows_buf, int64_t r, int rb, const lq_spqr_shape& sh, const uint16_t* inv_perm, void* out, const float* reference,
                                             double& max_abs, double& sq_err, double& sq_ref) {
  constexpr int U = 2;
  const int n = sh.n;
  // The batch's first row in the output and the reference; item offsets from there fit 32 bits.
  uint16_t* out16 = OUT == 1 ? static_cast<uint16_t*>(out) + r * n : nullptr;
  float* out32 = OUT == 2 ? static_cast<float*>(out) + r * n : nullptr;
  const float* ref_rows = VERIFY ? reference + r * n : nullptr;
  lq_spqr_walk w = sh.start();
  while (w.row < rb) {
    lq_spqr_walk at[U];
    uint4 index[U];
    float4 ref[U][2];
#pragma unroll
    for (int u = 0; u < U; u++) {
      at[u] = w;
      index[u] = make_uint4(0u, 0u, 0u, 0u);
      ref[u][0] = ref[u][1] = make_float4(0.f, 0.f, 0.f, 0.f);
      if (w.row < rb) {
        if (inv_perm != nullptr) index[u] = __ldg(reinterpret_cast<const uint4*>(inv_perm + 8 * w.piece));
        if (VERIFY) {
          const float4* from = reinterpret_cast<const float4*>(ref_rows + (w.row * n + 8 * w.piece));
          ref[u][0] = __ldg(from), ref[u][1] = __ldg(from + 1);
        }
      }
      sh.step(w);
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
      if (at[u].row >= rb) break;
      lq_spqr_in_order();
      const uint16_t* src = rows_buf + at[u].row * n;
      uint4 h;
      if (inv_perm != nullptr) {
        // Two stored indices per word: the low one masked, the high one moved down by a byte permute.
        const auto pair = [&](uint32_t j) { return (uint32_t)src[j & 0xFFFFu] | ((uint32_t)src[__byte_perm(j, 0u, 0x4432)] << 16); };
        h = make_uint4(pair(index[u].x), pair(index[u].y), pair(index[u].z), pair(index[u].w));
      } else {
        h = *reinterpret_cast<const uint4*>(src + 8 * at[u].piece);
      }
      const int o = at[u].row * n + 8 * at[u].piece;
      if (OUT == 1) *reinterpret_cast<uint4*>(out16 + o) = h;
      if (OUT == 2 || VERIFY) {
        const float2 a = __half22float2(lq_bits_as_half2(h.x)), b = __half22float2(lq_bits_as_half2(h.y));
        const float2 c = __half22float2(lq_bits_as_half2(h.z)), d = __half22float2(lq_bits_as_half2(h.w));
        if (OUT == 2) {
          float4* to = reinterpret_cast<float4*>(out32 + o);
          to[0] = make_float4(a.x, a.y, b.x, b.y);
          to[1] = make_float4(c.x, c.y, d.x, d.y);
        }
        if (VERIFY) {
          const float f[8] = {a.x, a.y, b.x, b.y, c.x, c.y, d.x, d.y};
          const float g[8] = {ref[u][0].x, ref[u][0].y, ref[u][0].z, ref[u][0].w, ref[u][1].x, ref[u][1].y, ref[u][1].z, ref[u][1].w};
#pragma unroll
          for (int e = 0; e < 8; e++) lq_verify_accumulate(f[e], g[e], max_abs, sq_err, sq_ref);
        }
      }
    }
  }
}
