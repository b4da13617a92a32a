// ggml dequant and dequant-verify for the types lmpack writes to GGUF (layouts and formulas in
// ggml-legacy.cuh and ggml-k.cuh). The design is ggml-cuda's (dequantize.cuh / convert.cu): the
// per-type device code is one small function giving weight e of a block, and one generic kernel,
// templated on it, owns the indexing, the output and the verify reduction.
//
// Grid: one thread per weight over a grid-stride loop; the launch configuration is chosen in
// launch.ts. Neighbouring threads take neighbouring weights, so the float32 / fp16 stores and the
// reference loads are coalesced, and the threads of one block read the same few bytes of a block's
// scale fields, which L1 serves. Every bit pattern is a valid block, so the status word only ever
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

// bytes: n_blocks blocks of block_t (qk weights each), back to back, as the GGUF tensor stores them.
// out (nullable): n_blocks · qk weights, float32, or fp16 bits when out_f16 (RNE from the float32
// value). reference (nullable): float32 source weights to compare with; partials (one per block)
// receive max |w − ref|, Σ(w − ref)², Σ ref².
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
  const uint64_t total = (uint64_t)n_blocks * qk, stride = (uint64_t)gridDim.x * blockDim.x;
  const bool f16 = out_f16 != 0;
  double max_abs = 0.0, sq_err = 0.0, sq_ref = 0.0;
  for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
    const float w = dequant(blocks + i / qk, (int)(i % qk));
    if (out != nullptr) lq_ggml_store(out, (int64_t)i, w, f16);
    if (reference != nullptr) {
      const double r = reference[i], e = (double)w - r;
      max_abs = fmax(max_abs, fabs(e));
      sq_err += e * e;
      sq_ref += r * r;
    }
  }
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
