// ggml's element types F16 and BF16 and its legacy block types Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1,
// as GGUF stores them and the kernels receive them (the bytes as is, blocks back to back):
//
//   F16    fp16 bits                                      2 bytes     y = the value
//   BF16   bf16 bits (the top half of a binary32)         2 bytes     y = bits << 16
//   Q8_0   { fp16 d; int8 qs[32]; }                       34 bytes    y[j] = qs[j] · d
//   Q4_0   { fp16 d; u8 qs[16]; }                         18 bytes    y[j] = (q[j] − 8) · d
//   Q4_1   { fp16 d; fp16 m; u8 qs[16]; }                 20 bytes    y[j] = q[j] · d + m
//   Q5_0   { fp16 d; u8 qh[4]; u8 qs[16]; }               22 bytes    y[j] = (q[j] − 16) · d
//   Q5_1   { fp16 d; fp16 m; u8 qh[4]; u8 qs[16]; }       24 bytes    y[j] = q[j] · d + m
//
//   4-bit q[j] = qs[j] & 0xF, q[j + 16] = qs[j] >> 4 (j < 16): low nibbles hold the first half
//   5-bit q[j] |= bit j of qh << 4, qh one little-endian u32
//
// Bits per weight 16, 16, 8.5, 4.5, 5, 5.5, 6. Layouts from ggml src/ggml-common.h, formulas from
// src/ggml-quants.c `dequantize_row_*` at ggml-org/ggml@d99724f2 (../shared/ref/gguf-onnx.md
// §1.2–1.3), as formats/ggml/<type>.ts computes them. Every product there is exact in float32 (an
// fp16 scale has 11 significant bits, a code at most 5: formats/ggml/block-math.ts), so `(q − 8)·d`
// has no rounding at all and `q·d + m` one, in the addition. __fmul_rn / __fadd_rn keep nvcc from
// contracting `q·d + m` into an FMA: here that would change nothing, the product being exact, but
// the kernels then say in code which roundings the reference has.
#pragma once
#include <stdint.h>
#include <cuda_fp16.h>

// ggml-common.h's block sizes (weights per block), under ggml's names so one grep finds both.
#define QK4_0 32
#define QK4_1 32
#define QK5_0 32
#define QK5_1 32
#define QK8_0 32

// An fp16 field: its bits (ggml_half in ggml-common.h's C declaration). The structs hold only
// bytes and 16-bit words, so they have no padding and 2-byte alignment, and blocks of any even size
// can sit back to back. test/kernels/ggml.test.ts reads the static_asserts below and compares them
// with the TS codecs' typeSize.
typedef uint16_t lq_ggml_half;

struct lq_block_f16 {
  lq_ggml_half bits;
};
static_assert(sizeof(lq_block_f16) == 2, "wrong f16 block size/padding");

struct lq_block_bf16 {
  uint16_t bits;
};
static_assert(sizeof(lq_block_bf16) == 2, "wrong bf16 block size/padding");

struct lq_block_q8_0 {
  lq_ggml_half d;
  int8_t qs[QK8_0];
};
static_assert(sizeof(lq_block_q8_0) == 2 + 32, "wrong q8_0 block size/padding");

struct lq_block_q4_0 {
  lq_ggml_half d;
  uint8_t qs[QK4_0 / 2];
};
static_assert(sizeof(lq_block_q4_0) == 2 + 16, "wrong q4_0 block size/padding");

struct lq_block_q4_1 {
  lq_ggml_half d;
  lq_ggml_half m;
  uint8_t qs[QK4_1 / 2];
};
static_assert(sizeof(lq_block_q4_1) == 2 + 2 + 16, "wrong q4_1 block size/padding");

struct lq_block_q5_0 {
  lq_ggml_half d;
  uint8_t qh[4];  // bytes, not a uint32_t: the 22-byte blocks leave it 2-aligned only
  uint8_t qs[QK5_0 / 2];
};
static_assert(sizeof(lq_block_q5_0) == 2 + 4 + 16, "wrong q5_0 block size/padding");

struct lq_block_q5_1 {
  lq_ggml_half d;
  lq_ggml_half m;
  uint8_t qh[4];
  uint8_t qs[QK5_1 / 2];
};
static_assert(sizeof(lq_block_q5_1) == 2 + 2 + 4 + 16, "wrong q5_1 block size/padding");

// fp16 bits → float32 exactly as formats/ggml/block-math.ts F16_BITS (float-bits.ts f16Table), for
// all 65,536 patterns: finite values and infinities through the hardware conversion, which is
// exact; a NaN by bits, keeping its sign and payload (a signalling NaN stays signalling), which
// cvt.f32.f16 is not documented to do.
__device__ __forceinline__ float lq_ggml_half_to_float(lq_ggml_half h) {
  if ((h & 0x7FFFu) > 0x7C00u) return __uint_as_float(((uint32_t)(h & 0x8000u) << 16) | 0x7F800000u | ((uint32_t)(h & 0x3FFu) << 13));
  return __half2float(__ushort_as_half(h));
}

// The 4-bit code of weight e (< 32) of a Q4_*/Q5_* block: low nibbles first, then high nibbles.
__device__ __forceinline__ int lq_ggml_nibble(const uint8_t* qs, int e) {
  return e < 16 ? qs[e] & 0xF : qs[e - 16] >> 4;
}

// The fifth bit of weight e: bit e of the little-endian u32 qh, i.e. bit e & 7 of byte e >> 3.
__device__ __forceinline__ int lq_ggml_high_bit(const uint8_t* qh, int e) {
  return (qh[e >> 3] >> (e & 7)) & 1;
}

// The per-type dequants: weight e of block b, as formats/ggml/<type>.ts computes it. These are the
// definitions; the kernels compute the same operations a lane's 8 weights at a time
// (ggml-legacy-lanes.cuh), and lq_ggml_half_to_float is F16's.
__device__ __forceinline__ float lq_ggml_f16(const lq_block_f16* b, int) {
  return lq_ggml_half_to_float(b->bits);
}

// Exact for every pattern, NaNs included (float.ts: `bits << 16`).
__device__ __forceinline__ float lq_ggml_bf16(const lq_block_bf16* b, int) {
  return __uint_as_float((uint32_t)b->bits << 16);
}

__device__ __forceinline__ float lq_ggml_q8_0(const lq_block_q8_0* b, int e) {
  return __fmul_rn((float)b->qs[e], lq_ggml_half_to_float(b->d));
}

// (q − 8) is formed as an integer first, as in q4_0.ts, so d = +0 gives −0 for q < 8.
__device__ __forceinline__ float lq_ggml_q4_0(const lq_block_q4_0* b, int e) {
  return __fmul_rn((float)(lq_ggml_nibble(b->qs, e) - 8), lq_ggml_half_to_float(b->d));
}

__device__ __forceinline__ float lq_ggml_q4_1(const lq_block_q4_1* b, int e) {
  return __fadd_rn(__fmul_rn((float)lq_ggml_nibble(b->qs, e), lq_ggml_half_to_float(b->d)), lq_ggml_half_to_float(b->m));
}

__device__ __forceinline__ float lq_ggml_q5_0(const lq_block_q5_0* b, int e) {
  const int q = lq_ggml_nibble(b->qs, e) | lq_ggml_high_bit(b->qh, e) << 4;
  return __fmul_rn((float)(q - 16), lq_ggml_half_to_float(b->d));
}

__device__ __forceinline__ float lq_ggml_q5_1(const lq_block_q5_1* b, int e) {
  const int q = lq_ggml_nibble(b->qs, e) | lq_ggml_high_bit(b->qh, e) << 4;
  return __fadd_rn(__fmul_rn((float)q, lq_ggml_half_to_float(b->d)), lq_ggml_half_to_float(b->m));
}
