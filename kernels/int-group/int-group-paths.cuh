// The three ways int-group.cu walks a layer; each computes lq_int_group_weight's bits.
//
//   spans      no g_idx, K and the group size multiples of P: warps stream spans of a row
//   act-order  g_idx, K a multiple of P: a block per row, the row's scales and zeros in shared memory
//   elements   anything else (odd K or group size, more act-order groups than shared memory holds)
//
// P, the weights of one piece (one lane's share of a load and a store instruction), follows the
// output type only: 8 with fp16 output (an 8-byte code load, one 16-byte store), 4 otherwise (a
// 4-byte code load, one 16-byte float32 store or reference load). Lane L's piece u of a span
// starts at column (u·32 + L)·P, so every load and store instruction of a warp covers one
// contiguous stretch of the row (256 codes or 128, 512 bytes of weights).
#pragma once
#include "int-group.cuh"
#include "../common/verify.cuh"

struct lq_int_group_args {
  const uint8_t* __restrict__ codes;
  const float* __restrict__ scales;
  const uint16_t* __restrict__ zeros;
  const int32_t* __restrict__ g_idx;
  void* __restrict__ out;
  const float* __restrict__ reference;
  int64_t n_rows, n_groups;
  // Columns and group size (and k / G by multiplication).
  int32_t K, G;
  lq_divider group_of;
  uint32_t max_code;
  int32_t rounding;
  // +0, or −0 to keep negative zeros (lq_int_group_product).
  float zero_bias;
  bool keep, f16;
};

// One 16-byte store (16-byte aligned: the vector paths' pieces start at multiples of P). Through
// st.global.v4 explicitly: a plain uint4 assignment was seen split into four 4-byte stores.
__device__ __forceinline__ void lq_int_group_store16(void* to, uint4 value) { __stwb(static_cast<uint4*>(to), value); }

// One thread's running verify statistics (verify.cuh), and the OR of the code words it read
// (the vector paths check their range once, at the end: lq_int_group_code_excess).
struct lq_verify_sums {
  double max_abs = 0.0, sq_err = 0.0, sq_ref = 0.0;
  uint32_t code_bits = 0;
};

// Spans: a span is U pieces per lane, 32·U·P consecutive columns of one row; the spans of all
// rows are dealt round-robin to the grid's warps, so every warp gets the same number of spans,
// give or take one (the grid: launch.ts, every block resident at once). A warp issues all
// its loads for a span (codes, one scale and one zero per piece: a piece never straddles a
// group, since the group size is a multiple of P; reference) before it computes, so each lane
// has U·P code bytes and, for verify, 4·U·P reference bytes in flight, and needs no barrier.
// The caller has checked n_groups ≥ ⌈K / G⌉, so every column's group is in range, and that
// max_code is 2^bits − 1.
template <int P, int U, int ROUNDING, bool VERIFY>
__device__ __forceinline__ void lq_int_group_spans(const lq_int_group_args& a, lq_verify_sums& v, uint32_t& bad) {
  static_assert(P == 4 || P == 8, "pieces of one 16-byte store");
  constexpr int SPAN = 32 * U * P, WORDS = P / 4, R = VERIFY ? P : 1;
  const int32_t lane = (int32_t)(threadIdx.x % 32);
  const uint32_t warps_per_block = blockDim.x / 32;
  const uint64_t warps = (uint64_t)gridDim.x * warps_per_block;
  const uint64_t first = (uint64_t)blockIdx.x * warps_per_block + threadIdx.x / 32;
  // The span (row n, span s of the row) advances by the warp count: per_row is at least 1, and
  // a division once per thread keeps the loop free of 64-bit divisions.
  const uint32_t per_row = (uint32_t)((a.K + SPAN - 1) / SPAN);
  const int64_t row_step = (int64_t)(warps / per_row);
  const uint32_t span_step = (uint32_t)(warps % per_row);
  int64_t n = (int64_t)(first / per_row);
  uint32_t span = (uint32_t)(first % per_row);
  const bool write = a.out != nullptr;
  while (n < a.n_rows) {
    const int64_t row_at = n * a.K;
    const uint8_t* __restrict__ codes = a.codes + row_at;
    const float* __restrict__ reference = VERIFY ? a.reference + row_at : nullptr;
    const float* __restrict__ scales = a.scales + n;
    const uint16_t* __restrict__ zeros = a.zeros + n;
    const int32_t c0 = (int32_t)span * SPAN;
    uint32_t q[U][WORDS];
    float s[U], z[U], r[U][R];
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int32_t k0 = c0 + (u * 32 + lane) * P;
      // Every address is clamped into the row although only pieces inside it are used: nvcc
      // speculates guarded loads (compute-sanitizer caught a 4-byte read just past the codes of
      // a 32×64 layer, from a thread whose piece lay wholly beyond the row). A piece past the
      // row's end (the last span of a row K is not a multiple of) reads the row's last piece.
      const int32_t k = min(k0, a.K - P);
      const int64_t g = (int64_t)lq_divide((uint32_t)k, a.group_of) * a.n_rows;
      if constexpr (P == 8) {
        const uint2 word = __ldg(reinterpret_cast<const uint2*>(codes + k));
        q[u][0] = word.x;
        q[u][1] = word.y;
      } else {
        q[u][0] = __ldg(reinterpret_cast<const uint32_t*>(codes + k));
      }
      s[u] = __ldg(scales + g);
      z[u] = lq_int_group_biased(__ldg(zeros + g));
      if constexpr (VERIFY) {
#pragma unroll
        for (int i = 0; i < WORDS; i++) {
          const float4 x = __ldg(reinterpret_cast<const float4*>(reference + k) + i);
          r[u][4 * i] = x.x, r[u][4 * i + 1] = x.y, r[u][4 * i + 2] = x.z, r[u][4 * i + 3] = x.w;
        }
      }
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int32_t k = c0 + (u * 32 + lane) * P;
      if (k >= a.K) break;  // pieces lie in order along the row
      float w[P];
#pragma unroll
      for (int i = 0; i < WORDS; i++) {
        v.code_bits |= q[u][i];
#pragma unroll
        for (int j = 0; j < 4; j++) w[4 * i + j] = lq_int_group_product(lq_int_group_biased_byte(q[u][i], j), s[u], z[u], a.zero_bias);
      }
      uint32_t h[P / 2];
#pragma unroll
      for (int j = 0; j < P / 2; j++) h[j] = lq_int_group_round_pair<ROUNDING>(w[2 * j], w[2 * j + 1]);
      if (write) {
        if constexpr (P == 8) lq_int_group_store16(static_cast<uint16_t*>(a.out) + row_at + k, make_uint4(h[0], h[1], h[2], h[3]));
        else lq_int_group_store16(static_cast<float*>(a.out) + row_at + k, make_uint4(__float_as_uint(w[0]), __float_as_uint(w[1]), __float_as_uint(w[2]), __float_as_uint(w[3])));
      }
      if constexpr (VERIFY) {
#pragma unroll
        for (int j = 0; j < P; j++) lq_verify_accumulate(w[j], r[u][j], v.max_abs, v.sq_err, v.sq_ref);
      }
    }
    span += span_step;
    n += row_step;
    if (span >= per_row) {
      span -= per_row;
      n++;
    }
  }
}

// Act-order: block b takes rows b, b + gridDim.x, …; it first stages the row's n_groups (scale,
// biased zero) pairs in shared memory (`staged`, n_groups float2: the caller has checked they
// fit), so that each weight's group lookup is one 8-byte shared load instead of two scattered
// global loads, then walks the row in pieces as the spans do, reading g_idx in 16-byte loads
// (4·K bytes that every row shares, from L1/L2). A group outside 0 … n_groups − 1 (host-checked
// already) is reported and gives 0. The caller has checked that max_code is 2^bits − 1.
template <int P, int U, int ROUNDING>
__device__ __forceinline__ void lq_int_group_act_order(const lq_int_group_args& a, float2* staged, lq_verify_sums& v, uint32_t& bad) {
  constexpr int WORDS = P / 4;
  const int32_t T = (int32_t)blockDim.x, t = (int32_t)threadIdx.x, groups = (int32_t)a.n_groups;
  const bool verify = a.reference != nullptr, write = a.out != nullptr;
  for (int64_t n = blockIdx.x; n < a.n_rows; n += gridDim.x) {
    // The previous row's lookups are done before its pairs are overwritten.
    __syncthreads();
    for (int32_t g = t; g < groups; g += T) staged[g] = make_float2(__ldg(a.scales + g * a.n_rows + n), lq_int_group_biased(__ldg(a.zeros + g * a.n_rows + n)));
    __syncthreads();
    const int64_t row_at = n * a.K;
    for (int32_t c0 = 0; c0 < a.K; c0 += U * T * P) {
      uint32_t q[U][WORDS];
      int32_t gi[U][P];
      float r[U][P];
      bool full[U];
#pragma unroll
      for (int u = 0; u < U; u++) {
        const int32_t k0 = c0 + (u * T + t) * P;
        full[u] = k0 < a.K;
        const int32_t k = min(k0, a.K - P);  // clamped into the row, as in the spans
        const int64_t at = row_at + k;
#pragma unroll
        for (int j = 0; j < P; j++) gi[u][j] = 0, r[u][j] = 0.0f;
#pragma unroll
        for (int i = 0; i < WORDS; i++) q[u][i] = 0;
        if (full[u]) {
#pragma unroll
          for (int i = 0; i < WORDS; i++) {
            q[u][i] = __ldg(reinterpret_cast<const uint32_t*>(a.codes + at) + i);
            const int4 g4 = __ldg(reinterpret_cast<const int4*>(a.g_idx + k) + i);
            gi[u][4 * i] = g4.x, gi[u][4 * i + 1] = g4.y, gi[u][4 * i + 2] = g4.z, gi[u][4 * i + 3] = g4.w;
            if (verify) {
              const float4 x = __ldg(reinterpret_cast<const float4*>(a.reference + at) + i);
              r[u][4 * i] = x.x, r[u][4 * i + 1] = x.y, r[u][4 * i + 2] = x.z, r[u][4 * i + 3] = x.w;
            }
          }
        }
      }
#pragma unroll
      for (int u = 0; u < U; u++) {
        if (!full[u]) continue;
        const int64_t at = row_at + c0 + (u * T + t) * P;
        float w[P];
#pragma unroll
        for (int i = 0; i < WORDS; i++) {
          v.code_bits |= q[u][i];
#pragma unroll
          for (int j = 0; j < 4; j++) {
            const int32_t g = gi[u][4 * i + j];
            const bool ok = (uint32_t)g < (uint32_t)groups;
            if (!ok) bad |= 2u;
            const float2 sz = staged[ok ? g : 0];
            w[4 * i + j] = ok ? lq_int_group_product(lq_int_group_biased_byte(q[u][i], j), sz.x, sz.y, a.zero_bias) : 0.0f;
          }
        }
        uint32_t h[P / 2];
#pragma unroll
        for (int j = 0; j < P / 2; j++) h[j] = lq_int_group_round_pair<ROUNDING>(w[2 * j], w[2 * j + 1]);
        if (write) {
          if constexpr (P == 8) lq_int_group_store16(static_cast<uint16_t*>(a.out) + at, make_uint4(h[0], h[1], h[2], h[3]));
          else lq_int_group_store16(static_cast<float*>(a.out) + at, make_uint4(__float_as_uint(w[0]), __float_as_uint(w[1]), __float_as_uint(w[2]), __float_as_uint(w[3])));
        }
        if (verify) {
#pragma unroll
          for (int j = 0; j < P; j++) lq_verify_accumulate(w[j], r[u][j], v.max_abs, v.sq_err, v.sq_ref);
        }
      }
    }
  }
}

// Elements: block b takes rows b, b + gridDim.x, …, its threads consecutive columns, one weight
// each (coalesced scalar loads and stores): any K, group size and g_idx.
__device__ __forceinline__ void lq_int_group_elements(const lq_int_group_args& a, lq_verify_sums& v, uint32_t& bad) {
  for (int64_t n = blockIdx.x; n < a.n_rows; n += gridDim.x) {
    const int64_t row_at = n * a.K;
    for (int32_t k = (int32_t)threadIdx.x; k < a.K; k += (int32_t)blockDim.x) {
      const int64_t g = a.g_idx != nullptr ? (int64_t)__ldg(a.g_idx + k) : (int64_t)(k / a.G);
      const bool ok = g >= 0 && g < a.n_groups;
      if (!ok) bad |= 2u;
      // The group is clamped too (0 when out of range): the loads below may be speculated.
      const int64_t at = (ok ? g : 0) * a.n_rows + n;
      const float w = ok ? lq_int_group_weight(__ldg(a.codes + row_at + k), __ldg(a.scales + at), __ldg(a.zeros + at), a.max_code, a.rounding, a.keep, &bad) : 0.0f;
      if (a.out != nullptr) lq_store(a.out, row_at + k, w, a.f16);
      if (a.reference != nullptr) lq_verify_accumulate(w, __ldg(a.reference + row_at + k), v.max_abs, v.sq_err, v.sq_ref);
    }
  }
}
