// ggml dequant and dequant-verify for the types lmpack writes to GGUF (layouts and formulas in
// ggml-legacy.cuh and ggml-k.cuh). The design is ggml-cuda's (dequantize.cuh / convert.cu): the
// per-type device code is one small function giving weight e of a block, and one generic kernel,
// templated on it, owns the indexing, the output and the verify reduction.
//
// Grid: one thread per piece of 4 or 8 consecutive weights over a grid-stride loop (lq_ggml_pieces);
// the launch configuration is chosen in launch.ts. Neighbouring threads take neighbouring pieces,
// so the float32 / fp16 stores and the reference loads are 16-byte and coalesced, and the threads
// of one warp read the same few bytes of a block's scale fields, which L1 serves. Every bit pattern is a valid block, so the status word only ever
// reports an impossible shape.
#include "ggml-legacy.cuh"
#include "ggml-k.cuh"
#include "../common/status.h"
#include "../common/verify.cuh"

// Threads per block; the shared-memory reduction of the verify partials is sized for it.
#define LQ_GGML_THREADS 256

// lq_store, except for a NaN written as fp16: cvt.rn.f16.f32 returns the canonical NaN 0x7FFF for
// every NaN, while the reference of the fp16 output (float-bits.ts f32BitsToF16Bits) keeps the
// sign and the top ten payload bits, and sets the quiet bit where those are all zero. That way the
// NaNs of an F16 tensor come back as they were stored. Quantized types give NaN only from a NaN
// scale field.
__device__ __forceinline__ void lq_ggml_store(void* out, int64_t i, float w, bool f16) {
  const uint32_t u = __float_as_uint(w);
  if (f16 && (u & 0x7FFFFFFFu) > 0x7F800000u) {
    const uint32_t payload = (u >> 13) & 0x3FFu;
    static_cast<uint16_t*>(out)[i] = (uint16_t)(((u >> 16) & 0x8000u) | 0x7C00u | (payload != 0 ? payload : 0x200u));
  } else {
    lq_store(out, i, w, f16);
  }
}

// The fp16 bits lq_ggml_store writes for w.
__device__ __forceinline__ uint32_t lq_ggml_half_bits(float w) {
  const uint32_t u = __float_as_uint(w);
  if ((u & 0x7FFFFFFFu) <= 0x7F800000u) return __half_as_ushort(__float2half_rn(w));
  const uint32_t payload = (u >> 13) & 0x3FFu;
  return ((u >> 16) & 0x8000u) | 0x7C00u | (payload != 0 ? payload : 0x200u);
}

// Thread i of a grid-stride loop takes P consecutive weights (P = 8 with fp16 output: one 16-byte
// store; P = 4 otherwise: one 16-byte float32 store or reference load), so each store and
// reference load of a warp is one contiguous 512-byte span; with P = 8 a warp is exactly one
// 256-weight K-quant super-block (or eight 32-weight blocks), whose scale bytes L1 serves.
template <typename block_t, int qk, float (*dequant)(const block_t*, int), int P>
__device__ __forceinline__ void lq_ggml_pieces(const block_t* __restrict__ blocks, void* __restrict__ out, const float* __restrict__ reference,
                                               uint64_t total, bool f16, double& max_abs, double& sq_err, double& sq_ref) {
  static_assert(qk == 1 || qk % P == 0, "a piece lies in one block, or in P single-weight blocks");
  const uint64_t stride = (uint64_t)gridDim.x * blockDim.x * P;
  for (uint64_t i = ((uint64_t)blockIdx.x * blockDim.x + threadIdx.x) * P; i < total; i += stride) {
    float w[P];
    if (i + P <= total) {
      const block_t* b = blocks + i / qk;
      const int e0 = (int)(i % qk);
#pragma unroll
      for (int j = 0; j < P; j++) w[j] = qk == 1 ? dequant(b + j, 0) : dequant(b, e0 + j);
      if (out != nullptr && f16) {
        uint32_t h[P / 2];
#pragma unroll
        for (int j = 0; j < P / 2; j++) h[j] = lq_ggml_half_bits(w[2 * j]) | (lq_ggml_half_bits(w[2 * j + 1]) << 16);
        uint16_t* to = static_cast<uint16_t*>(out) + i;
        if constexpr (P == 8) *reinterpret_cast<uint4*>(to) = make_uint4(h[0], h[1], h[2], h[3]);
        else *reinterpret_cast<uint2*>(to) = make_uint2(h[0], h[1]);
      } else if (out != nullptr) {
        lq_store_vector<P>(out, (int64_t)i, w, false);
      }
      if (reference != nullptr) {
#pragma unroll
        for (int j = 0; j < P; j += 4) {
          const float4 r = *reinterpret_cast<const float4*>(reference + i + j);
          lq_verify_accumulate(w[j], r.x, max_abs, sq_err, sq_ref);
          lq_verify_accumulate(w[j + 1], r.y, max_abs, sq_err, sq_ref);
          lq_verify_accumulate(w[j + 2], r.z, max_abs, sq_err, sq_ref);
          lq_verify_accumulate(w[j + 3], r.w, max_abs, sq_err, sq_ref);
        }
      }
    } else {
      // The ragged end of an F16 / BF16 tensor whose length is not a multiple of P.
      for (uint64_t k = i; k < total; k++) {
        const float v = dequant(blocks + k / qk, (int)(k % qk));
        if (out != nullptr) lq_ggml_store(out, (int64_t)k, v, f16);
        if (reference != nullptr) lq_verify_accumulate(v, reference[k], max_abs, sq_err, sq_ref);
      }
    }
  }
}

// bytes: n_blocks blocks of block_t (qk weights each), back to back, as the GGUF tensor stores them.
// out (nullable): n_blocks · qk weights, float32, or fp16 bits when out_f16 (RNE from the float32
// value). reference (nullable): float32 source weights to compare with; partials (one per block)
// receive max |w − ref|, Σ(w − ref)², Σ ref². The piece width follows the output type only, so
// verify alone and verify with weights make the same partials.
template <typename block_t, int qk, float (*dequant)(const block_t*, int)>
__device__ __forceinline__ void lq_ggml_dequant_verify(const uint8_t* __restrict__ bytes, void* __restrict__ out, const float* __restrict__ reference,
                                                       lq_verify_partial* __restrict__ partials, int64_t n_blocks, int32_t out_f16, uint32_t* status) {
  static_assert(qk > 0 && (qk & (qk - 1)) == 0, "qk must be a power of two (a shift and a mask per weight)");
  __shared__ double shared[3 * LQ_GGML_THREADS];
  if (n_blocks <= 0 || n_blocks > INT64_MAX / qk) {
    if (threadIdx.x == 0 && blockIdx.x == 0) lq_report(status, LQ_STATUS_SHAPE);
    return;
  }
  // The structs hold bytes and 16-bit words only: 2-byte alignment, which cuMemAlloc exceeds.
  const block_t* blocks = reinterpret_cast<const block_t*>(bytes);
  const uint64_t total = (uint64_t)n_blocks * qk;
  const bool f16 = out_f16 != 0;
  double max_abs = 0.0, sq_err = 0.0, sq_ref = 0.0;
  if (f16) lq_ggml_pieces<block_t, qk, dequant, 8>(blocks, out, reference, total, f16, max_abs, sq_err, sq_ref);
  else lq_ggml_pieces<block_t, qk, dequant, 4>(blocks, out, reference, total, f16, max_abs, sq_err, sq_ref);
  if (partials != nullptr) lq_verify_block_reduce(max_abs, sq_err, sq_ref, shared, partials);
}

// One named kernel per type, lq_ggml_<type>_dequant_verify (the type in ggml's spelling, as its
// block_<type> and dequantize_row_<type>): the host looks kernels up by name, and a template cannot
// have C linkage. test/kernels/ggml.test.ts reads these lines: the types, and each block size.
#define LQ_GGML_KERNEL(type, qk)                                                                                                    \
  extern "C" __global__ void __launch_bounds__(LQ_GGML_THREADS) lq_ggml_##type##_dequant_verify(                                    \
      const uint8_t* __restrict__ bytes, void* __restrict__ out, const float* __restrict__ reference,                               \
      lq_verify_partial* __restrict__ partials, int64_t n_blocks, int32_t out_f16, uint32_t* status) {                              \
    lq_ggml_dequant_verify<lq_block_##type, qk, lq_ggml_##type>(bytes, out, reference, partials, n_blocks, out_f16, status);       \
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
