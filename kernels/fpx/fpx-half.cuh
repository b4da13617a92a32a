// FPx codes to fp16 pairs with packed integer and half2 operations (FP6-LLM's bit-level dequant,
// ../shared/ref/signround-gptq-fp6.md), for formats of at most 4 exponent bits: every decoded
// value, and every value times 2^(15 − bias), is then an fp16 number exactly.
//
// Why: the float32 path of fpx.cuh (lq_fpx_weight) peels one code at a time, ~11 SASS
// instructions a weight (FP6 fp16 round: 495 instructions for 32 weights, sm_90), which kept the
// fp16 kernel short of its streaming ceiling. Here a word's shift handles four codes at once and
// a half2 product two weights: ~3.5 instructions a weight.
//
// The layout puts the fields of codes 4j … 4j + 3 of a lane at the same place in four bytes of a
// region's word (fpx.cuh lq_fpx_slot_shift: code 4j + c, c = 0 … 3, has its field of region y
// at the top of byte (1, 3, 0, 2)[c] once the word is shifted left by y·(j mod 8/y)), so one shift
// and one select per region give four codes, each left-aligned in its byte:
//
//   byte = sign | exponent | mantissa | garbage below (bits the masks below drop)
//
// Bytes 1 and 3 are the pair of codes 4j, 4j + 1 (the fp16 pair of stream positions 2q, 2q + 1
// for q = 2j, low half first), bytes 0 and 2 after a shift left by 8 the pair q = 2j + 1. In each
// half, the sign is already at bit 15; the magnitude (ebits + mbits bits from bit 14 down) moves
// right by 5 − ebits, which puts e at the bottom of fp16's exponent and m at the top of its
// mantissa: an fp16 worth decode(code)·2^(bias − 15) exactly (e = 0: an fp16 subnormal of the
// same m/2^mbits). A product by 2^(15 − bias) (exact) restores decode(code), and one by the
// scale rounds decode·scale once to fp16. That is the reference's fp16 output: the float32
// product decode·f32(scale) is exact (≤ 6 significant bits times 11, far from float32's range
// limits), so rounding it to fp16 is rounding the exact product, which mul.rn.f16x2 does (fp16
// arithmetic keeps subnormals; __hmul2_rn is never contracted into an fma).
#pragma once
#include "fpx.cuh"

// The largest exponent width this path takes: ebits ≤ 4 keeps decode(code) and 2^(15 − bias)
// within fp16 (ebits = 5 would reach 2^16).
#define LQ_FPX_HALF_MAX_EBITS 4

// Four codes, each left-aligned in a byte (byte (1, 3, 0, 2)[c] holds code 4j + c), for group
// j = 0 … 7 of the lane (a constant once unrolled): the region words shifted so the group's fields
// sit at the top of the bytes, then each region's field moved below the fields above it (shift
// right by the code bits of the wider-placed regions: 1, then 2) and selected under their mask.
template <int NBITS>
__device__ __forceinline__ uint32_t lq_fpx_group_bytes(const lq_fpx_lane_words<NBITS>& w, int j) {
  // Bits of the code above region 2's field and above region 4's field.
  constexpr int ABOVE2 = NBITS & 1, ABOVE4 = (NBITS & 1) + (NBITS & 2);
  // A shift left by s ≥ 0 or right by −s.
  auto shifted = [](uint32_t word, int s) { return s >= 0 ? word << s : word >> -s; };
  uint32_t bytes = 0;
  if constexpr ((NBITS & 4) != 0) bytes = shifted(w.w4[j / 2], 4 * (j % 2) - ABOVE4);
  if constexpr ((NBITS & 2) != 0) {
    const uint32_t r2 = shifted(w.w2[j / 4], 2 * (j % 4) - ABOVE2);
    // Region 2's two bits at bits (7 − ABOVE2, 6 − ABOVE2) of each byte; without region 4 the
    // bits below are garbage anyway.
    constexpr uint32_t M2 = (0xC0u >> ABOVE2) * 0x01010101u;
    bytes = (NBITS & 4) != 0 ? (r2 & M2) | (bytes & ~M2) : r2;
  }
  if constexpr ((NBITS & 1) != 0) bytes = (shifted(w.w1, j) & 0x80808080u) | (bytes & 0x7F7F7F7Fu);
  return bytes;
}

// The fp16 pair of codes in bytes 1 and 3 of `bytes` (low half from byte 1): sign kept at bit 15,
// magnitude shifted right by `right` = 5 − ebits, everything else dropped. The result as half2
// is decode(code)·2^(bias − 15) for both codes.
template <int NBITS>
__device__ __forceinline__ uint32_t lq_fpx_half_bits(uint32_t bytes, uint32_t right) {
  // The magnitude's NBITS − 1 bits under bit 15 of each half.
  constexpr uint32_t MAG = ((1u << (NBITS - 1)) - 1u) << (16 - NBITS);
  return (bytes & 0x80008000u) | ((bytes & (MAG | MAG << 16)) >> right);
}

// A pair from lq_fpx_half_bits as the fp16 bits of its two weights (low half: stream position
// 2q), decode·scale rounded once. unbias2: 2^(15 − bias) in both halves; scale2: the pair's row
// scale in both halves.
__device__ __forceinline__ uint32_t lq_fpx_half_pair(uint32_t half_bits, __half2 unbias2, __half2 scale2) {
  const __half2 decoded = __hmul2_rn(*reinterpret_cast<const __half2*>(&half_bits), unbias2);
  const __half2 weights = __hmul2_rn(decoded, scale2);
  return *reinterpret_cast<const uint32_t*>(&weights);
}

// 2^(15 − bias) in both halves of a half2, as bits (bias = 2^(ebits − 1) − 1 ≤ 7 for the
// widths this path takes, so the exponent field 30 − bias is a normal fp16's; other widths get a
// value they never use).
__device__ __forceinline__ uint32_t lq_fpx_half_unbias_bits(int ebits) {
  const uint32_t bits = (uint32_t)(30 - ((1 << (min(ebits, LQ_FPX_HALF_MAX_EBITS) - 1)) - 1)) << 10;
  return bits | bits << 16;
}

// The 16 pairs of the lane as fp16 bits, pair q in out[q]: group j gives pairs 2j (bytes 1, 3)
// and 2j + 1 (bytes 0, 2). scale2[k] holds the fp16 scales of rows 16k (low) and 16k + 8 (high),
// the d = 0 and d = 1 rows of the pairs q with q >> 2 = k (fpx.cuh lq_fpx_load_scales).
template <int NBITS>
__device__ __forceinline__ void lq_fpx_half_pairs(const lq_fpx_lane_words<NBITS>& w, const uint32_t scale2[4], uint32_t right, uint32_t unbias2_bits, uint32_t out[16]) {
  const __half2 unbias2 = *reinterpret_cast<const __half2*>(&unbias2_bits);
#pragma unroll
  for (int j = 0; j < 8; j++) {
    const uint32_t bytes = lq_fpx_group_bytes<NBITS>(w, j);
    const __half2 scales = *reinterpret_cast<const __half2*>(&scale2[j / 2]);
    out[2 * j] = lq_fpx_half_pair(lq_fpx_half_bits<NBITS>(bytes, right), unbias2, __low2half2(scales));
    out[2 * j + 1] = lq_fpx_half_pair(lq_fpx_half_bits<NBITS>(bytes << 8, right), unbias2, __high2half2(scales));
  }
}

// The two float32 weights of the lane's pair q (0 … 15, a constant once unrolled) from the same
// decode, for verify: decode(code) as fp16 (exact), widened (exact), times the float32 scale: the
// reference's decode·f32(scale), as lq_fpx_weight gives it.
template <int NBITS>
__device__ __forceinline__ float2 lq_fpx_half_weights(const lq_fpx_lane_words<NBITS>& w, int q, uint32_t right, uint32_t unbias2_bits, float scale) {
  const uint32_t bytes = lq_fpx_group_bytes<NBITS>(w, q / 2);
  const uint32_t bits = lq_fpx_half_bits<NBITS>((q & 1) != 0 ? bytes << 8 : bytes, right);
  const __half2 decoded = __hmul2_rn(*reinterpret_cast<const __half2*>(&bits), *reinterpret_cast<const __half2*>(&unbias2_bits));
  const float2 f = __half22float2(decoded);
  return make_float2(__fmul_rn(f.x, scale), __fmul_rn(f.y, scale));
}

// Pins the byte places above to lq_fpx_slot_shift: for every code width, code position p of the
// lane and region y of the width, the field sits where lq_fpx_group_bytes takes it from.
__host__ __device__ constexpr bool lq_fpx_group_places_match() {
  for (int y = 1; y <= 4; y *= 2) {
    for (int p = 0; p < 32; p++) {
      const int j = p / 4, c = p % 4, byte = c == 0 ? 1 : c == 1 ? 3 : c == 2 ? 0 : 2;
      // Field's top bit after the shift left by y·(j mod 8/y): the byte's bit 7.
      const int top = lq_fpx_slot_shift(y, p % (32 / y)) + y - 1 + y * (j % (8 / y));
      if (top != 8 * byte + 7) return false;
    }
  }
  return true;
}
static_assert(lq_fpx_group_places_match(), "lq_fpx_group_bytes must find every region's field at the top of its code's byte");
