// Lane decoders (contract in ggml-lanes.cuh) of the 256-weight super-blocks Q2_K … Q6_K, TQ1_0 and
// TQ2_0 (layouts and per-weight formulas in ggml-k.cuh): a chunk is one super-block. Each lane
// takes one 32-bit word of the block's codes and the two quads whose bits it holds, decodes the
// scales of those two quads once, and makes its 8 weights from the word with a mask, a PRMT, an
// FADD and one or two FP32 operations each.
#pragma once
#include <stdint.h>
#include "ggml-k.cuh"
#include "ggml-lanes.cuh"

// Q4_K and Q5_K: lane t = 8c + r takes qs[4t..4t+3], whose low nibbles are weights 64c+4r..+3 of
// sub-block 2c (quad a = 16c + r) and whose high nibbles are weights 64c+32+4r..+3 of sub-block
// 2c+1 (quad b = quad a + 8). The blocks are 144 and 176 bytes, multiples of 16: d, dmin and the
// 12 scale bytes are one aligned 16-byte load, the same for all lanes.
struct lq_ggml_k4_lanes {
  static constexpr int quad_b = 8;
  static constexpr bool raw_nan = false, has_half = false;
  static __device__ __forceinline__ int quad_a(unsigned lane) { return (int)(16 * (lane >> 3) + (lane & 7)); }
};

// ggml's get_scale_min_k4 for sub-blocks 2c and 2c+1 (lq_ggml_scale_min_k4), four at a time: the
// scales and mins of sub-blocks 0..3 are the low six bits of bytes 0..3 and 4..7; of 4..7, the
// nibbles of bytes 8..11 below the top two bits of bytes 0..3 (scales) and 4..7 (mins). Returns
// d·sc and dmin·m of both sub-blocks.
__device__ __forceinline__ void lq_ggml_k4_scales(const uint4& head, unsigned lane, float& dl_a, float& ml_a, float& dl_b, float& ml_b) {
  const int c = lane >> 3;
  const uint32_t sc = c < 2 ? head.y & 0x3F3F3F3Fu : (head.w & 0x0F0F0F0Fu) | ((head.y >> 2) & 0x30303030u);
  const uint32_t m = c < 2 ? head.z & 0x3F3F3F3Fu : ((head.w >> 4) & 0x0F0F0F0Fu) | ((head.z >> 2) & 0x30303030u);
  const uint32_t k = 2 * (c & 1);
  const float d = lq_ggml_scale_float(head.x), dmin = lq_ggml_scale_float(head.x >> 16);
  dl_a = __fmul_rn(d, lq_ggml_byte_float(sc, k, 0.0f));
  ml_a = __fmul_rn(dmin, lq_ggml_byte_float(m, k, 0.0f));
  dl_b = __fmul_rn(d, lq_ggml_byte_float(sc, k + 1, 0.0f));
  ml_b = __fmul_rn(dmin, lq_ggml_byte_float(m, k + 1, 0.0f));
}

// (dl·q) − ml with the codes a (quad a) and b (quad b): __fsub_rn(__fmul_rn(dl, q), ml) as
// lq_ggml_q4_K / q5_K / q2_K, where dl·q is exact, so one FMA.
__device__ __forceinline__ void lq_ggml_k_affine(uint32_t a, uint32_t b, float dl_a, float ml_a, float dl_b, float ml_b, float (&w)[8]) {
#pragma unroll
  for (int j = 0; j < 4; j++) {
    w[j] = __fmaf_rn(dl_a, lq_ggml_byte_float(a, j, 0.0f), -ml_a);
    w[4 + j] = __fmaf_rn(dl_b, lq_ggml_byte_float(b, j, 0.0f), -ml_b);
  }
}

struct lq_ggml_lanes_q4_K : lq_ggml_k4_lanes {
  struct raw_t {
    uint4 head;
    uint32_t qs;
  };
  template <bool kTail>
  static __device__ __forceinline__ raw_t load(const uint8_t* bytes, uint32_t chunk, unsigned lane, int64_t, uint64_t) {
    const uint8_t* b = bytes + (uint64_t)chunk * sizeof(lq_block_q4_K);
    return {__ldg(reinterpret_cast<const uint4*>(b)), lq_ggml_u32(b + 16 + 4 * lane)};
  }
  static __device__ __forceinline__ void decode(const raw_t& raw, unsigned lane, float (&w)[8]) {
    float dl_a, ml_a, dl_b, ml_b;
    lq_ggml_k4_scales(raw.head, lane, dl_a, ml_a, dl_b, ml_b);
    lq_ggml_k_affine(raw.qs & 0x0F0F0F0Fu, (raw.qs >> 4) & 0x0F0F0F0Fu, dl_a, ml_a, dl_b, ml_b, w);
  }
};

// Q5_K: the fifth bit of a weight of sub-block j is bit j of qh[l], l its index in the sub-block:
// qh[4r..4r+3] for both quads of lane t = 8c + r, bits 2c and 2c+1.
struct lq_ggml_lanes_q5_K : lq_ggml_k4_lanes {
  struct raw_t {
    uint4 head;
    uint32_t qh, qs;
  };
  template <bool kTail>
  static __device__ __forceinline__ raw_t load(const uint8_t* bytes, uint32_t chunk, unsigned lane, int64_t, uint64_t) {
    const uint8_t* b = bytes + (uint64_t)chunk * sizeof(lq_block_q5_K);
    return {__ldg(reinterpret_cast<const uint4*>(b)), lq_ggml_u32(b + 16 + 4 * (lane & 7)), lq_ggml_u32(b + 48 + 4 * lane)};
  }
  static __device__ __forceinline__ void decode(const raw_t& raw, unsigned lane, float (&w)[8]) {
    float dl_a, ml_a, dl_b, ml_b;
    lq_ggml_k4_scales(raw.head, lane, dl_a, ml_a, dl_b, ml_b);
    const int j = 2 * (lane >> 3);
    const uint32_t a = (raw.qs & 0x0F0F0F0Fu) | ((raw.qh >> j) & 0x01010101u) << 4;
    const uint32_t b = ((raw.qs >> 4) & 0x0F0F0F0Fu) | ((raw.qh >> (j + 1)) & 0x01010101u) << 4;
    lq_ggml_k_affine(a, b, dl_a, ml_a, dl_b, ml_b, w);
  }
};

// Q2_K, Q3_K and TQ2_0 keep four 2-bit codes a byte: weight 128h + 32s + l (l < 32) is bits 2s of
// byte 32h + l of their 64 code bytes. Lane t takes code word u = t % 16 (h = u / 8, l = 4·(u % 8)
// + 0..3) and the crumbs s = 2p and 2p + 1, p = t / 16: quad a = 32h + 16p + u % 8, quad b = quad
// a + 8 (crumb word = (word >> 4p) & 0x03030303, and >> 4p + 2).
struct lq_ggml_crumb_lanes {
  static constexpr int quad_b = 8;
  static constexpr bool raw_nan = false, has_half = false;
  static __device__ __forceinline__ int quad_a(unsigned lane) {
    const unsigned u = lane & 15;
    return (int)(32 * (u >> 3) + 16 * (lane >> 4) + (u & 7));
  }
};

// Q2_K: the scale byte of sub-block e / 16 = 8h + 2s + (u % 8) / 4: bytes v and v + 2 (v = u / 4 %
// 2) of scale word 2h + p. load shifts the scale word by 8v and the codes by 4p, so that decode's
// shifts are constants. 84-byte blocks: every field an aligned word.
struct lq_ggml_lanes_q2_K : lq_ggml_crumb_lanes {
  struct raw_t {
    uint32_t scales, qs, d;  // scales: quad a's byte in byte 0, quad b's in byte 2
  };
  template <bool kTail>
  static __device__ __forceinline__ raw_t load(const uint8_t* bytes, uint32_t chunk, unsigned lane, int64_t, uint64_t) {
    const uint8_t* b = bytes + (uint64_t)chunk * sizeof(lq_block_q2_K);
    const unsigned u = lane & 15, p = lane >> 4, v = (lane >> 2) & 1;
    return {lq_ggml_u32(b + 4 * (2 * (u >> 3) + p)) >> (8 * v), lq_ggml_u32(b + 16 + 4 * u) >> (4 * p), lq_ggml_u32(b + 80)};
  }
  // dl = d·(sc & 0xF), ml = dmin·(sc >> 4), as lq_ggml_q2_K.
  static __device__ __forceinline__ void decode(const raw_t& raw, unsigned, float (&w)[8]) {
    const float d = lq_ggml_scale_float(raw.d), dmin = lq_ggml_scale_float(raw.d >> 16);
    const float dl_a = __fmul_rn(d, lq_ggml_int_float(raw.scales & 0xF, 0.0f)), ml_a = __fmul_rn(dmin, lq_ggml_int_float((raw.scales >> 4) & 0xF, 0.0f));
    const float dl_b = __fmul_rn(d, lq_ggml_int_float((raw.scales >> 16) & 0xF, 0.0f)), ml_b = __fmul_rn(dmin, lq_ggml_int_float((raw.scales >> 20) & 0xF, 0.0f));
    lq_ggml_k_affine(raw.qs & 0x03030303u, (raw.qs >> 2) & 0x03030303u, dl_a, ml_a, dl_b, ml_b, w);
  }
};

// Q3_K: quad a is in 32-weight group j = 4·(u / 8) + 2p (quad b in j + 1), whose high bits are bit
// j of hmask[4·(u % 8)..+3]; its 16-weight sub-block is i = 2j + v (v = u / 4 % 2), quad b's i + 2.
// Sub-block i's six-bit scale: the low nibble of scales[i % 8] (the high nibble for i ≥ 8), under
// bits 2·(i / 4) of scales[8 + i % 4]; for these i that is scales[4p + v] and [4p + v + 2], nibble
// u / 8, under scales[8 + v] and [10 + v], bits 2·(2·(u / 8) + p). load does these lane-dependent
// shifts, so that decode's are constants (fewer registers live across the loop). 110-byte blocks:
// 2-aligned.
struct lq_ggml_lanes_q3_K : lq_ggml_crumb_lanes {
  struct raw_t {
    uint32_t hmask, qs, scales, d;  // hmask >> j, qs >> 4p, the two six-bit scales (a | b << 8)
  };
  template <bool kTail>
  static __device__ __forceinline__ raw_t load(const uint8_t* bytes, uint32_t chunk, unsigned lane, int64_t, uint64_t) {
    const uint8_t* b = bytes + (uint64_t)chunk * sizeof(lq_block_q3_K);
    const unsigned u = lane & 15, p = lane >> 4, v = (lane >> 2) & 1, g = u >> 3;
    const uint8_t* s = b + 96;
    const uint32_t low = (lq_ggml_u8(s + 4 * p + v) | lq_ggml_u8(s + 4 * p + v + 2) << 8) >> (4 * g) & 0x0F0Fu;
    const uint32_t high = (lq_ggml_u8(s + 8 + v) | lq_ggml_u8(s + 10 + v) << 8) >> (2 * (2 * g + p)) & 0x0303u;
    return {lq_ggml_u32_at2(b + 4 * (u & 7)) >> (4 * g + 2 * p), lq_ggml_u32_at2(b + 32 + 4 * u) >> (4 * p), low | high << 4, lq_ggml_u16(b + 108)};
  }
  // dl = d·(scale − 32), w = dl·(q2 − 4 + 4·hbit), as lq_ggml_q3_K.
  static __device__ __forceinline__ void decode(const raw_t& raw, unsigned, float (&w)[8]) {
    const float d = lq_ggml_scale_float(raw.d);
    const float dl_a = __fmul_rn(d, lq_ggml_byte_float(raw.scales, 0, 32.0f)), dl_b = __fmul_rn(d, lq_ggml_byte_float(raw.scales, 1, 32.0f));
    const uint32_t a = (raw.qs & 0x03030303u) | (raw.hmask & 0x01010101u) << 2;
    const uint32_t b = ((raw.qs >> 2) & 0x03030303u) | ((raw.hmask >> 1) & 0x01010101u) << 2;
#pragma unroll
    for (int k = 0; k < 4; k++) {
      w[k] = __fmul_rn(dl_a, lq_ggml_byte_float(a, k, 4.0f));
      w[4 + k] = __fmul_rn(dl_b, lq_ggml_byte_float(b, k, 4.0f));
    }
  }
};

// Q6_K: weight 128h + r (r < 128) has its low four bits in nibble r / 64 of ql[64h + r % 64] and
// its top two in bits 2·(r / 32) of qh[32h + r % 32]. Lane t = 16h + u takes ql[64h+4u..+3]: quad
// a = 32h + u (r = 4u..4u+3, low nibbles), quad b = quad a + 16 (r + 64, high nibbles); both take
// their top bits from qh[32h + 4·(u % 8)..+3], bits 2s and 2s + 4 (s = u / 8). Scales scales[8h +
// u / 4] and [8h + 4 + u / 4]. 210-byte blocks: 2-aligned.
struct lq_ggml_lanes_q6_K {
  static constexpr int quad_b = 16;
  static constexpr bool raw_nan = false, has_half = false;
  static __device__ __forceinline__ int quad_a(unsigned lane) { return (int)(32 * (lane >> 4) + (lane & 15)); }
  struct raw_t {
    uint32_t ql, qh, scales, d;  // scales: quad a's byte, quad b's byte << 8
  };
  template <bool kTail>
  static __device__ __forceinline__ raw_t load(const uint8_t* bytes, uint32_t chunk, unsigned lane, int64_t, uint64_t) {
    const uint8_t* b = bytes + (uint64_t)chunk * sizeof(lq_block_q6_K);
    const unsigned h = lane >> 4, u = lane & 15;
    const uint8_t* s = b + 192 + 8 * h + (u >> 2);
    return {lq_ggml_u32_at2(b + 64 * h + 4 * u), lq_ggml_u32_at2(b + 128 + 32 * h + 4 * (u & 7)), lq_ggml_u8(s) | lq_ggml_u8(s + 4) << 8, lq_ggml_u16(b + 208)};
  }
  // dl = d·scales[e / 16] (a signed byte), w = dl·(q − 32), as lq_ggml_q6_K.
  static __device__ __forceinline__ void decode(const raw_t& raw, unsigned lane, float (&w)[8]) {
    const int s = 2 * ((lane >> 3) & 1);
    const uint32_t a = (raw.ql & 0x0F0F0F0Fu) | ((raw.qh >> s) & 0x03030303u) << 4;
    const uint32_t b = ((raw.ql >> 4) & 0x0F0F0F0Fu) | ((raw.qh >> (s + 4)) & 0x03030303u) << 4;
    const float d = lq_ggml_scale_float(raw.d);
    // A signed byte x as (x + 128) − 128: XOR 0x80 on the byte.
    const float dl_a = __fmul_rn(d, lq_ggml_int_float((raw.scales ^ 0x80u) & 0xFF, 128.0f));
    const float dl_b = __fmul_rn(d, lq_ggml_int_float(((raw.scales >> 8) ^ 0x80u) & 0xFF, 128.0f));
#pragma unroll
    for (int k = 0; k < 4; k++) {
      w[k] = __fmul_rn(dl_a, lq_ggml_byte_float(a, k, 32.0f));
      w[4 + k] = __fmul_rn(dl_b, lq_ggml_byte_float(b, k, 32.0f));
    }
  }
};

// TQ2_0: the crumb lanes' codes, w = (q − 1)·d as lq_ggml_tq2_0. 66-byte blocks: 2-aligned.
struct lq_ggml_lanes_tq2_0 : lq_ggml_crumb_lanes {
  struct raw_t {
    uint32_t qs, d;
  };
  template <bool kTail>
  static __device__ __forceinline__ raw_t load(const uint8_t* bytes, uint32_t chunk, unsigned lane, int64_t, uint64_t) {
    const uint8_t* b = bytes + (uint64_t)chunk * sizeof(lq_block_tq2_0);
    return {lq_ggml_u32_at2(b + 4 * (lane & 15)), lq_ggml_u16(b + 64)};
  }
  static __device__ __forceinline__ void decode(const raw_t& raw, unsigned lane, float (&w)[8]) {
    const int p = lane >> 4;
    const float d = lq_ggml_scale_float(raw.d);
    const uint32_t a = (raw.qs >> (4 * p)) & 0x03030303u, b = (raw.qs >> (4 * p + 2)) & 0x03030303u;
#pragma unroll
    for (int k = 0; k < 4; k++) {
      w[k] = __fmul_rn(lq_ggml_byte_float(a, k, 1.0f), d);
      w[4 + k] = __fmul_rn(lq_ggml_byte_float(b, k, 1.0f), d);
    }
  }
  static constexpr bool has_half = true;
  static __device__ __forceinline__ void decode_half(const raw_t& raw, unsigned lane, uint32_t (&h)[4]) {
    const int p = lane >> 4;
    const __half2 d = lq_ggml_scale_half2(raw.d);
    const uint32_t a = (raw.qs >> (4 * p)) & 0x03030303u, b = (raw.qs >> (4 * p + 2)) & 0x03030303u;
    h[0] = lq_ggml_scaled_pair<1>(a, 0, d), h[1] = lq_ggml_scaled_pair<1>(a, 1, d);
    h[2] = lq_ggml_scaled_pair<1>(b, 0, d), h[3] = lq_ggml_scaled_pair<1>(b, 1, d);
  }
};

// TQ1_0: quad q (weights 4q..4q+3) is trit n of the bytes of one word of qs ‖ qh (13 words, 54-byte
// blocks: 2-aligned): q < 40: word q % 8, n = q / 8; q < 60: word 8 + (q − 40) % 4, n = (q − 40) / 4;
// else word 12 (qh), n = q − 60. Lane t takes quads t and t + 32.
__device__ __forceinline__ void lq_ggml_tq1_quad(int q, int& word, int& n) {
  if (q < 40) word = q & 7, n = q >> 3;
  else if (q < 60) word = 8 + ((q - 40) & 3), n = (q - 40) >> 2;
  else word = 12, n = q - 60;
}

struct lq_ggml_lanes_tq1_0 {
  static constexpr int quad_b = 32;
  static constexpr bool raw_nan = false, has_half = false;
  static __device__ __forceinline__ int quad_a(unsigned lane) { return (int)lane; }
  struct raw_t {
    uint32_t a, b, d;
  };
  template <bool kTail>
  static __device__ __forceinline__ raw_t load(const uint8_t* bytes, uint32_t chunk, unsigned lane, int64_t, uint64_t) {
    const uint8_t* b = bytes + (uint64_t)chunk * sizeof(lq_block_tq1_0);
    int word_a, word_b, n;
    lq_ggml_tq1_quad((int)lane, word_a, n);
    lq_ggml_tq1_quad((int)lane + 32, word_b, n);
    return {lq_ggml_u32_at2(b + 4 * word_a), lq_ggml_u32_at2(b + 4 * word_b), lq_ggml_u16(b + 52)};
  }
  // Trit n of byte x: ((x·3^n mod 256)·3) >> 8, as lq_ggml_tq1_0 (3^n mod 256 from a packed table
  // of 1, 3, 9, 27, 81); w = (trit − 1)·d.
  static __device__ __forceinline__ void decode(const raw_t& raw, unsigned lane, float (&w)[8]) {
    int word, n_a, n_b;
    lq_ggml_tq1_quad((int)lane, word, n_a);
    lq_ggml_tq1_quad((int)lane + 32, word, n_b);
    const uint32_t pow_a = (uint32_t)(0x511B090301ull >> (8 * n_a)) & 0xFF, pow_b = (uint32_t)(0x511B090301ull >> (8 * n_b)) & 0xFF;
    const float d = lq_ggml_scale_float(raw.d);
#pragma unroll
    for (int k = 0; k < 4; k++) {
      const uint32_t trit_a = ((((raw.a >> (8 * k)) & 0xFF) * pow_a & 0xFF) * 3) >> 8;
      const uint32_t trit_b = ((((raw.b >> (8 * k)) & 0xFF) * pow_b & 0xFF) * 3) >> 8;
      w[k] = __fmul_rn(lq_ggml_int_float(trit_a, 1.0f), d);
      w[4 + k] = __fmul_rn(lq_ggml_int_float(trit_b, 1.0f), d);
    }
  }
};
