// One decoder block's reverse mode on the GPU, in float64, for SignRound's block-wise objective:
// the element-wise and per-row steps of model/block-grad/forward.ts and backward.ts (the CPU
// reference) that kernels/forward/forward.cu does not already have, each written as the CPU
// writes it. The products go through kernels/linalg/dgemm.ts gemmF64; the rotary, causal softmax,
// SwiGLU and bias steps of the forward are forward.cu's; kernels/block-grad/gpu-block-grad.ts
// orders the launches.
//
// Rounding: every operation the CPU does as a separate multiply and add is written with
// __d<op>_rn, so nvcc cannot contract it into an fma; element-wise steps then give the CPU's bits
// for the same inputs (exp is CUDA's, within 1 ulp of V8's). Per-row sums (RMSNorm's Σx² and
// Σ ĝ·x, the softmax backward's Σ ∂P·P) run in a fixed tree over the block's threads instead of
// the CPU's left-to-right loop: they agree with the CPU to float64 rounding, and are the same bits
// from run to run.
//
// Layouts, row-major float64: [tokens][features] activations; one head's probabilities and score
// gradients [tokens][tokens]; the rotary table [positions][head_dim/2] (model/rope.ts, uploaded).
// The host (kernels/block-grad/launch.ts) checks every size and buffer extent before a launch;
// the status word (common/status.h) is the second line for block shapes.
#include <stdint.h>
#include "../common/status.h"
#include "../common/block-reduce.cuh"

// Threads per block for every kernel here; the row kernels' tree reductions assume exactly this.
#define LQ_BG_THREADS 256

// Sum of one value per thread over the block, in a fixed tree: thread i adds i + stride for
// stride = 128, 64, …, 1 (forward.cu's order). Every thread returns the result. The leading
// barrier keeps a second reduction from overwriting `scratch` before every thread has read the
// first one's result.
__device__ double lq_bg_block_sum(double value, double* scratch) {
  __syncthreads();
  scratch[threadIdx.x] = value;
  __syncthreads();
  for (int stride = LQ_BG_THREADS / 2; stride > 0; stride >>= 1) {
    if ((int)threadIdx.x < stride) scratch[threadIdx.x] = __dadd_rn(scratch[threadIdx.x], scratch[threadIdx.x + stride]);
    __syncthreads();
  }
  return scratch[0];
}

// forward.ts rmsNormKeep, one block per token: out = x · r · weight with r = 1 / √(Σx² / size + eps),
// multiplied left to right as the CPU does; r is kept in inv_rms[token] for the backward.
extern "C" __global__ void __launch_bounds__(LQ_BG_THREADS) lq_bg_rms_norm_keep(
    const double* __restrict__ x, const double* __restrict__ weight, double* __restrict__ out,
    double* __restrict__ inv_rms, int64_t size, double eps, uint32_t* __restrict__ status) {
  __shared__ double scratch[LQ_BG_THREADS];
  if (!lq_block_shape_ok<LQ_BG_THREADS>(status)) return;
  const double* row = x + (int64_t)blockIdx.x * size;
  double* dst = out + (int64_t)blockIdx.x * size;
  double squares = 0.0;
  for (int64_t i = threadIdx.x; i < size; i += LQ_BG_THREADS) squares = __dadd_rn(squares, __dmul_rn(row[i], row[i]));
  const double total = lq_bg_block_sum(squares, scratch);
  const double scale = __ddiv_rn(1.0, __dsqrt_rn(__dadd_rn(__ddiv_rn(total, (double)size), eps)));
  if (threadIdx.x == 0) inv_rms[blockIdx.x] = scale;
  for (int64_t i = threadIdx.x; i < size; i += LQ_BG_THREADS) dst[i] = __dmul_rn(__dmul_rn(row[i], scale), weight[i]);
}

// backward.ts rmsNormBackwardAdd, one block per token, with the norm weight w frozen:
//   dot = Σ dy_i·w_i·x_i, coef = r·r·r·dot / size, dx_i += r·dy_i·w_i − coef·x_i
// (products left to right, as the CPU's). dx is read and written only at the thread's own
// elements, after the reduction.
extern "C" __global__ void __launch_bounds__(LQ_BG_THREADS) lq_bg_rms_norm_backward_add(
    double* __restrict__ dx, const double* __restrict__ dy, const double* __restrict__ x,
    const double* __restrict__ inv_rms, const double* __restrict__ weight, int64_t size, uint32_t* __restrict__ status) {
  __shared__ double scratch[LQ_BG_THREADS];
  if (!lq_block_shape_ok<LQ_BG_THREADS>(status)) return;
  const int64_t at = (int64_t)blockIdx.x * size;
  double dot = 0.0;
  for (int64_t i = threadIdx.x; i < size; i += LQ_BG_THREADS) dot = __dadd_rn(dot, __dmul_rn(__dmul_rn(dy[at + i], weight[i]), x[at + i]));
  const double total = lq_bg_block_sum(dot, scratch);
  const double r = inv_rms[blockIdx.x];
  const double coef = __ddiv_rn(__dmul_rn(__dmul_rn(__dmul_rn(r, r), r), total), (double)size);
  for (int64_t i = threadIdx.x; i < size; i += LQ_BG_THREADS) {
    const double term = __dsub_rn(__dmul_rn(__dmul_rn(r, dy[at + i]), weight[i]), __dmul_rn(coef, x[at + i]));
    dx[at + i] = __dadd_rn(dx[at + i], term);
  }
}

// backward.ts attentionBackward's softmax step, one block per query t of one head: with ∂P in
// d_scores [tokens][tokens] and P in probs (same layout),
//   dot = Σ_{s≤t} ∂P_s·P_s,  ∂S_s = P_s·(∂P_s − dot) for s ≤ t,  ∂S_s = 0 for s > t
// in place. Each thread rewrites only the elements it read, after the reduction.
extern "C" __global__ void __launch_bounds__(LQ_BG_THREADS) lq_bg_causal_softmax_backward(
    double* __restrict__ d_scores, const double* __restrict__ probs, int64_t tokens, uint32_t* __restrict__ status) {
  __shared__ double scratch[LQ_BG_THREADS];
  if (!lq_block_shape_ok<LQ_BG_THREADS>(status)) return;
  const int64_t t = blockIdx.x;
  double* row = d_scores + t * tokens;
  const double* p = probs + t * tokens;
  double dot = 0.0;
  for (int64_t s = threadIdx.x; s <= t; s += LQ_BG_THREADS) dot = __dadd_rn(dot, __dmul_rn(row[s], p[s]));
  const double total = lq_bg_block_sum(dot, scratch);
  for (int64_t s = threadIdx.x; s <= t; s += LQ_BG_THREADS) row[s] = __dmul_rn(p[s], __dsub_rn(row[s], total));
  for (int64_t s = t + 1 + threadIdx.x; s < tokens; s += LQ_BG_THREADS) row[s] = 0.0;
}

// backward.ts ropeBackward (the transpose of rope.ts applyRope: rotation by −angle), one thread per
// (token, head, i < half), in place: a' = a·cos + b·sin, b' = b·cos − a·sin, each product rounded.
extern "C" __global__ void __launch_bounds__(LQ_BG_THREADS) lq_bg_rope_backward(
    double* __restrict__ dx, const double* __restrict__ cos_table, const double* __restrict__ sin_table,
    int64_t tokens, int64_t heads, int64_t half) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= tokens * heads * half) return;
  const int64_t f = i % half, token_head = i / half;
  const int64_t t = token_head / heads;
  const int64_t at = token_head * 2 * half;
  const double c = cos_table[t * half + f], s = sin_table[t * half + f];
  const double a = dx[at + f], b = dx[at + half + f];
  dx[at + f] = __dadd_rn(__dmul_rn(a, c), __dmul_rn(b, s));
  dx[at + half + f] = __dsub_rn(__dmul_rn(b, c), __dmul_rn(a, s));
}

// backward.ts's SwiGLU step, one thread per element, m = silu(g)·u with σ = 1 / (1 + exp(−g)):
//   ∂u = ∂m·g·σ,  ∂g = ∂m·u·σ·(1 + g·(1 − σ))   (left to right, as the CPU's).
// d_mixed_gate holds ∂m on entry and ∂g on return (each thread reads its element before writing
// it, so the two need no separate buffers).
extern "C" __global__ void __launch_bounds__(LQ_BG_THREADS) lq_bg_swiglu_backward(
    const double* __restrict__ gate, const double* __restrict__ up, double* __restrict__ d_mixed_gate,
    double* __restrict__ d_up, int64_t count) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= count) return;
  const double g = gate[i];
  const double sigma = __ddiv_rn(1.0, __dadd_rn(1.0, exp(-g)));
  const double dm = d_mixed_gate[i];
  d_up[i] = __dmul_rn(__dmul_rn(dm, g), sigma);
  d_mixed_gate[i] = __dmul_rn(__dmul_rn(__dmul_rn(dm, up[i]), sigma), __dadd_rn(1.0, __dmul_rn(g, __dsub_rn(1.0, sigma))));
}

// The tuner's loss step (formats/int-group/quantizers/signround-block.ts lossAndGradients), one
// block per token of one window: diff = output − target, d_output = (2·diff) / count (the CPU's
// expression; count = every output element of the iteration's windows), and row_sq[token] = Σ diff²
// over the row in the fixed tree. The host sums the rows in order, so the loss agrees with the
// CPU's running sum to float64 rounding; it only picks the best iteration, and the gradients are
// the CPU's bits.
extern "C" __global__ void __launch_bounds__(LQ_BG_THREADS) lq_bg_mse_grad(
    const double* __restrict__ output, const double* __restrict__ target, double* __restrict__ d_output,
    double* __restrict__ row_sq, int64_t size, double count, uint32_t* __restrict__ status) {
  __shared__ double scratch[LQ_BG_THREADS];
  if (!lq_block_shape_ok<LQ_BG_THREADS>(status)) return;
  const int64_t base = (int64_t)blockIdx.x * size;
  double partial = 0.0;
  for (int64_t i = threadIdx.x; i < size; i += LQ_BG_THREADS) {
    const double diff = __dsub_rn(output[base + i], target[base + i]);
    partial = __dadd_rn(partial, __dmul_rn(diff, diff));
    d_output[base + i] = __ddiv_rn(__dmul_rn(2.0, diff), count);
  }
  const double total = lq_bg_block_sum(partial, scratch);
  if (threadIdx.x == 0) row_sq[blockIdx.x] = total;
}
