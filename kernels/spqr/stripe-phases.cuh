// The phases of the stripe kernel (spqr.cu): what one thread does between two block barriers.
// A batch is R consecutive rows of the block's stripe (the last batch of a stripe may hold fewer,
// rb: its other rows are decoded from zero codes and never written out). An item is a piece, 8
// consecutive columns (stored order when decoding, original order when writing), of all R rows;
// thread t takes pieces t, t + T, t + 2T, … (P = n / 8 pieces per row).
//
// The batch's rows sit in shared memory column-interleaved: the R values of one stored column
// (rows 0 … R − 1) are adjacent, so the emit's gather of one column fetches all R rows in one
// 2R-byte load (R = 4: one 8-byte load for 4 output weights where row-major rows need four 2-byte
// loads, a quarter of the shared-memory instructions and wavefronts). lq_spqr_slot has the layout.
#pragma once
#include "spqr.cuh"
#include "../common/verify.cuh"

#define LQ_SPQR_THREADS 256
// Resident blocks per multiprocessor the kernels are compiled for: 3 leaves each thread 80 registers,
// which every stripe kernel's phases fit in without spilling (at 4, i.e. 64 registers, they spilled
// 44 … 92 bytes per thread to local memory, reloaded in the batch loop: more instructions per byte).
#define LQ_SPQR_BLOCKS_PER_SM 3
// Rows of a stripe at most (launch-shape.ts chooses it; the kernel checks); rows of a batch: R, 1, 2 or 4.
#define LQ_SPQR_MAX_BATCH 4
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

struct lq_spqr_shape {
  int n, pieces, groups, group_pieces, group_shift;  // group_shift: log2(group_pieces), or −1
  __device__ __forceinline__ int group_of(int piece) const { return group_shift >= 0 ? piece >> group_shift : piece / group_pieces; }
};

// Byte offset in the batch's rows of (row 0, stored column j); row i is 2i bytes further. Piece
// p = j / 8 holds 16R bytes, R 16-byte units of 8 / R columns × R rows each, column-major; unit u
// of piece p lies at unit u ^ lq_spqr_swizzle<R>(p), a swizzle inside the piece (so within
// 0 … 2Rn). Why: a warp's 16-byte stores of decoded units. The decoders give lanes pieces or
// groups 16R or 32R bytes apart (lq_spqr_decode: piece t; pipeline.cuh: group t), so the lanes'
// unit u meet in few of a bank row's 8 sixteen-byte slots. With the previous swizzle (u ^ (p / 2
// mod R)) ncu counted 15.6 wavefronts per store at R = 2 and 7.8 at R = 4, where 4 are the least
// (pipelined kernels, 4096 × 11008 and 11008 × 4096, issue 9). The swizzle
// takes lane bits the piece's own position does not (bit 3 of p at R = 2: a 128-byte bank row
// holds 4 pieces; bits 2–3 at R = 4: it holds 2), so that with the pipelined decoder's order of
// a group's pieces (lq_spqr_pipe_piece_order) the 32 lanes' units fill all 8 slots, 4 lanes each:
// conflict-free. The gathers of an identity or strided permutation meet in 8 bank positions of a
// warp's 32 (4-way); a random permutation stays random.
template <int R>
__device__ __forceinline__ uint32_t lq_spqr_swizzle(uint32_t piece) {
  if constexpr (R == 2) return (piece >> 3) & 1u;
  else if constexpr (R == 4) return (piece >> 2) & 3u;
  else return 0u;
}
template <int R>
__device__ __forceinline__ uint32_t lq_spqr_slot(uint32_t j) {
  return (j * (2u * R)) ^ (lq_spqr_swizzle<R>(j >> 3) << 4);
}

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

// The codes of the thread's first 8 / R items of the batch starting at row `r` (8 registers each
// way: R rows × 8 bytes per item); rows from rb on read as zero codes.
template <int R>
__device__ __forceinline__ void lq_spqr_load_ahead(uint2 ahead[8 / R][R], const uint8_t* codes, int64_t r, int rb, const lq_spqr_shape& sh) {
#pragma unroll
  for (int k = 0; k < 8 / R; k++) {
    const int piece = (int)threadIdx.x + k * LQ_SPQR_THREADS;
#pragma unroll
    for (int i = 0; i < R; i++) {
      ahead[k][i] = i < rb && piece < sh.pieces ? __ldg(reinterpret_cast<const uint2*>(codes + (r + i) * sh.n + 8 * piece)) : make_uint2(0u, 0u);
    }
  }
}

// Two dense weights h(s·h(q − z)) of one row (code bytes b, b + 1 of `codes`, 0 … 3) as fp16x2;
// __byte_perm picks the code bytes and 0x64 (byte 4 of the second word) into 1024 + code.
__device__ __forceinline__ uint32_t lq_spqr_pair(uint32_t codes, uint32_t selector, __half2 s, __half2 z) {
  return lq_half2_as_bits(lq_spqr_grid2(__byte_perm(codes, 0x64646464u, selector), s, z));
}

// The 8 × R dense weights of one piece into the batch's rows, row i with statistics (s[i], z[i]):
// R 16-byte stores, unit by unit (each needs one word of every row). `over` has the bits no code of
// the format's width sets.
template <int R>
__device__ __forceinline__ void lq_spqr_decode_piece_sz(const uint2 q[R], int piece, unsigned char* rows_buf, const __half2 s[R], const __half2 z[R], uint32_t over,
                                                        uint32_t& bad) {
#pragma unroll
  for (int i = 0; i < R; i++) bad |= ((q[i].x | q[i].y) & over) != 0u ? 1u : 0u;
  unsigned char* chunk = rows_buf + piece * 16 * R;
#pragma unroll
  for (int u = 0; u < R; u++) {
    // Word m of row i holds columns 2m, 2m + 1 (m = 0 … 3): code word m / 2, bytes 2(m % 2), +1.
    const auto word = [&](int i, int m) { return lq_spqr_pair(m < 2 ? q[i].x : q[i].y, (m & 1) ? 0x4342u : 0x4140u, s[i], z[i]); };
    uint4 v;
    if constexpr (R == 1) {
      v = make_uint4(word(0, 0), word(0, 1), word(0, 2), word(0, 3));
    } else if constexpr (R == 2) {
      // Unit u: columns 4u … 4u + 3, each (row 0, row 1).
      const uint32_t a0 = word(0, 2 * u), a1 = word(1, 2 * u), b0 = word(0, 2 * u + 1), b1 = word(1, 2 * u + 1);
      v = make_uint4(__byte_perm(a0, a1, 0x5410), __byte_perm(a0, a1, 0x7632), __byte_perm(b0, b1, 0x5410), __byte_perm(b0, b1, 0x7632));
    } else {
      // Unit u: columns 2u, 2u + 1, each (rows 0, 1), (rows 2, 3).
      const uint32_t w0 = word(0, u), w1 = word(1, u), w2 = word(2, u), w3 = word(3, u);
      v = make_uint4(__byte_perm(w0, w1, 0x5410), __byte_perm(w2, w3, 0x5410), __byte_perm(w0, w1, 0x7632), __byte_perm(w2, w3, 0x7632));
    }
    *reinterpret_cast<uint4*>(chunk + ((u ^ lq_spqr_swizzle<R>((uint32_t)piece)) << 4)) = v;
  }
}

// The same with the statistics of the piece's group from the stripe's table (rows past rb, zero
// codes never written out, take row rb − 1's: inside the table).
template <int R>
__device__ __forceinline__ void lq_spqr_decode_piece(const uint2 q[R], int piece, unsigned char* rows_buf, const __half2* sz_batch, int rb, const lq_spqr_shape& sh,
                                                     uint32_t over, uint32_t& bad) {
  __half2 s[R], z[R];
  const int g = sh.group_of(piece);
#pragma unroll
  for (int i = 0; i < R; i++) {
    const __half2 sz = sz_batch[min(i, rb - 1) * sh.groups + g];
    s[i] = __low2half2(sz), z[i] = __high2half2(sz);
  }
  lq_spqr_decode_piece_sz<R>(q, piece, rows_buf, s, z, over, bad);
}

template <int R>
__device__ __forceinline__ void lq_spqr_decode(const uint2 ahead[8 / R][R], const uint8_t* codes, int64_t r, int rb, unsigned char* rows_buf, const __half2* sz_batch,
                                               const lq_spqr_shape& sh, uint32_t over, uint32_t& bad) {
#pragma unroll
  for (int k = 0; k < 8 / R; k++) {
    const int piece = (int)threadIdx.x + k * LQ_SPQR_THREADS;
    if (piece < sh.pieces) lq_spqr_decode_piece<R>(ahead[k], piece, rows_buf, sz_batch, rb, sh, over, bad);
    lq_spqr_in_order();
  }
  // Rows longer than 8 / R · T pieces: the rest, loaded here.
  for (int piece = (int)threadIdx.x + (8 / R) * LQ_SPQR_THREADS; piece < sh.pieces; piece += LQ_SPQR_THREADS) {
    uint2 q[R];
#pragma unroll
    for (int i = 0; i < R; i++) q[i] = i < rb ? __ldg(reinterpret_cast<const uint2*>(codes + (r + i) * sh.n + 8 * piece)) : make_uint2(0u, 0u);
    lq_spqr_decode_piece<R>(q, piece, rows_buf, sz_batch, rb, sh, over, bad);
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
template <int R>
__device__ __forceinline__ void lq_spqr_apply_entry(const lq_spqr_entry& en, const int32_t* offsets, unsigned char* rows_buf, int n, const uint16_t* cols, const uint16_t* values,
                                                    const int32_t* row_offsets, int64_t r, bool ptcsr, uint32_t& bad) {
  if (en.col == LQ_SPQR_NO_COLUMN || en.col == en.prev) return;
  if (en.col >= (uint32_t)n) {
    bad |= 2u;
    return;
  }
  uint16_t* at = reinterpret_cast<uint16_t*>(rows_buf + lq_spqr_slot<R>(en.col)) + en.row;
  float x = __fadd_rn(lq_spqr_f16(*at), lq_spqr_f16((uint16_t)en.value));
  // A repeated column (never in files SpQR writes): the rest of the run.
  for (int32_t e = en.e + 1; en.next == en.col && e < offsets[en.row + 1] && __ldg(cols + e) == en.col; e++) x = __fadd_rn(x, lq_spqr_f16(__ldg(values + e)));
  // __fadd_rn: x + 0 is not an identity (−0 + 0 = +0) and must not be folded away.
  if (ptcsr && en.col == 0 && lq_spqr_ptcsr_padded(row_offsets, r + en.row)) x = __fadd_rn(x, 0.0f);
  *at = __half_as_ushort(__float2half_rn(x));
}

template <int R, int NT = LQ_SPQR_THREADS>
__device__ __forceinline__ void lq_spqr_outliers(const lq_spqr_entry& first, const int32_t* offsets, int rb, unsigned char* rows_buf, int n, const uint16_t* cols,
                                                 const uint16_t* values, const int32_t* row_offsets, int64_t r, bool ptcsr, uint32_t& bad) {
  lq_spqr_apply_entry<R>(first, offsets, rows_buf, n, cols, values, row_offsets, r, ptcsr, bad);
  for (int32_t e = first.e + NT; e < offsets[rb]; e += NT) {
    lq_spqr_entry en;
    lq_spqr_load_entry(en, e, offsets, rb, cols, values);
    lq_spqr_apply_entry<R>(en, offsets, rows_buf, n, cols, values, row_offsets, r, ptcsr, bad);
  }
  // The PTCSR +0 on a column 0 without outliers (sorted rows: then none is at column 0), thread k for row k.
  const int k = (int)threadIdx.x;
  if (ptcsr && k < rb) {
    const int32_t lo = offsets[k], hi = offsets[k + 1];
    if ((lo == hi || __ldg(cols + lo) != 0) && lq_spqr_ptcsr_padded(row_offsets, r + k)) {
      uint16_t* at = reinterpret_cast<uint16_t*>(rows_buf + lq_spqr_slot<R>(0u)) + k;
      *at = __half_as_ushort(__float2half_rn(__fadd_rn(lq_spqr_f16(*at), 0.0f)));
    }
  }
}
