// The Llama-family decoder forward on the GPU, in float64: the element-wise and per-row steps of
// model/llama-forward.ts (the CPU reference), each written as the CPU writes it. The products
// (q/k/v/o, gate/up/down, the head, Q·Kᵀ and P·V per head) go through kernels/linalg/dgemm.ts
// gemmF64; kernels/forward/gpu-forward.ts orders the launches.
//
// Rounding: every operation the CPU does as a separate multiply and add is written with
// __d<op>_rn, so nvcc cannot contract it into an fma. Rotary, SwiGLU, the bias broadcast and the
// embedding gather then give the CPU's bits for the same inputs. Per-row sums (RMSNorm's Σx²,
// softmax's Σexp, log-softmax's Σexp) run in a fixed tree over the block's threads instead of the
// CPU's left-to-right loop, and exp/log are CUDA's (within 1 ulp, as V8's): those agree with the
// CPU to float64 rounding, and are the same bits from run to run.
//
// Layouts, row-major float64: hidden / normed [tokens][hidden], q [tokens][heads·head_dim],
// k, v [tokens][kv_heads·head_dim], scores [tokens][tokens] (one head), logits [tokens][vocab];
// token ids int32; the rotary table [positions][head_dim/2] (model/rope.ts ropeTable, uploaded).
// The host (kernels/forward/launch.ts) checks every size and buffer extent before a launch; the
// status word (common/status.h) is the second line for token ids and block shapes.
#include <stdint.h>
#include "../common/status.h"
#include "../common/block-reduce.cuh"

// Threads per block for every kernel here; the row kernels' tree reductions assume exactly this.
#define LQ_FWD_THREADS 256

// LlamaForward.embed: hidden[t][j] = embed[ids[t]][j], one thread per element. An id outside the
// vocabulary (the host refuses those first) sets the index bit and leaves NaN, never a read.
extern "C" __global__ void __launch_bounds__(LQ_FWD_THREADS) lq_fwd_embed(
    const int32_t* __restrict__ ids, const double* __restrict__ embed, double* __restrict__ hidden,
    int64_t tokens, int64_t hidden_size, int64_t vocab, uint32_t* __restrict__ status) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= tokens * hidden_size) return;
  const int64_t t = i / hidden_size, j = i % hidden_size;
  const int32_t id = ids[t];
  if (id < 0 || (int64_t)id >= vocab) {
    lq_report(status, LQ_STATUS_INDEX_RANGE);
    hidden[i] = __longlong_as_double(0x7ff8000000000000LL);
    return;
  }
  hidden[i] = embed[(int64_t)id * hidden_size + j];
}

// llama-forward.ts rmsNorm, one block per token: out = x · (1 / √(Σx² / size + eps)) · weight,
// multiplied left to right as the CPU does.
extern "C" __global__ void __launch_bounds__(LQ_FWD_THREADS) lq_fwd_rms_norm(
    const double* __restrict__ x, const double* __restrict__ weight, double* __restrict__ out,
    int64_t size, double eps, uint32_t* __restrict__ status) {
  __shared__ double scratch[LQ_FWD_THREADS];
  if (!lq_block_shape_ok<LQ_FWD_THREADS>(status)) return;
  const double* row = x + (int64_t)blockIdx.x * size;
  double* dst = out + (int64_t)blockIdx.x * size;
  double squares = 0.0;
  for (int64_t i = threadIdx.x; i < size; i += LQ_FWD_THREADS) squares = __dadd_rn(squares, __dmul_rn(row[i], row[i]));
  const double total = lq_block_reduce<LQ_FWD_THREADS, double, false>(squares, scratch);
  const double scale = __ddiv_rn(1.0, __dsqrt_rn(__dadd_rn(__ddiv_rn(total, (double)size), eps)));
  for (int64_t i = threadIdx.x; i < size; i += LQ_FWD_THREADS) dst[i] = __dmul_rn(__dmul_rn(row[i], scale), weight[i]);
}

// llama-forward.ts linear's first step: every row of y [tokens][features] starts as the bias, and
// the product is then added to it (gemmF64 with beta = 1), as gemmAdd adds into y. With
// `accumulate`, y is the residual stream and the bias is added to it instead (a layer after the
// attention or the MLP with a bias: the CPU adds bias + x·Wᵀ to the stream, this adds the bias
// first, which differs only by the rounding of one addition).
extern "C" __global__ void __launch_bounds__(LQ_FWD_THREADS) lq_fwd_broadcast_rows(
    double* __restrict__ y, const double* __restrict__ bias, int64_t tokens, int64_t features, int accumulate) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= tokens * features) return;
  const double b = bias[i % features];
  y[i] = accumulate ? __dadd_rn(y[i], b) : b;
}

// rope.ts applyRope, one thread per (token, head, i < half): dimension i pairs with i + half;
//   x₁' = x₁·cos − x₂·sin, x₂' = x₂·cos + x₁·sin, each product rounded, as the CPU's.
// `tokens` rows may be several windows of `period` tokens back to back: a row's position is its
// index within its window.
extern "C" __global__ void __launch_bounds__(LQ_FWD_THREADS) lq_fwd_rope(
    double* __restrict__ x, const double* __restrict__ cos_table, const double* __restrict__ sin_table,
    int64_t tokens, int64_t heads, int64_t half, int64_t period) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= tokens * heads * half) return;
  const int64_t f = i % half, token_head = i / half;
  const int64_t t = (token_head / heads) % period;
  const int64_t at = token_head * 2 * half;
  const double c = cos_table[t * half + f], s = sin_table[t * half + f];
  const double a = x[at + f], b = x[at + half + f];
  x[at + f] = __dsub_rn(__dmul_rn(a, c), __dmul_rn(b, s));
  x[at + half + f] = __dadd_rn(__dmul_rn(b, c), __dmul_rn(a, s));
}

// llama-forward.ts attention's softmax, one block per query t of one head's scores [tokens][tokens]
// (already scaled by 1/√head_dim in the product): over s ≤ t, e = exp(score − max), then e / Σe;
// the future positions s > t become 0, so P·V adds nothing from them. Each thread rewrites only
// the elements it read, so no barrier is needed between the passes besides the reductions'.
// blockIdx.y walks a batch of windows' score matrices, stored one after the other.
extern "C" __global__ void __launch_bounds__(LQ_FWD_THREADS) lq_fwd_causal_softmax(
    double* __restrict__ scores, int64_t tokens, uint32_t* __restrict__ status) {
  __shared__ double scratch[LQ_FWD_THREADS];
  if (!lq_block_shape_ok<LQ_FWD_THREADS>(status)) return;
  const int64_t t = blockIdx.x;
  double* row = scores + ((int64_t)blockIdx.y * tokens + t) * tokens;
  double max = -HUGE_VAL;
  for (int64_t s = threadIdx.x; s <= t; s += LQ_FWD_THREADS) max = lq_js_max<double>(max, row[s]);
  max = lq_block_reduce<LQ_FWD_THREADS, double, true>(max, scratch);
  double sum = 0.0;
  for (int64_t s = threadIdx.x; s <= t; s += LQ_FWD_THREADS) {
    const double e = exp(__dsub_rn(row[s], max));
    row[s] = e;
    sum = __dadd_rn(sum, e);
  }
  sum = lq_block_reduce<LQ_FWD_THREADS, double, false>(sum, scratch);
  for (int64_t s = threadIdx.x; s <= t; s += LQ_FWD_THREADS) row[s] = __ddiv_rn(row[s], sum);
  for (int64_t s = t + 1 + threadIdx.x; s < tokens; s += LQ_FWD_THREADS) row[s] = 0.0;
}

// LlamaForward.mlp: gate = (g / (1 + exp(−g))) · up, in place, one thread per element.
extern "C" __global__ void __launch_bounds__(LQ_FWD_THREADS) lq_fwd_swiglu(
    double* __restrict__ gate, const double* __restrict__ up, int64_t count) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= count) return;
  const double g = gate[i];
  gate[i] = __dmul_rn(__ddiv_rn(g, __dadd_rn(1.0, exp(-g))), up[i]);
}

// perplexity.ts windowNll's terms, one block per position t < tokens − 1 of logits [tokens][vocab]:
//   nll[t] = (max + log Σ exp(logit − max)) − logit[ids[t + 1]].
// The host adds them in position order, as windowNll does. A target outside the vocabulary (the
// host refuses those first) sets the index bit and leaves NaN.
extern "C" __global__ void __launch_bounds__(LQ_FWD_THREADS) lq_fwd_nll(
    const double* __restrict__ logits, const int32_t* __restrict__ ids, double* __restrict__ nll,
    int64_t vocab, uint32_t* __restrict__ status) {
  __shared__ double scratch[LQ_FWD_THREADS];
  if (!lq_block_shape_ok<LQ_FWD_THREADS>(status)) return;
  const int64_t t = blockIdx.x;
  const double* row = logits + t * vocab;
  double max = -HUGE_VAL;
  for (int64_t j = threadIdx.x; j < vocab; j += LQ_FWD_THREADS) max = lq_js_max<double>(max, row[j]);
  max = lq_block_reduce<LQ_FWD_THREADS, double, true>(max, scratch);
  double sum = 0.0;
  for (int64_t j = threadIdx.x; j < vocab; j += LQ_FWD_THREADS) sum = __dadd_rn(sum, exp(__dsub_rn(row[j], max)));
  sum = lq_block_reduce<LQ_FWD_THREADS, double, false>(sum, scratch);
  if (threadIdx.x != 0) return;
  const int32_t target = ids[t + 1];
  if (target < 0 || (int64_t)target >= vocab) {
    lq_report(status, LQ_STATUS_INDEX_RANGE);
    nll[t] = __longlong_as_double(0x7ff8000000000000LL);
    return;
  }
  nll[t] = __dsub_rn(__dadd_rn(max, log(sum)), row[target]);
}
