// Lane decoders (contract in ggml-lanes.cuh) of F16, BF16 and the 32-weight legacy blocks Q8_0,
// Q4_0, Q4_1, Q5_0, Q5_1 (layouts and per-weight formulas in ggml-legacy.cuh).
//
// Legacy types: a chunk is 8 blocks; lane t takes block t / 4 of it and, with r = t % 4, the
// weights 4r..4r+3 (quad a = 8·(t / 4) + r) and 16+4r..16+4r+3 (quad b = quad a + 4), whose
// codes sit in qs bytes 4r..4r+3: the low nibbles and the high nibbles of one word for the 4- and
// 5-bit types. Four lanes write a block's 32 weights, whole sectors for fp16 and float32 alike.
#pragma once
#include <stdint.h>
#include "ggml-legacy.cuh"
#include "ggml-lanes.cuh"

// The lane's block: block t / 4 of the chunk; in the partial last chunk (kTail), clamped to the
// last block of the tensor (those lanes' weights lie past the end and are not stored).
template <bool kTail>
__device__ __forceinline__ const uint8_t* lq_ggml_legacy_block(const uint8_t* bytes, uint32_t chunk, int64_t n_blocks, unsigned lane, uint32_t type_size) {
  const uint64_t block = 8 * (uint64_t)chunk + (lane >> 2);
  return bytes + (kTail && block >= (uint64_t)n_blocks ? (uint64_t)n_blocks - 1 : block) * type_size;
}

// F16 and BF16: a chunk is 256 elements; lane t takes elements 4t..4t+3 and 128+4t..128+4t+3
// (one 8-byte load each), so a warp's loads and stores are contiguous. In the partial last chunk
// (kTail), a quad that runs past the end of the tensor is read element by element, clamped to the
// last.
template <bool kTail>
__device__ __forceinline__ uint2 lq_ggml_halves_quad(const uint8_t* bytes, uint64_t first, uint64_t total) {
  if constexpr (kTail) {
    if (first + 4 > total) {
      uint32_t h[4];
#pragma unroll
      for (int k = 0; k < 4; k++) h[k] = lq_ggml_u16(bytes + 2 * (first + k < total ? first + k : total - 1));
      return make_uint2(h[0] | h[1] << 16, h[2] | h[3] << 16);
    }
  }
  return __ldg(reinterpret_cast<const uint2*>(bytes) + first / 4);
}

struct lq_ggml_halves_lanes {
  typedef uint4 raw_t;  // quad a's halves in x, y; quad b's in z, w
  static constexpr int quad_b = 32;
  static constexpr bool raw_nan = true, has_half = false;
  static __device__ __forceinline__ int quad_a(unsigned lane) { return (int)lane; }
  template <bool kTail>
  static __device__ __forceinline__ raw_t load(const uint8_t* bytes, uint32_t chunk, unsigned lane, int64_t, uint64_t total) {
    const uint64_t first = 256 * (uint64_t)chunk + 4 * lane;
    const uint2 a = lq_ggml_halves_quad<kTail>(bytes, first, total), b = lq_ggml_halves_quad<kTail>(bytes, first + 128, total);
    return make_uint4(a.x, a.y, b.x, b.y);
  }
};

struct lq_ggml_lanes_f16 : lq_ggml_halves_lanes {
  static __device__ __forceinline__ void decode(const raw_t& raw, unsigned, float (&w)[8]) {
    const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int j = 0; j < 8; j++) w[j] = lq_ggml_half_to_float((lq_ggml_half)(words[j / 2] >> (16 * (j % 2))));
  }
  // fp16 output is the input: lq_ggml_half_to_float is exact and keeps a NaN's sign and payload,
  // which lq_ggml_half_bits gives back, for every one of the 65,536 patterns.
  static constexpr bool has_half = true;
  static __device__ __forceinline__ void decode_half(const raw_t& raw, unsigned, uint32_t (&h)[4]) {
    h[0] = raw.x, h[1] = raw.y, h[2] = raw.z, h[3] = raw.w;
  }
};

struct lq_ggml_lanes_bf16 : lq_ggml_halves_lanes {
  static __device__ __forceinline__ void decode(const raw_t& raw, unsigned, float (&w)[8]) {
    const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int j = 0; j < 4; j++) {
      w[2 * j] = __uint_as_float(words[j] << 16);
      w[2 * j + 1] = __uint_as_float(words[j] & 0xFFFF0000u);
    }
  }
};

// The quads of the legacy lanes.
struct lq_ggml_legacy_lanes {
  static constexpr int quad_b = 4;
  static constexpr bool raw_nan = false, has_half = false;
  static __device__ __forceinline__ int quad_a(unsigned lane) { return (int)(8 * (lane >> 2) + (lane & 3)); }
};

// Q8_0: the codes of quad a are qs[4r..4r+3], of quad b qs[16+4r..]. XOR 0x80 turns each int8 q
// into q + 128, from which the float of q is exact.
struct lq_ggml_lanes_q8_0 : lq_ggml_legacy_lanes {
  struct raw_t {
    uint32_t d, a, b;
  };
  template <bool kTail>
  static __device__ __forceinline__ raw_t load(const uint8_t* bytes, uint32_t chunk, unsigned lane, int64_t n_blocks, uint64_t) {
    const uint8_t* b = lq_ggml_legacy_block<kTail>(bytes, chunk, n_blocks, lane, sizeof(lq_block_q8_0));
    const int r = lane & 3;
    return {lq_ggml_u16(b), lq_ggml_u32_at2(b + 2 + 4 * r), lq_ggml_u32_at2(b + 18 + 4 * r)};
  }
  // __fmul_rn((float)qs[e], d), as lq_ggml_q8_0.
  static __device__ __forceinline__ void decode(const raw_t& raw, unsigned, float (&w)[8]) {
    const float d = lq_ggml_scale_float(raw.d);
    const uint32_t a = raw.a ^ 0x80808080u, b = raw.b ^ 0x80808080u;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      w[j] = __fmul_rn(lq_ggml_byte_float(a, j, 128.0f), d);
      w[4 + j] = __fmul_rn(lq_ggml_byte_float(b, j, 128.0f), d);
    }
  }
  static constexpr bool has_half = true;
  static __device__ __forceinline__ void decode_half(const raw_t& raw, unsigned, uint32_t (&h)[4]) {
    const __half2 d = lq_ggml_scale_half2(raw.d);
    const uint32_t a = raw.a ^ 0x80808080u, b = raw.b ^ 0x80808080u;
    h[0] = lq_ggml_scaled_pair<128>(a, 0, d), h[1] = lq_ggml_scaled_pair<128>(a, 1, d);
    h[2] = lq_ggml_scaled_pair<128>(b, 0, d), h[3] = lq_ggml_scaled_pair<128>(b, 1, d);
  }
};

// Q4_0: qs[4r..4r+3] hold quad a in their low nibbles and quad b in their high nibbles.
struct lq_ggml_lanes_q4_0 : lq_ggml_legacy_lanes {
  struct raw_t {
    uint32_t d, qs;
  };
  template <bool kTail>
  static __device__ __forceinline__ raw_t load(const uint8_t* bytes, uint32_t chunk, unsigned lane, int64_t n_blocks, uint64_t) {
    const uint8_t* b = lq_ggml_legacy_block<kTail>(bytes, chunk, n_blocks, lane, sizeof(lq_block_q4_0));
    return {lq_ggml_u16(b), lq_ggml_u32_at2(b + 2 + 4 * (lane & 3))};
  }
  // __fmul_rn((float)(q − 8), d), as lq_ggml_q4_0 (the float of q − 8 is exact, −0 included).
  static __device__ __forceinline__ void decode(const raw_t& raw, unsigned, float (&w)[8]) {
    const float d = lq_ggml_scale_float(raw.d);
    const uint32_t lo = raw.qs & 0x0F0F0F0Fu, hi = (raw.qs >> 4) & 0x0F0F0F0Fu;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      w[j] = __fmul_rn(lq_ggml_byte_float(lo, j, 8.0f), d);
      w[4 + j] = __fmul_rn(lq_ggml_byte_float(hi, j, 8.0f), d);
    }
  }
  static constexpr bool has_half = true;
  static __device__ __forceinline__ void decode_half(const raw_t& raw, unsigned, uint32_t (&h)[4]) {
    const __half2 d = lq_ggml_scale_half2(raw.d);
    const uint32_t lo = raw.qs & 0x0F0F0F0Fu, hi = (raw.qs >> 4) & 0x0F0F0F0Fu;
    h[0] = lq_ggml_scaled_pair<8>(lo, 0, d), h[1] = lq_ggml_scaled_pair<8>(lo, 1, d);
    h[2] = lq_ggml_scaled_pair<8>(hi, 0, d), h[3] = lq_ggml_scaled_pair<8>(hi, 1, d);
  }
};

// Q4_1: 20-byte blocks, so d and m are one aligned word and qs[4r..] another.
struct lq_ggml_lanes_q4_1 : lq_ggml_legacy_lanes {
  struct raw_t {
    uint32_t dm, qs;
  };
  template <bool kTail>
  static __device__ __forceinline__ raw_t load(const uint8_t* bytes, uint32_t chunk, unsigned lane, int64_t n_blocks, uint64_t) {
    const uint8_t* b = lq_ggml_legacy_block<kTail>(bytes, chunk, n_blocks, lane, sizeof(lq_block_q4_1));
    return {lq_ggml_u32(b), lq_ggml_u32(b + 4 + 4 * (lane & 3))};
  }
  // __fadd_rn(__fmul_rn((float)q, d), m), as lq_ggml_q4_1: q·d is exact, so one FMA.
  static __device__ __forceinline__ void decode(const raw_t& raw, unsigned, float (&w)[8]) {
    const float d = lq_ggml_scale_float(raw.dm), m = lq_ggml_scale_float(raw.dm >> 16);
    const uint32_t lo = raw.qs & 0x0F0F0F0Fu, hi = (raw.qs >> 4) & 0x0F0F0F0Fu;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      w[j] = __fmaf_rn(lq_ggml_byte_float(lo, j, 0.0f), d, m);
      w[4 + j] = __fmaf_rn(lq_ggml_byte_float(hi, j, 0.0f), d, m);
    }
  }
};

// Q5_0 / Q5_1: the fifth bits of quad a are bits 4r..4r+3 of qh, of quad b bits 16+4r..16+4r+3.
__device__ __forceinline__ void lq_ggml_q5_codes(uint32_t qh, uint32_t qs, unsigned lane, uint32_t& a, uint32_t& b) {
  const int r = lane & 3;
  a = (qs & 0x0F0F0F0Fu) | lq_ggml_bits_to_bit4(qh >> (4 * r));
  b = ((qs >> 4) & 0x0F0F0F0Fu) | lq_ggml_bits_to_bit4(qh >> (16 + 4 * r));
}

struct lq_ggml_lanes_q5_0 : lq_ggml_legacy_lanes {
  struct raw_t {
    uint32_t d, qh, qs;
  };
  template <bool kTail>
  static __device__ __forceinline__ raw_t load(const uint8_t* bytes, uint32_t chunk, unsigned lane, int64_t n_blocks, uint64_t) {
    const uint8_t* b = lq_ggml_legacy_block<kTail>(bytes, chunk, n_blocks, lane, sizeof(lq_block_q5_0));
    return {lq_ggml_u16(b), lq_ggml_u32_at2(b + 2), lq_ggml_u32_at2(b + 6 + 4 * (lane & 3))};
  }
  // __fmul_rn((float)(q − 16), d), as lq_ggml_q5_0.
  static __device__ __forceinline__ void decode(const raw_t& raw, unsigned lane, float (&w)[8]) {
    const float d = lq_ggml_scale_float(raw.d);
    uint32_t a, b;
    lq_ggml_q5_codes(raw.qh, raw.qs, lane, a, b);
#pragma unroll
    for (int j = 0; j < 4; j++) {
      w[j] = __fmul_rn(lq_ggml_byte_float(a, j, 16.0f), d);
      w[4 + j] = __fmul_rn(lq_ggml_byte_float(b, j, 16.0f), d);
    }
  }
  static constexpr bool has_half = true;
  static __device__ __forceinline__ void decode_half(const raw_t& raw, unsigned lane, uint32_t (&h)[4]) {
    const __half2 d = lq_ggml_scale_half2(raw.d);
    uint32_t a, b;
    lq_ggml_q5_codes(raw.qh, raw.qs, lane, a, b);
    h[0] = lq_ggml_scaled_pair<16>(a, 0, d), h[1] = lq_ggml_scaled_pair<16>(a, 1, d);
    h[2] = lq_ggml_scaled_pair<16>(b, 0, d), h[3] = lq_ggml_scaled_pair<16>(b, 1, d);
  }
};

// Q5_1: 24-byte blocks, every field an aligned word.
struct lq_ggml_lanes_q5_1 : lq_ggml_legacy_lanes {
  struct raw_t {
    uint32_t dm, qh, qs;
  };
  template <bool kTail>
  static __device__ __forceinline__ raw_t load(const uint8_t* bytes, uint32_t chunk, unsigned lane, int64_t n_blocks, uint64_t) {
    const uint8_t* b = lq_ggml_legacy_block<kTail>(bytes, chunk, n_blocks, lane, sizeof(lq_block_q5_1));
    return {lq_ggml_u32(b), lq_ggml_u32(b + 4), lq_ggml_u32(b + 8 + 4 * (lane & 3))};
  }
  // __fadd_rn(__fmul_rn((float)q, d), m), as lq_ggml_q5_1: q·d is exact, so one FMA.
  static __device__ __forceinline__ void decode(const raw_t& raw, unsigned lane, float (&w)[8]) {
    const float d = lq_ggml_scale_float(raw.dm), m = lq_ggml_scale_float(raw.dm >> 16);
    uint32_t a, b;
    lq_ggml_q5_codes(raw.qh, raw.qs, lane, a, b);
#pragma unroll
    for (int j = 0; j < 4; j++) {
      w[j] = __fmaf_rn(lq_ggml_byte_float(a, j, 0.0f), d, m);
      w[4 + j] = __fmaf_rn(lq_ggml_byte_float(b, j, 0.0f), d, m);
    }
  }
};
