// FPx in FP6-LLM's tensor-core "4+2" layout (e3m2, e2m3, e3m1, e2m2, any eXmY of 3 … 7 bits), the
// representation of formats/fpx/types.ts, as the kernels receive it (the stored bytes as is):
//
//   packed  uint32 [M·N·nbits/32]  regions of 1, 2 and 4 bits, those nbits has, in that order;
//                                  region y holds the next y bits of every code from the MSB
//                                  down and takes M·N·y/32 words
//   scales  uint16 [M]             fp16 bits, one per output row
//
// Inside region y (formats/fpx/tc-layout.ts, ../shared/ref/signround-gptq-fp6.md B3), the
// (64-row slab a, 16-column tile f) is one chunk of 32·y words at word (a·N/16 + f)·32·y. Lane t of
// the chunk owns its words t, 32 + t, …, 32·(y − 1) + t, and in them the 32 elements that
// mma.m16n8k16 gives lane t as A fragments of the chunk's four 16×16 sub-tiles, in stream order
//
//   p = ((k·2 + g)·2 + d)·2 + h0,   k: 16-row sub-tile, g: column half, d: row half, h0: pair
//   row r = 64·a + 16·k + 8·d + t/4,   column c = 16·f + 8·g + 2·(t mod 4) + h0
//   word p / (32/y) of the lane, slot s = p mod (32/y), field at bit 32 − y·(INV_y[s] + 1)
//
//   code = sign·2^(ebits+mbits) | e·2^mbits | m,   bias = 2^(ebits−1) − 1, no Inf/NaN codes
//   decode(code) = (−1)^sign · (1 + m/2^mbits) · 2^(e − bias)    e > 0
//                  (−1)^sign · (m/2^mbits) · 2^(1 − bias)         e = 0
//
//   W[r][c] = f32(decode(code[r][c]) · f32(scale[r]))
//
// (formats/fpx/reference.ts, torchao's from_scaled_tc_floatx at pytorch/ao@aa252872: the product
// is exact, ≤ 6 significant bits times an fp16 scale's 11, so −0 and f32 subnormals come out as
// IEEE multiplication gives them; FP6-LLM's fp16 output is this value rounded once.) Bits per
// weight: nbits + 16/N.
#pragma once
#include <stdint.h>
#include <cuda_fp16.h>

// The layout's fixed tiles (tc-layout.ts SLAB_ROWS, TILE_COLS, LANES), and its column multiple
// (TC_COL_MULTIPLE, as torchao asserts; the indexing alone would need 16).
#define LQ_FPX_SLAB_ROWS 64
#define LQ_FPX_COL_MULTIPLE 64
#define LQ_FPX_TILE_COLS 16
#define LQ_FPX_LANES 32
// Codes each lane owns in a chunk: a 64×16 chunk over 32 lanes.
#define LQ_FPX_LANE_CODES 32
// Code widths the layout packs (format.ts MIN_NBITS, MAX_NBITS), and so the widest exponent and
// mantissa fields (ebits ≥ 1, mbits ≥ 0).
#define LQ_FPX_MIN_NBITS 3
#define LQ_FPX_MAX_NBITS 7
#define LQ_FPX_MAX_EBITS 6
#define LQ_FPX_MAX_MBITS 5

// Bit offset (from the LSB) of slot s in a word of region y: 32 − y·(INV_y[s] + 1), with torchao's
// undo table INV_y in closed form. FP6-LLM's word byte reversal and slot interleaving put slot s
// at rank (s even ? half : 0) + (s & 2 ? quarter : 0) + s/4 of the word's 32/y fields, counted
// from the MSB; the static_assert below pins it to the tables themselves.
__host__ __device__ constexpr int lq_fpx_slot_shift(int y, int s) {
  const int per_word = 32 / y;
  const int rank = ((s & 1) != 0 ? 0 : per_word / 2) + ((s & 2) != 0 ? per_word / 4 : 0) + (s >> 2);
  return 32 - y * (rank + 1);
}

// torchao's INV_1, INV_2, INV_4 (tc-layout.ts INV; test/kernels/fpx.test.ts reads these lines).
constexpr int LQ_FPX_INV1[32] = {16, 0, 24, 8, 17, 1, 25, 9, 18, 2, 26, 10, 19, 3, 27, 11, 20, 4, 28, 12, 21, 5, 29, 13, 22, 6, 30, 14, 23, 7, 31, 15};
constexpr int LQ_FPX_INV2[16] = {8, 0, 12, 4, 9, 1, 13, 5, 10, 2, 14, 6, 11, 3, 15, 7};
constexpr int LQ_FPX_INV4[8] = {4, 0, 6, 2, 5, 1, 7, 3};

__host__ __device__ constexpr bool lq_fpx_shifts_match(int y, const int* inv) {
  for (int s = 0; s < 32 / y; s++) {
    if (lq_fpx_slot_shift(y, s) != 32 - y * (inv[s] + 1)) return false;
  }
  return true;
}
static_assert(lq_fpx_shifts_match(1, LQ_FPX_INV1) && lq_fpx_shifts_match(2, LQ_FPX_INV2) && lq_fpx_shifts_match(4, LQ_FPX_INV4), "lq_fpx_slot_shift must reproduce torchao's INV tables");

// 2^(127 − bias): the factor that turns the float32 built by lq_fpx_weight into decode(code).
// bias ≤ 31 (ebits ≤ 6), so the exponent field 254 − bias is a normal float's.
__device__ __forceinline__ float lq_fpx_unbias(int ebits) {
  const int bias = (1 << (ebits - 1)) - 1;
  return __uint_as_float((uint32_t)(254 - bias) << 23);
}

// One weight from its code (low NBITS bits of `code`), sign at bit NBITS − 1 (= ebits + mbits,
// so a compile-time constant: the sign goes to bit 31 and the magnitude is masked with constant
// shifts and masks, which ptxas folds into the field extraction of lq_fpx_code; only the
// magnitude's shift, 23 − mbits, is a runtime value, uniform over the grid).
// The code's e and m fields, put at the bottom of a float32's exponent and mantissa with the sign
// at bit 31, make a float32 worth decode(code)·2^(bias − 127) exactly: FPx normals become f32
// normals of exponent e, FPx subnormals (e = 0) f32 subnormals of the same m/2^mbits. `unbias`
// restores the value (a power of two, exact: without --use_fast_math the kernels do not flush
// subnormals), then one product with the scale. __fmul_rn keeps the two as separate IEEE products
// (no contraction into anything else), so signed zeros and Inf follow the reference.
template <int NBITS>
__device__ __forceinline__ float lq_fpx_weight(uint32_t code, int magnitude_shift, float unbias, float scale) {
  const uint32_t sign_bit = (code << (32 - NBITS)) & 0x80000000u;
  const uint32_t magnitude = code & ((1u << (NBITS - 1)) - 1u);
  const float scaled_down = __uint_as_float(sign_bit | (magnitude << magnitude_shift));
  return __fmul_rn(__fmul_rn(scaled_down, unbias), scale);
}

// The fields of a layer as the walks read them: the regions present (null where nbits lacks
// one), one word of width y per chunk-lane and bit.
struct lq_fpx_args {
  const uint32_t* __restrict__ region1;
  const uint32_t* __restrict__ region2;
  const uint32_t* __restrict__ region4;
  const uint16_t* __restrict__ scales;
  void* __restrict__ out;
  const float* __restrict__ reference;
  // Chunk lanes (M·N/32), 16-column tiles per slab (N/16), columns.
  int64_t lanes;
  uint32_t tiles;
  int64_t n_cols;
  float unbias;
  // 23 − mbits: where the magnitude's low bit goes in a float32 (lq_fpx_weight).
  int magnitude_shift;
  // The fp16 path (fpx-half.cuh, ebits ≤ 4 only): 5 − ebits, the magnitude's shift right in a
  // half, and 2^(15 − bias) in both halves of a half2, as bits.
  uint32_t half_right;
  uint32_t half_unbias2;
};

// The words one chunk-lane holds: 1, 2 and 4 of the regions of width 1, 2, 4 (those NBITS has;
// the others stay unused and compile away).
template <int NBITS>
struct lq_fpx_lane_words {
  uint32_t w1, w2[2], w4[4];
};

// Lane i = chunk·32 + lane's words: word w of region y is word 32·(chunk·y + w) + lane, so
// consecutive lanes read consecutive words (a warp: 128 contiguous bytes a load). i < 2^32: the
// kernels refuse layers of 2^37 weights or more.
template <int NBITS>
__device__ __forceinline__ lq_fpx_lane_words<NBITS> lq_fpx_load_words(const lq_fpx_args& a, uint32_t i) {
  // Word 0 of region y for the lane: 32·chunk·y + lane = y·(i − lane) + lane.
  const uint32_t lane = i % LQ_FPX_LANES;
  const uint64_t chunk_first = i - lane;
  lq_fpx_lane_words<NBITS> w{0, {0, 0}, {0, 0, 0, 0}};
  if constexpr ((NBITS & 1) != 0) w.w1 = __ldg(a.region1 + i);
  if constexpr ((NBITS & 2) != 0) {
    const uint32_t* at = a.region2 + (chunk_first * 2 + lane);
#pragma unroll
    for (int j = 0; j < 2; j++) w.w2[j] = __ldg(at + LQ_FPX_LANES * j);
  }
  if constexpr ((NBITS & 4) != 0) {
    const uint32_t* at = a.region4 + (chunk_first * 4 + lane);
#pragma unroll
    for (int j = 0; j < 4; j++) w.w4[j] = __ldg(at + LQ_FPX_LANES * j);
  }
  return w;
}

// The code at stream position p (0 … 31, a constant once unrolled) of the lane: region y's field
// in word p / (32/y), slot p mod (32/y), placed from the MSB down (1-bit region highest).
template <int NBITS>
__device__ __forceinline__ uint32_t lq_fpx_code(const lq_fpx_lane_words<NBITS>& w, int p) {
  // Low bit of each region's field in the code: the regions take the bits from the MSB down.
  constexpr int LOW1 = NBITS - 1, LOW2 = NBITS - (NBITS & 1) - 2;
  uint32_t code = 0;
  if constexpr ((NBITS & 1) != 0) code |= ((w.w1 >> lq_fpx_slot_shift(1, p)) & 1u) << LOW1;
  if constexpr ((NBITS & 2) != 0) code |= ((w.w2[p / 16] >> lq_fpx_slot_shift(2, p % 16)) & 3u) << LOW2;
  if constexpr ((NBITS & 4) != 0) code |= (w.w4[p / 8] >> lq_fpx_slot_shift(4, p % 8)) & 15u;
  return code;
}

// A lane's place in its chunk: rows row0 + 16k + 8d (k 0 … 3, d 0 … 1), columns col0 + 8g + h0
// (g, h0 0 … 1), with row0 = 64·slab + lane/4 and col0 = 16·tile + 2·(lane mod 4).
struct lq_fpx_lane_place {
  int64_t row0, col0;
};
__device__ __forceinline__ lq_fpx_lane_place lq_fpx_place(const lq_fpx_args& a, int64_t i) {
  // chunk < 2^32: the kernel refuses layers of 2^37 weights or more.
  const uint32_t chunk = (uint32_t)(i / LQ_FPX_LANES), lane = (uint32_t)(i % LQ_FPX_LANES);
  const uint32_t slab = chunk / a.tiles, tile = chunk - slab * a.tiles;
  return {(int64_t)slab * LQ_FPX_SLAB_ROWS + lane / 4, (int64_t)tile * LQ_FPX_TILE_COLS + 2 * (lane % 4)};
}

// The lane's eight row scales (rows row0 + 8j, j = 2k + d), as fp16 bits two to a register
// (scale2[k] holds d = 0 low, d = 1 high): fewer live registers than eight floats.
__device__ __forceinline__ void lq_fpx_load_scales(const lq_fpx_args& a, int64_t row0, uint32_t scale2[4]) {
#pragma unroll
  for (int k = 0; k < 4; k++) scale2[k] = __ldg(a.scales + row0 + 16 * k) | ((uint32_t)__ldg(a.scales + row0 + 16 * k + 8) << 16);
}
__device__ __forceinline__ float lq_fpx_scale(const uint32_t scale2[4], int k, int d) {
  return __half2float(__ushort_as_half((uint16_t)((scale2[k] >> (16 * d)) & 0xFFFFu)));
}

// The two weights of the lane's pair q = (k·2 + g)·2 + d (stream positions 2q, 2q + 1).
template <int NBITS>
__device__ __forceinline__ float2 lq_fpx_pair(const lq_fpx_args& a, const lq_fpx_lane_words<NBITS>& w, const uint32_t scale2[4], int q) {
  const float scale = lq_fpx_scale(scale2, q >> 2, q & 1);
  return make_float2(lq_fpx_weight<NBITS>(lq_fpx_code<NBITS>(w, 2 * q), a.magnitude_shift, a.unbias, scale),
                     lq_fpx_weight<NBITS>(lq_fpx_code<NBITS>(w, 2 * q + 1), a.magnitude_shift, a.unbias, scale));
}
