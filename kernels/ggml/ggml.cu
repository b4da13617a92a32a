// ggml dequant and dequant-verify for the types lmpack writes to GGUF (layouts and per-weight
// formulas in ggml-legacy.cuh and ggml-k.cuh). One generic kernel, templated on a type's lane
// decoder (contract in ggml-lanes.cuh; ggml-legacy-lanes.cuh, ggml-k-lanes.cuh), owns the
// indexing, the output and the verify reduction, as ggml-cuda's convert.cu does with its
// dequantize functions.
//
// Grid: each warp takes chunks of 256 consecutive weights (a K-quant super-block, eight 32-weight
// blocks, 256 F16/BF16 elements) over a warp-stride loop; lane t makes the 8 weights of two quads
// of each chunk from one word of the block's codes, decoding their scales once, and stores them as
// 16-byte float32 / 8-byte fp16 quads, whole sectors per warp. launch.ts launches one wave of
// blocks. Without a reference, the next chunk's block bytes are loaded while a chunk is decoded
// and stored (they are a few hundred bytes a chunk against 0.5-1 KB of stores, so without that a
// warp would wait one memory latency per chunk). Every bit pattern is a valid block, so the status
// word only ever reports an impossible shape or a misaligned buffer.
#include "ggml-legacy-lanes.cuh"
#include "ggml-k-lanes.cuh"
#include "../common/status.h"
#include "../common/verify.cuh"

// Threads per block (launch.ts's THREADS), and the blocks per multiprocessor that __launch_bounds__
// sizes the registers for (launch.ts's DEQUANT_BLOCKS_PER_SM / VERIFY_BLOCKS_PER_SM): 8 blocks of
// 256 threads (32 registers) fill an H100/A100 multiprocessor; verify's float64 statistics would
// spill in 32 and get 40 (6 blocks).
#define LQ_GGML_THREADS 256
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ == 860 || __CUDA_ARCH__ == 890 || __CUDA_ARCH__ >= 1200)
#define LQ_GGML_DEQUANT_BLOCKS 6  // 1536 threads a multiprocessor
#else
#define LQ_GGML_DEQUANT_BLOCKS 8
#endif
#define LQ_GGML_VERIFY_BLOCKS 6
// Weights per chunk: one warp's 32 lanes × 8.
#define LQ_GGML_CHUNK 256
// At most 2^31 − 1 chunks (2^39 weights, far beyond any device's memory), so chunk indices are
// 32-bit: launch.ts's MAX_WEIGHTS.
#define LQ_GGML_MAX_WEIGHTS ((int64_t)INT32_MAX * LQ_GGML_CHUNK)

// The fp16 bits of w as formats/dense/float-bits.ts f32BitsToF16Bits: round to nearest even, and a
// NaN keeps its sign and top ten payload bits (the quiet bit set when those are all zero), where
// cvt.rn.f16.f32 returns 0x7FFF for every NaN. That way the NaNs of an F16 / BF16 tensor come back
// as they were stored. Quantized types give NaN only as an FP32 instruction's result, always the
// canonical 0x7FFFFFFF, for which both give 0x7FFF (lq_ggml_half2_bits).
__device__ __forceinline__ uint32_t lq_ggml_half_bits(float w) {
  const uint32_t u = __float_as_uint(w);
  if ((u & 0x7FFFFFFFu) <= 0x7F800000u) return __half_as_ushort(__float2half_rn(w));
  const uint32_t payload = (u >> 13) & 0x3FFu;
  return ((u >> 16) & 0x8000u) | 0x7C00u | (payload != 0 ? payload : 0x200u);
}

// What a launch writes: float32 weights, fp16 weights, or none (verify only).
enum lq_ggml_output { LQ_GGML_OUT_NONE, LQ_GGML_OUT_F32, LQ_GGML_OUT_F16 };

// The float32 source weights first..first+3; in a partial chunk (kTail), clamped into the tensor
// where the quad runs past its end (those are never used).
template <bool kTail>
__device__ __forceinline__ float4 lq_ggml_reference_quad(const float* reference, uint64_t first, uint64_t total) {
  if constexpr (kTail) {
    if (first + 4 > total) {
      float r[4];
#pragma unroll
      for (int k = 0; k < 4; k++) r[k] = __ldg(reference + (first + k < total ? first + k : total - 1));
      return make_float4(r[0], r[1], r[2], r[3]);
    }
  }
  return __ldg(reinterpret_cast<const float4*>(reference + first));
}

// Stores and verifies weights first..first+3 (w[0..3]; r the reference): one 16-byte float32 or
// 8-byte fp16 store; in a partial chunk (kTail), element by element where the quad runs past the
// end of the tensor (F16/BF16 of a length not a multiple of 4, or a legacy lane past the last
// block: nothing).
template <typename D, int kOut, bool kRef, bool kTail>
__device__ __forceinline__ void lq_ggml_quad_out(const float* w, float4 r, uint64_t first, uint64_t total, void* __restrict__ out, double& max_abs, double& sq_err, double& sq_ref) {
  if (!kTail || first + 4 <= total) {  // always, in a whole chunk
    if (kOut == LQ_GGML_OUT_F32) *reinterpret_cast<float4*>(static_cast<float*>(out) + first) = make_float4(w[0], w[1], w[2], w[3]);
    if (kOut == LQ_GGML_OUT_F16) {
      const uint2 h = D::raw_nan ? make_uint2(lq_ggml_half_bits(w[0]) | lq_ggml_half_bits(w[1]) << 16, lq_ggml_half_bits(w[2]) | lq_ggml_half_bits(w[3]) << 16)
                                 : make_uint2(lq_ggml_half2_bits(w[0], w[1]), lq_ggml_half2_bits(w[2], w[3]));
      *reinterpret_cast<uint2*>(static_cast<uint16_t*>(out) + first) = h;
    }
    if (kRef) {
      lq_verify_accumulate(w[0], r.x, max_abs, sq_err, sq_ref);
      lq_verify_accumulate(w[1], r.y, max_abs, sq_err, sq_ref);
      lq_verify_accumulate(w[2], r.z, max_abs, sq_err, sq_ref);
      lq_verify_accumulate(w[3], r.w, max_abs, sq_err, sq_ref);
    }
  } else {
    const float rs[4] = {r.x, r.y, r.z, r.w};
    for (int k = 0; k < 4 && first + k < total; k++) {
      if (kOut == LQ_GGML_OUT_F32) static_cast<float*>(out)[first + k] = w[k];
      if (kOut == LQ_GGML_OUT_F16) static_cast<uint16_t*>(out)[first + k] = (uint16_t)lq_ggml_half_bits(w[k]);
      if (kRef) lq_verify_accumulate(w[k], rs[k], max_abs, sq_err, sq_ref);
    }
  }
}

// Chunk `chunk` from its loaded bytes: decode, store, verify. fp16 weights alone, of a type whose
// weight is one product of an fp16 scale, come from fp16 multiplies (ggml-lanes.cuh).
template <typename D, int kOut, bool kRef, bool kTail>
__device__ __forceinline__ void lq_ggml_chunk(const typename D::raw_t& raw, uint32_t chunk, unsigned lane, void* __restrict__ out, const float* __restrict__ reference,
                                              uint64_t total, double& max_abs, double& sq_err, double& sq_ref) {
  const uint64_t a = (uint64_t)chunk * LQ_GGML_CHUNK + 4 * D::quad_a(lane), b = a + 4 * D::quad_b;
  if constexpr (kOut == LQ_GGML_OUT_F16 && !kRef && !kTail && D::has_half) {
    uint32_t h[4];
    D::decode_half(raw, lane, h);
    *reinterpret_cast<uint2*>(static_cast<uint16_t*>(out) + a) = make_uint2(h[0], h[1]);
    *reinterpret_cast<uint2*>(static_cast<uint16_t*>(out) + b) = make_uint2(h[2], h[3]);
  } else {
    float4 ra = {}, rb = {};
    if (kRef) {
      ra = lq_ggml_reference_quad<kTail>(reference, a, total);
      rb = lq_ggml_reference_quad<kTail>(reference, b, total);
    }
    float w[8];
    D::decode(raw, lane, w);
    lq_ggml_quad_out<D, kOut, kRef, kTail>(w, ra, a, total, out, max_abs, sq_err, sq_ref);
    lq_ggml_quad_out<D, kOut, kRef, kTail>(w + 4, rb, b, total, out, max_abs, sq_err, sq_ref);
  }
}

// Warp `warp` of `n_warps` (lane `lane`): chunks warp, warp + n_warps, ... of the tensor's whole
// chunks, then the partial last chunk if it is this warp's. Without a reference, the next chunk's
// bytes are loaded while this one is decoded and stored (the load clamped to the last whole chunk
// rather than skipped, so that no load depends on a branch); verify has the reference loads in
// flight instead, and a prefetch's registers would cost it occupancy.
template <typename D, int kOut, bool kRef>
__device__ __forceinline__ void lq_ggml_warp_chunks(const uint8_t* __restrict__ bytes, void* __restrict__ out, const float* __restrict__ reference, int64_t n_blocks,
                                                    uint64_t total, uint32_t warp, uint32_t n_warps, unsigned lane, double& max_abs, double& sq_err, double& sq_ref) {
  const uint32_t n_whole = (uint32_t)(total / LQ_GGML_CHUNK), n_chunks = (uint32_t)((total + LQ_GGML_CHUNK - 1) / LQ_GGML_CHUNK);
  uint32_t chunk = warp;
  if (chunk < n_whole) {
    typename D::raw_t raw = D::template load<false>(bytes, chunk, lane, n_blocks, total);
    for (;;) {
      const uint32_t next = chunk + n_warps;  // no overflow: n_warps and n_whole are below 2^31
      if (kRef) {
        lq_ggml_chunk<D, kOut, kRef, false>(raw, chunk, lane, out, reference, total, max_abs, sq_err, sq_ref);
        chunk = next;
        if (chunk >= n_whole) break;
        raw = D::template load<false>(bytes, chunk, lane, n_blocks, total);
      } else {
        const typename D::raw_t ahead = D::template load<false>(bytes, next < n_whole ? next : n_whole - 1, lane, n_blocks, total);
        lq_ggml_chunk<D, kOut, kRef, false>(raw, chunk, lane, out, reference, total, max_abs, sq_err, sq_ref);
        chunk = next;
        if (chunk >= n_whole) break;
        raw = ahead;
      }
    }
  }
  if (chunk < n_chunks) lq_ggml_chunk<D, kOut, kRef, true>(D::template load<true>(bytes, chunk, lane, n_blocks, total), chunk, lane, out, reference, total, max_abs, sq_err, sq_ref);
}

// bytes: n_blocks blocks of qk weights each, back to back, as the GGUF tensor stores them (16-byte
// aligned, as cuMemAlloc gives). out (nullable): n_blocks · qk weights, float32 (16-byte aligned),
// or fp16 bits when out_f16 (RNE from the float32 value; 8-byte aligned). reference (nullable;
// kVerify kernels only): float32 source weights to compare with (16-byte aligned); partials (one
// per block) receive max |w − ref|, Σ(w − ref)², Σ ref². The chunks and lanes do not depend on
// the output, so verify alone and verify with weights make the same partials. blockDim.x: a
// multiple of 32.
template <typename D, int qk, bool kVerify>
__device__ __forceinline__ void lq_ggml_dequant_verify(const uint8_t* __restrict__ bytes, void* __restrict__ out, const float* __restrict__ reference,
                                                       lq_verify_partial* __restrict__ partials, int64_t n_blocks, int32_t out_f16, uint32_t* status) {
  static_assert(qk == 1 || LQ_GGML_CHUNK % qk == 0, "a chunk is whole blocks");
  const uintptr_t out_alignment = out_f16 != 0 ? 8 : 16;
  if (n_blocks <= 0 || n_blocks > LQ_GGML_MAX_WEIGHTS / qk || blockDim.x % 32 != 0 || (uint64_t)gridDim.x * blockDim.x / 32 > INT32_MAX ||
      ((uintptr_t)bytes | (uintptr_t)reference) % 16 != 0 || (uintptr_t)out % out_alignment != 0) {
    if (threadIdx.x == 0 && blockIdx.x == 0) lq_report(status, LQ_STATUS_SHAPE);
    return;
  }
  const uint64_t total = (uint64_t)n_blocks * qk;
  const unsigned lane = threadIdx.x % 32;
  const uint32_t warp = (uint32_t)(((uint64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32), n_warps = (uint32_t)((uint64_t)gridDim.x * blockDim.x / 32);
  double max_abs = 0.0, sq_err = 0.0, sq_ref = 0.0;
  // One loop per output kind, so each keeps only its own registers live.
  if (kVerify && reference != nullptr) {
    if (out == nullptr) lq_ggml_warp_chunks<D, LQ_GGML_OUT_NONE, true>(bytes, out, reference, n_blocks, total, warp, n_warps, lane, max_abs, sq_err, sq_ref);
    else if (out_f16 != 0) lq_ggml_warp_chunks<D, LQ_GGML_OUT_F16, true>(bytes, out, reference, n_blocks, total, warp, n_warps, lane, max_abs, sq_err, sq_ref);
    else lq_ggml_warp_chunks<D, LQ_GGML_OUT_F32, true>(bytes, out, reference, n_blocks, total, warp, n_warps, lane, max_abs, sq_err, sq_ref);
  } else if (out != nullptr) {
    if (out_f16 != 0) lq_ggml_warp_chunks<D, LQ_GGML_OUT_F16, false>(bytes, out, reference, n_blocks, total, warp, n_warps, lane, max_abs, sq_err, sq_ref);
    else lq_ggml_warp_chunks<D, LQ_GGML_OUT_F32, false>(bytes, out, reference, n_blocks, total, warp, n_warps, lane, max_abs, sq_err, sq_ref);
  }
  if constexpr (kVerify) {
    __shared__ double shared[3 * 32];
    if (partials != nullptr) lq_verify_block_reduce(max_abs, sq_err, sq_ref, shared, partials);
  }
}

// Two named kernels per type (the type in ggml's spelling, as its block_<type> and
// dequantize_row_<type>), with its lane decoder lq_ggml_lanes_<type>: the host looks kernels up by
// name, and a template cannot have C linkage.
//   lq_ggml_<type>_dequant          weights only, at full occupancy (LQ_GGML_DEQUANT_BLOCKS)
//   lq_ggml_<type>_dequant_verify   weights and/or verify; the float64 statistics take more
//                                   registers (LQ_GGML_VERIFY_BLOCKS), and a verify launch, with
//                                   or without the weights, always runs this one
// test/kernels/ggml.test.ts reads these lines: the types, and each block size.
#define LQ_GGML_KERNEL(type, qk)                                                                                                    \
  extern "C" __global__ void __launch_bounds__(LQ_GGML_THREADS, LQ_GGML_DEQUANT_BLOCKS)                                              \
      lq_ggml_##type##_dequant(const uint8_t* __restrict__ bytes, void* __restrict__ out, int64_t n_blocks, int32_t out_f16, uint32_t* status) { \
    lq_ggml_dequant_verify<lq_ggml_lanes_##type, qk, false>(bytes, out, nullptr, nullptr, n_blocks, out_f16, status);               \
  }                                                                                                                                 \
  extern "C" __global__ void __launch_bounds__(LQ_GGML_THREADS, LQ_GGML_VERIFY_BLOCKS) lq_ggml_##type##_dequant_verify(             \
      const uint8_t* __restrict__ bytes, void* __restrict__ out, const float* __restrict__ reference,                               \
      lq_verify_partial* __restrict__ partials, int64_t n_blocks, int32_t out_f16, uint32_t* status) {                              \
    lq_ggml_dequant_verify<lq_ggml_lanes_##type, qk, true>(bytes, out, reference, partials, n_blocks, out_f16, status);             \
  }

LQ_GGML_KERNEL(f16, 1)
LQ_GGML_KERNEL(bf16, 1)
LQ_GGML_KERNEL(q8_0, QK8_0)
LQ_GGML_KERNEL(q4_0, QK4_0)
LQ_GGML_KERNEL(q4_1, QK4_1)
LQ_GGML_KERNEL(q5_0, QK5_0)
LQ_GGML_KERNEL(q5_1, QK5_1)
LQ_GGML_KERNEL(q2_K, QK_K)
LQ_GGML_KERNEL(q3_K, QK_K)
LQ_GGML_KERNEL(q4_K, QK_K)
LQ_GGML_KERNEL(q5_K, QK_K)
LQ_GGML_KERNEL(q6_K, QK_K)
LQ_GGML_KERNEL(tq1_0, QK_K)
LQ_GGML_KERNEL(tq2_0, QK_K)
