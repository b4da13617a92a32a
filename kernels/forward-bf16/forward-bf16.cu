// The Llama-family decoder forward on the GPU at the precision models ship in: weights stored as
// bf16 (2 bytes each, a quarter of kernels/forward's float64), activations and every sum in
// float32. The products are cuBLAS SGEMMs (float32 in, float32 accumulation, no TF32) on the
// weights of one linear widened to float32 just before its product (lq_fb_widen), so the weights
// stay bf16 in memory. kernels/forward-bf16/gpu-forward-bf16.ts orders the launches.
//
// The steps are model/llama-forward.ts's (the float64 CPU reference) in float32: RMSNorm with
// its Σx² in a fixed tree, rotary from a float32 table, the causal softmax with Σexp in a fixed
// tree, SwiGLU. Per-position NLL reads the float32 logits and sums in float64, so perplexity
// loses nothing to the final reduction. Results agree with the float64 forward to float32
// rounding carried through the layers (test/kernels/forward-bf16.test.ts states the bound), and
// are the same bits run to run.
//
// The host (gpu-forward-bf16.ts) checks every size and buffer extent before a launch; the status
// word (common/status.h) is the second line for token ids and block shapes.
#include <stdint.h>
#include "../common/status.h"
#include "../common/block-reduce.cuh"

#define LQ_FB_THREADS 256

// bf16 bits → float32 (exact), `count` values: a linear's weight before its SGEMM.
extern "C" __global__ void __launch_bounds__(LQ_FB_THREADS) lq_fb_widen(const uint16_t* __restrict__ bf16, float* __restrict__ out, int64_t count) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= count) return;
  out[i] = __uint_as_float((uint32_t)bf16[i] << 16);
}

// hidden[t][j] = embed[ids[t]][j] (bf16 rows widened); an id outside the vocabulary sets the
// index bit and leaves NaN, never a read.
extern "C" __global__ void __launch_bounds__(LQ_FB_THREADS) lq_fb_embed(
    const int32_t* __restrict__ ids, const uint16_t* __restrict__ embed, float* __restrict__ hidden,
    int64_t tokens, int64_t hidden_size, int64_t vocab, uint32_t* __restrict__ status) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= tokens * hidden_size) return;
  const int64_t t = i / hidden_size, j = i % hidden_size;
  const int32_t id = ids[t];
  if (id < 0 || (int64_t)id >= vocab) {
    lq_report(status, LQ_STATUS_INDEX_RANGE);
    hidden[i] = __int_as_float(0x7fc00000);
    return;
  }
  hidden[i] = __uint_as_float((uint32_t)embed[(int64_t)id * hidden_size + j] << 16);
}

// One block per token: out = x · (1 / √(Σx² / size + eps)) · weight.
extern "C" __global__ void __launch_bounds__(LQ_FB_THREADS) lq_fb_rms_norm(
    const float* __restrict__ x, const float* __restrict__ weight, float* __restrict__ out,
    int64_t size, float eps, uint32_t* __restrict__ status) {
  __shared__ float scratch[LQ_FB_THREADS];
  if (!lq_block_shape_ok<LQ_FB_THREADS>(status)) return;
  const float* row = x + (int64_t)blockIdx.x * size;
  float* dst = out + (int64_t)blockIdx.x * size;
  float squares = 0.0f;
  for (int64_t i = threadIdx.x; i < size; i += LQ_FB_THREADS) squares = fmaf(row[i], row[i], squares);
  const float total = lq_block_reduce<LQ_FB_THREADS, float, false>(squares, scratch);
  const float scale = rsqrtf(total / (float)size + eps);
  for (int64_t i = threadIdx.x; i < size; i += LQ_FB_THREADS) dst[i] = row[i] * scale * weight[i];
}

// Every row of y [tokens][features] set to (or, accumulating, increased by) the bias.
extern "C" __global__ void __launch_bounds__(LQ_FB_THREADS) lq_fb_broadcast_rows(
    float* __restrict__ y, const float* __restrict__ bias, int64_t tokens, int64_t features, int accumulate) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= tokens * features) return;
  const float b = bias[i % features];
  y[i] = accumulate ? y[i] + b : b;
}

// Rotary, one thread per (token, head, i < half): dimension i pairs with i + half.
extern "C" __global__ void __launch_bounds__(LQ_FB_THREADS) lq_fb_rope(
    float* __restrict__ x, const float* __restrict__ cos_table, const float* __restrict__ sin_table,
    int64_t tokens, int64_t heads, int64_t half) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= tokens * heads * half) return;
  const int64_t f = i % half, token_head = i / half;
  const int64_t t = token_head / heads;
  const int64_t at = token_head * 2 * half;
  const float c = cos_table[t * half + f], s = sin_table[t * half + f];
  const float a = x[at + f], b = x[at + half + f];
  x[at + f] = a * c - b * s;
  x[at + half + f] = b * c + a * s;
}

// One block per query t of one head's scores [tokens][tokens]: softmax over s ≤ t, 0 after.
extern "C" __global__ void __launch_bounds__(LQ_FB_THREADS) lq_fb_causal_softmax(
    float* __restrict__ scores, int64_t tokens, uint32_t* __restrict__ status) {
  __shared__ float scratch[LQ_FB_THREADS];
  if (!lq_block_shape_ok<LQ_FB_THREADS>(status)) return;
  const int64_t t = blockIdx.x;
  float* row = scores + t * tokens;
  float max = -HUGE_VALF;
  for (int64_t s = threadIdx.x; s <= t; s += LQ_FB_THREADS) max = lq_js_max<float>(max, row[s]);
  max = lq_block_reduce<LQ_FB_THREADS, float, true>(max, scratch);
  float sum = 0.0f;
  for (int64_t s = threadIdx.x; s <= t; s += LQ_FB_THREADS) {
    const float e = expf(row[s] - max);
    row[s] = e;
    sum += e;
  }
  sum = lq_block_reduce<LQ_FB_THREADS, float, false>(sum, scratch);
  for (int64_t s = threadIdx.x; s <= t; s += LQ_FB_THREADS) row[s] = row[s] / sum;
  for (int64_t s = t + 1 + threadIdx.x; s < tokens; s += LQ_FB_THREADS) row[s] = 0.0f;
}

// gate = silu(gate) · up, in place.
extern "C" __global__ void __launch_bounds__(LQ_FB_THREADS) lq_fb_swiglu(float* __restrict__ gate, const float* __restrict__ up, int64_t count) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= count) return;
  const float g = gate[i];
  gate[i] = g / (1.0f + expf(-g)) * up[i];
}

// One block per position t < tokens − 1: nll[t] = (max + log Σ exp(logit − max)) − logit[ids[t+1]],
// from float32 logits with the sum in float64.
extern "C" __global__ void __launch_bounds__(LQ_FB_THREADS) lq_fb_nll(
    const float* __restrict__ logits, const int32_t* __restrict__ ids, double* __restrict__ nll,
    int64_t vocab, uint32_t* __restrict__ status) {
  __shared__ float max_scratch[LQ_FB_THREADS];
  __shared__ double scratch[LQ_FB_THREADS];
  if (!lq_block_shape_ok<LQ_FB_THREADS>(status)) return;
  const int64_t t = blockIdx.x;
  const float* row = logits + t * vocab;
  float row_max = -HUGE_VALF;
  for (int64_t j = threadIdx.x; j < vocab; j += LQ_FB_THREADS) row_max = lq_js_max<float>(row_max, row[j]);
  const double max = (double)lq_block_reduce<LQ_FB_THREADS, float, true>(row_max, max_scratch);
  double sum = 0.0;
  for (int64_t j = threadIdx.x; j < vocab; j += LQ_FB_THREADS) sum += exp((double)row[j] - max);
  sum = lq_block_reduce<LQ_FB_THREADS, double, false>(sum, scratch);
  if (threadIdx.x != 0) return;
  const int32_t target = ids[t + 1];
  if (target < 0 || (int64_t)target >= vocab) {
    lq_report(status, LQ_STATUS_INDEX_RANGE);
    nll[t] = __longlong_as_double(0x7ff8000000000000LL);
    return;
  }
  nll[t] = max + log(sum) - (double)row[target];
}
