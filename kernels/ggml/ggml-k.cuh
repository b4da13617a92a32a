// ggml's K-quants Q2_K … Q6_K and ternary types TQ1_0 and TQ2_0: super-blocks of QK_K = 256
// weights, as GGUF stores them and the kernels receive them (the bytes as is, blocks back to back):
//
//   Q2_K   { u8 scales[16]; u8 qs[64]; fp16 d; fp16 dmin; }              84 bytes   2.625 bpw
//          y = (d · (sc & 0xF)) · q − dmin · (sc >> 4),      sc = scales[e / 16], q 2 bits
//   Q3_K   { u8 hmask[32]; u8 qs[64]; u8 scales[12]; fp16 d; }           110 bytes  3.4375 bpw
//          y = (d · (s − 32)) · (q2 − 4 + 4·hbit),           s six bits of the 12 scale bytes
//   Q4_K   { fp16 d; fp16 dmin; u8 scales[12]; u8 qs[128]; }             144 bytes  4.5 bpw
//          y = (d · sc) · q − dmin · m,                      sc, m six bits, per 32 weights
//   Q5_K   { fp16 d; fp16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]; }  176 bytes  5.5 bpw
//          y = (d · sc) · q − dmin · m,                      q = nibble | high bit << 4
//   Q6_K   { u8 ql[128]; u8 qh[64]; int8 scales[16]; fp16 d; }           210 bytes  6.5625 bpw
//          y = (d · scales[e / 16]) · (q − 32),              q = ql nibble | 2 qh bits << 4
//   TQ1_0  { u8 qs[48]; u8 qh[4]; fp16 d; }                              54 bytes   1.6875 bpw
//          y = (trit − 1) · d,                               5 (qh: 4) base-3 digits a byte
//   TQ2_0  { u8 qs[64]; fp16 d; }                                        66 bytes   2.0625 bpw
//          y = (q − 1) · d,                                  q 2 bits
//
// Layouts from ggml src/ggml-common.h, formulas from src/ggml-quants.c `dequantize_row_*` at
// ggml-org/ggml@d99724f2 (../shared/ref/gguf-onnx.md §1.3); where each weight's bits sit is
// written beside each function, with the index arithmetic of formats/ggml/<type>.ts. The float
// operations are those of the TS codecs, in their order, each a separate IEEE operation
// (__fmul_rn, __fsub_rn: no FMA contraction). The products are exact in float32 (an fp16 scale's 11
// significant bits times integer factors of at most 12: formats/ggml/block-math.ts), so the only
// rounding is the subtraction of `dmin · m` in Q2_K, Q4_K and Q5_K, as in the reference. These
// per-weight functions are the definitions; the kernels compute the same operations a lane's 8
// weights at a time (ggml-k-lanes.cuh).
#pragma once
#include <stdint.h>
#include "ggml-legacy.cuh"

// ggml-common.h's super-block size and the bytes of the packed six-bit scales of Q3_K … Q5_K.
#define QK_K 256
#define K_SCALE_SIZE 12

struct lq_block_q2_K {
  uint8_t scales[QK_K / 16];  // low nibble: scale, high nibble: min, per 16 weights
  uint8_t qs[QK_K / 4];
  lq_ggml_half d;
  lq_ggml_half dmin;
};
static_assert(sizeof(lq_block_q2_K) == 16 + 64 + 2 + 2, "wrong q2_K block size/padding");

struct lq_block_q3_K {
  uint8_t hmask[QK_K / 8];
  uint8_t qs[QK_K / 4];
  uint8_t scales[K_SCALE_SIZE];
  lq_ggml_half d;
};
static_assert(sizeof(lq_block_q3_K) == 32 + 64 + 12 + 2, "wrong q3_K block size/padding");

struct lq_block_q4_K {
  lq_ggml_half d;
  lq_ggml_half dmin;
  uint8_t scales[K_SCALE_SIZE];
  uint8_t qs[QK_K / 2];
};
static_assert(sizeof(lq_block_q4_K) == 2 + 2 + 12 + 128, "wrong q4_K block size/padding");

struct lq_block_q5_K {
  lq_ggml_half d;
  lq_ggml_half dmin;
  uint8_t scales[K_SCALE_SIZE];
  uint8_t qh[QK_K / 8];
  uint8_t qs[QK_K / 2];
};
static_assert(sizeof(lq_block_q5_K) == 2 + 2 + 12 + 32 + 128, "wrong q5_K block size/padding");

struct lq_block_q6_K {
  uint8_t ql[QK_K / 2];
  uint8_t qh[QK_K / 4];
  int8_t scales[QK_K / 16];
  lq_ggml_half d;
};
static_assert(sizeof(lq_block_q6_K) == 128 + 64 + 16 + 2, "wrong q6_K block size/padding");

struct lq_block_tq1_0 {
  uint8_t qs[(QK_K - 4 * QK_K / 64) / 5];  // 240 weights, 5 a byte
  uint8_t qh[QK_K / 64];                   // the last 16, 4 a byte
  lq_ggml_half d;
};
static_assert(sizeof(lq_block_tq1_0) == 48 + 4 + 2, "wrong tq1_0 block size/padding");

struct lq_block_tq2_0 {
  uint8_t qs[QK_K / 4];
  lq_ggml_half d;
};
static_assert(sizeof(lq_block_tq2_0) == 64 + 2, "wrong tq2_0 block size/padding");

// Weight e = 128h + 32s + l (h < 2, s < 4, l < 32) of Q2_K and TQ2_0: bits 2s of qs[32h + l].
__device__ __forceinline__ int lq_ggml_crumb(const uint8_t* qs, int e) {
  return (qs[32 * (e >> 7) + (e & 31)] >> (2 * ((e >> 5) & 3))) & 3;
}

__device__ __forceinline__ float lq_ggml_q2_K(const lq_block_q2_K* b, int e) {
  const int sc = b->scales[e >> 4];
  const float dl = __fmul_rn(lq_ggml_half_to_float(b->d), (float)(sc & 0xF));
  const float ml = __fmul_rn(lq_ggml_half_to_float(b->dmin), (float)(sc >> 4));
  return __fsub_rn(__fmul_rn(dl, (float)lq_ggml_crumb(b->qs, e)), ml);
}

// Sub-block i = e / 16 takes its scale's low nibble from scales[i] (i < 8) or scales[i − 8] >> 4,
// its top two bits from scales[8 + i % 4] >> 2·(i / 4). Weight e = 32j + l: q2 = bits 2·(j % 4) of
// qs[32·(j / 4) + l], hbit = bit j of hmask[l]; a clear hbit subtracts 4.
__device__ __forceinline__ float lq_ggml_q3_K(const lq_block_q3_K* b, int e) {
  const int i = e >> 4, j = e >> 5, l = e & 31;
  const int low = i < 8 ? b->scales[i] & 0xF : b->scales[i - 8] >> 4;
  const int high = (b->scales[8 + (i & 3)] >> (2 * (i >> 2))) & 3;
  const float dl = __fmul_rn(lq_ggml_half_to_float(b->d), (float)((low | high << 4) - 32));
  const int q2 = (b->qs[32 * (j >> 2) + l] >> (2 * (j & 3))) & 3;
  const int hbit = (b->hmask[l] >> j) & 1;
  return __fmul_rn(dl, (float)(q2 - 4 + (hbit << 2)));
}

// ggml's get_scale_min_k4: the six-bit scale and min of sub-block j (< 8). Bytes 0..3 hold sc0..3,
// bytes 4..7 m0..3 in their low six bits; bytes 8..11 the low nibbles of sc4..7 and m4..7, whose
// top two bits are the top bits of bytes 0..7.
__device__ __forceinline__ void lq_ggml_scale_min_k4(const uint8_t* s, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Weight e = 64c + 32k + l (c < 4, k < 2, l < 32) of Q4_K and Q5_K: nibble k of qs[32c + l], in
// sub-block j = 2c + k.
__device__ __forceinline__ int lq_ggml_k_nibble(const uint8_t* qs, int e) {
  return (qs[32 * (e >> 6) + (e & 31)] >> (4 * ((e >> 5) & 1))) & 0xF;
}

__device__ __forceinline__ float lq_ggml_q4_K(const lq_block_q4_K* b, int e) {
  int sc, m;
  lq_ggml_scale_min_k4(b->scales, e >> 5, &sc, &m);
  const float dl = __fmul_rn(lq_ggml_half_to_float(b->d), (float)sc);
  const float ml = __fmul_rn(lq_ggml_half_to_float(b->dmin), (float)m);
  return __fsub_rn(__fmul_rn(dl, (float)lq_ggml_k_nibble(b->qs, e)), ml);
}

// As Q4_K, plus the fifth bit: bit j of qh[l].
__device__ __forceinline__ float lq_ggml_q5_K(const lq_block_q5_K* b, int e) {
  const int j = e >> 5;
  int sc, m;
  lq_ggml_scale_min_k4(b->scales, j, &sc, &m);
  const float dl = __fmul_rn(lq_ggml_half_to_float(b->d), (float)sc);
  const float ml = __fmul_rn(lq_ggml_half_to_float(b->dmin), (float)m);
  const int q = lq_ggml_k_nibble(b->qs, e) | ((b->qh[e & 31] >> j) & 1) << 4;
  return __fsub_rn(__fmul_rn(dl, (float)q), ml);
}

// Weight e = 128h + r (h < 2, r < 128): nibble r / 64 of ql[64h + r % 64], bits 2·(r / 32) of
// qh[32h + r % 32]; scale scales[e / 16], a signed byte.
__device__ __forceinline__ float lq_ggml_q6_K(const lq_block_q6_K* b, int e) {
  const int h = e >> 7, r = e & 127;
  const int lo = (b->ql[64 * h + (r & 63)] >> (4 * (r >> 6))) & 0xF;
  const int hi = (b->qh[32 * h + (r & 31)] >> (2 * (r >> 5))) & 3;
  const float dl = __fmul_rn(lq_ggml_half_to_float(b->d), (float)b->scales[e >> 4]);
  return __fmul_rn(dl, (float)((lo | hi << 4) - 32));
}

// A byte holds its trits as a base-3 fraction of 256: trit n of byte v is ((v · 3^n) mod 256 · 3) >> 8.
// qs[0..31] hold weights 32n + m (n < 5), qs[32..47] weights 160 + 16n + m (n < 5), qh[0..3]
// weights 240 + 4n + m (n < 4).
__device__ __forceinline__ float lq_ggml_tq1_0(const lq_block_tq1_0* b, int e) {
  int v, n;
  if (e < 160) {
    v = b->qs[e & 31], n = e >> 5;
  } else if (e < 240) {
    v = b->qs[32 + ((e - 160) & 15)], n = (e - 160) >> 4;
  } else {
    v = b->qh[(e - 240) & 3], n = (e - 240) >> 2;
  }
  for (int k = 0; k < n; k++) v = (v * 3) & 0xFF;  // v · 3^n mod 256, one factor at a time
  return __fmul_rn((float)(((v * 3) >> 8) - 1), lq_ggml_half_to_float(b->d));
}

__device__ __forceinline__ float lq_ggml_tq2_0(const lq_block_tq2_0* b, int e) {
  return __fmul_rn((float)(lq_ggml_crumb(b->qs, e) - 1), lq_ggml_half_to_float(b->d));
}
