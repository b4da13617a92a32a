// What the lane decoders (ggml-legacy-lanes.cuh, ggml-k-lanes.cuh) share: their contract, the
// loads, and the exact small-integer → float / fp16 conversions.
//
// The kernel (ggml.cu) hands each warp chunks of 256 consecutive weights: one K-quant super-block,
// eight 32-weight blocks, or 256 F16/BF16 elements. Lane t of the warp makes 8 of them, as two
// quads (4 consecutive weights): quad quad_a(t) and quad quad_a(t) + quad_b of the chunk. Each
// type picks the two quads whose bits sit in one 32-bit word of its block (the low and high
// nibbles of 4 bytes, say), so that a lane loads a word, not 8 bytes, and decodes the scales of
// its two quads once; and the quads of the lanes are such that every store of a warp writes whole
// 32-byte sectors. A decoder is a struct with
//
//   raw_t                          the block bytes a lane needs, in registers
//   quad_a(lane), quad_b           its quads
//   load<kTail>(bytes, chunk, lane, n_blocks, total) → raw_t
//                                  chunk < the chunk count; in the partial last chunk (kTail:
//                                  a legacy type of n_blocks % 8 != 0 blocks, F16/BF16 of a
//                                  length not a multiple of 256) addresses past the end are
//                                  clamped into the tensor, and the kernel discards those weights
//   decode(raw, lane, w)           w[0..3] = quad a, w[4..7] = quad b, as floats
//   raw_nan                        true when a weight can be a NaN from the data itself (F16,
//                                  BF16), whose fp16 then keeps its payload (ggml.cu)
//   has_half, decode_half(raw, lane, h)
//                                  optionally, the fp16 bits of the 8 weights directly (h[0..1]
//                                  quad a, h[2..3] quad b, two a word): the bits that rounding
//                                  decode's floats gives
//
// decode computes each weight with the float operations of ggml-legacy.cuh / ggml-k.cuh (the
// per-weight definitions, as the TS codecs), on the same operands: only the integer work (finding
// a weight's bits, decoding its scales once per lane instead of once per weight) and the exact
// integer → float conversion differ. Where the reference multiplies and then adds (q·d + m,
// (dl·q) − ml), the product is exact in float32 (formats/ggml/block-math.ts), so the one rounding
// of __fmaf_rn is the rounding of the addition: the same value, signed zeros included. NaNs: every
// NaN an FP32 (or fp16) instruction returns is the canonical one on NVIDIA GPUs, whatever NaN went
// in, so a NaN scale gives the same weights either way.
#pragma once
#include <stdint.h>
#include <cuda_fp16.h>
#include "../common/half2-bits.cuh"

// Loads through the read-only path. The block structs have 2-byte alignment (cuMemAlloc's
// 256-byte alignment of the tensor keeps that for every block), so a word of a type whose block
// size is not a multiple of 4 is read as two 16-bit halves; ggml.cu checks the tensor's
// alignment before anything is read.
__device__ __forceinline__ uint32_t lq_ggml_u8(const uint8_t* p) {
  return __ldg(p);
}
__device__ __forceinline__ uint32_t lq_ggml_u16(const uint8_t* p) {
  return __ldg(reinterpret_cast<const unsigned short*>(p));
}
// 4 bytes from a 2-aligned address, little-endian.
__device__ __forceinline__ uint32_t lq_ggml_u32_at2(const uint8_t* p) {
  return lq_ggml_u16(p) | lq_ggml_u16(p + 2) << 16;
}
// 4 bytes from a 4-aligned address.
__device__ __forceinline__ uint32_t lq_ggml_u32(const uint8_t* p) {
  return __ldg(reinterpret_cast<const unsigned int*>(p));
}

// The bits 0x4B000000 | x are the float 2^23 + x for integers 0 ≤ x < 2^23, and subtracting
// 2^23 + bias from it gives x − bias exactly (both near 2^23; x = bias gives +0, as (float)0
// does): an OR or a PRMT and an FADD, where I2F would take the conversion unit (a fraction of the
// FP32 rate). Likewise the fp16 bits 0x6400 | x are 1024 + x for x < 1024. The exponent bytes sit
// in constant memory, not in an immediate, so that each PRMT can keep its byte selector as its one
// immediate operand and read them from a register: byte 4 (of PRMT's eight) 0x00, byte 5 0x64,
// byte 6 0x00, byte 7 0x4B.
__constant__ uint32_t lq_ggml_exponents = 0x4B006400u;

__device__ __forceinline__ float lq_ggml_int_float(uint32_t x, float bias) {
  return __fsub_rn(__uint_as_float(0x4B000000u | x), 8388608.0f + bias);
}

// (byte k of word) − bias as a float, exactly: one PRMT puts the byte under the exponent (k a
// constant once unrolled, or a loop-invariant register).
__device__ __forceinline__ float lq_ggml_byte_float(uint32_t word, uint32_t k, float bias) {
  return __fsub_rn(__uint_as_float(__byte_perm(word, lq_ggml_exponents, 0x7440u | k)), 8388608.0f + bias);
}

// A scale field as a float for arithmetic: cvt.f32.f16, exact for every finite value and
// infinity. A NaN field's payload is lost here, but every product with it is the canonical NaN
// anyway, as it is from lq_ggml_half_to_float's payload-keeping NaN.
__device__ __forceinline__ float lq_ggml_scale_float(uint32_t bits) {
  return __half2float(__ushort_as_half((unsigned short)bits));
}

// The low four bits of `bits` spread over the bytes: bit k → bit 4 of byte k (the fifth bits of
// four Q5_0 / Q5_1 codes). The four shifted copies that the multiplication adds do not overlap,
// so nothing carries.
__device__ __forceinline__ uint32_t lq_ggml_bits_to_bit4(uint32_t bits) {
  return ((bits & 0xFu) * 0x02040810u) & 0x10101010u;
}

// Two weights as fp16 bits, lo in the low half: one cvt.rn.f16x2.f32, round to nearest even as
// __float2half_rn. A NaN becomes 0x7FFF, which is what ggml.cu's lq_ggml_half_bits gives the
// canonical NaN of an arithmetic result; decoders with raw_nan use that function instead.
__device__ __forceinline__ uint32_t lq_ggml_half2_bits(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return (uint32_t)__half_as_ushort(__low2half(h)) | (uint32_t)__half_as_ushort(__high2half(h)) << 16;
}

// decode_half of the types whose weight is one product (q − bias)·d of a small integer code and
// the fp16 scale d (Q8_0, Q4_0, Q5_0, TQ2_0): that product is exact in float32, so the fp16
// multiply's one rounding (RNE, subnormals kept: mul.rn.f16x2 without .ftz, overflow to ±inf)
// gives the bits that rounding the float32 weight gives, for two weights an instruction and no
// conversion. Code bytes 2p and 2p + 1 of `word` (< 256) become the fp16 pair 1024 + code by a
// PRMT, and subtracting 1024 + bias from it is exact, −0 never arising where (float)0 is +0.
template <int bias>
__device__ __forceinline__ uint32_t lq_ggml_scaled_pair(uint32_t word, int p, __half2 d2) {
  static_assert(bias >= 0 && bias < 256, "1024 + bias is an fp16 integer with exponent 10");
  const __half2 codes = lq_bits_as_half2(__byte_perm(word, lq_ggml_exponents, p == 0 ? 0x5150u : 0x5352u));
  const __half2 offset = lq_bits_as_half2((0x6400u + bias) * 0x00010001u);
  return lq_half2_as_bits(__hmul2_rn(__hsub2(codes, offset), d2));
}
// The fp16 scale d in both halves.
__device__ __forceinline__ __half2 lq_ggml_scale_half2(uint32_t bits) {
  return lq_bits_as_half2((bits & 0xFFFFu) * 0x00010001u);
}
