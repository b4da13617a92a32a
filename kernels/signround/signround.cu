// SignRound's tuning step on the GPU: formats/int-group/quantizers/signround-grad.ts SignRoundLayer
// (evaluate, then step), with every operation the CPU rounds done by the intrinsic that rounds the
// same way: __f<op>_rn where the CPU writes Math.fround(a op b) of float32 values, __d<op>_rn for
// its double arithmetic (nvcc would otherwise contract a·b + c into an fma). Given the same
// inputs, every array below holds the CPU's bits; only ΔW·H, a cuBLAS/own product with its own
// summation order (kernels/linalg/dgemm.ts), differs. Without a Hessian there is no product and
// the whole run is the CPU's, bit for bit.
//
// One evaluate(): lq_signround_fit (per group), lq_signround_forward (per weight), ΔW·H on the
// host's call, lq_signround_row_loss (per row). One step(): lq_signround_backward (per group).
//
// Layouts (signround-grad.ts): weights, V, codes row-major n·K + k; groups n·G + g, G = ⌈K / gs⌉.
// Every size and pointer is checked by the host (signround-gpu.ts signRoundLaunches) before a
// launch; the shape bit of the status word is a second line only.
#include <stdint.h>
#include "../common/status.h"
#include "signround.cuh"

#define LQ_SR_THREADS 256
// Products a row-loss thread loads before adding them in order: independent loads in flight.
#define LQ_SR_CHUNK 16

__device__ __forceinline__ bool lq_sr_bits_ok(int bits) {
  return bits == 2 || bits == 3 || bits == 4 || bits == 8;
}

__device__ __forceinline__ bool lq_sr_shape_ok(int bits, int64_t in_features, int64_t group_size) {
  return lq_sr_bits_ok(bits) && in_features >= 1 && group_size >= 1;
}

// signround-grad.ts clampUnit: α and β are clamped in place before every forward (WrapperLinear).
__device__ __forceinline__ float lq_clamp_unit(float x) {
  return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x);
}

// evaluate(), per group (one thread each): clamp α, β in place, then the grid fit (signround.cuh).
extern "C" __global__ void __launch_bounds__(LQ_SR_THREADS) lq_signround_fit(
    float* __restrict__ min_scale, float* __restrict__ max_scale, const float* __restrict__ group_min, const float* __restrict__ group_max,
    float* __restrict__ group_scale, float* __restrict__ group_zero, uint8_t* __restrict__ group_floored,
    int64_t group_total, int bits, int sym, int scale_dtype, float thresh, uint32_t* __restrict__ status) {
  const int64_t gi = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (gi >= group_total) return;
  if (!lq_sr_bits_ok(bits)) {
    lq_report(status, LQ_STATUS_SHAPE);
    return;
  }
  const float beta = lq_clamp_unit(min_scale[gi]), alpha = lq_clamp_unit(max_scale[gi]);
  min_scale[gi] = beta;
  max_scale[gi] = alpha;
  const lq_grid_fit fit = lq_fit_grid(group_min[gi], group_max[gi], beta, alpha, bits, sym != 0, scale_dtype, thresh);
  group_scale[gi] = fit.scale;
  group_zero[gi] = fit.zero;
  group_floored[gi] = fit.floored ? 1 : 0;
}

// evaluate(), per weight (one thread each): SignRoundLayer.forwardGroup's loop body.
//   r = roundHalfEven(fround(fround(w / s) + v)), q = clamp(r, −z, hi) (the code relative to the
//   zero: hi = z − 1 sym, maxq − z asym), in_range = (r == q), ΔW = fround(s·q) − w in double.
// The CPU keeps q in an Int16Array, which stores NaN (from a NaN weight) as 0. Every other q lies
// in [−z, hi] ⊂ [−256, 255]: z = round(−wmin/s) ≤ maxq + 1, since s is (wmax − wmin)/maxq up to
// the scale dtype's rounding, or the floor above it. The code-range bit is a second line only.
extern "C" __global__ void __launch_bounds__(LQ_SR_THREADS) lq_signround_forward(
    const float* __restrict__ weight, const float* __restrict__ value, const float* __restrict__ group_scale, const float* __restrict__ group_zero,
    int16_t* __restrict__ rel_code, uint8_t* __restrict__ in_range, double* __restrict__ delta,
    int64_t rows, int64_t in_features, int64_t group_size, int64_t groups_per_row, int bits, int sym, uint32_t* __restrict__ status) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= rows * in_features) return;
  if (!lq_sr_shape_ok(bits, in_features, group_size)) {
    lq_report(status, LQ_STATUS_SHAPE);
    return;
  }
  const int64_t gi = (i / in_features) * groups_per_row + (i % in_features) / group_size;
  const float s = group_scale[gi];
  const double zero = (double)group_zero[gi];
  const double lo = -zero;  // −0 when z = 0, as the CPU's −fit.zero
  const double hi = sym ? zero - 1.0 : (double)((1 << bits) - 1) - zero;
  const float w = weight[i];
  const double r = lq_round_half_even((double)__fadd_rn(__fdiv_rn(w, s), value[i]));
  const double q = r < lo ? lo : (r > hi ? hi : r);
  int16_t code = 0;
  if (q == q) {
    if (q >= -32768.0 && q <= 32767.0) code = (int16_t)q;
    else lq_report(status, LQ_STATUS_CODE_RANGE);
  }
  rel_code[i] = code;
  in_range[i] = r == q ? 1 : 0;
  // s·q is exact in double and float(q) exact (|q| ≤ 2^15), so fround(s·q) is one float32 product.
  delta[i] = __dsub_rn((double)__fmul_rn(s, (float)q), (double)w);
}

// evaluate(), per row (one thread each): Σ_k ΔW[n][k]·G[n][k] in column order, G = ΔW·H (or ΔW
// itself without H: then both pointers are the same buffer, only read). signround-grad.ts
// layerLoss sums exactly so per row and adds the row sums in row order; the host does the latter.
extern "C" __global__ void __launch_bounds__(LQ_SR_THREADS) lq_signround_row_loss(
    const double* delta, const double* loss_grad, double* __restrict__ row_loss, int64_t rows, int64_t in_features) {
  const int64_t row = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (row >= rows) return;
  const double* d = delta + row * in_features;
  const double* p = loss_grad + row * in_features;
  double sum = 0.0;
  for (int64_t k0 = 0; k0 < in_features; k0 += LQ_SR_CHUNK) {
    const int count = (int)min((int64_t)LQ_SR_CHUNK, in_features - k0);
    double terms[LQ_SR_CHUNK];
#pragma unroll
    for (int j = 0; j < LQ_SR_CHUNK; j++) terms[j] = j < count ? __dmul_rn(d[k0 + j], p[k0 + j]) : 0.0;
#pragma unroll
    for (int j = 0; j < LQ_SR_CHUNK; j++)
      if (j < count) sum = __dadd_rn(sum, terms[j]);
  }
  row_loss[row] = sum;
}

// Block-wise SignRound's Ŵ (signround-block.ts quantizedWeights), per weight: after forward,
// out = fround(w + ΔW) widened to double, the block forward's weights. ΔW = fround(s·q) − w is
// exact in double, so this is fround(s·q) itself, as the CPU computes it.
extern "C" __global__ void __launch_bounds__(LQ_SR_THREADS) lq_signround_apply(
    const float* __restrict__ weight, const double* __restrict__ delta, double* __restrict__ out, int64_t count) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= count) return;
  out[i] = (double)__double2float_rn(__dadd_rn((double)weight[i], delta[i]));
}

// step(), per group (one thread each, its weights in order): SignRoundLayer.backwardGroup, then
// stepMinmax when tuning α and β. With s the group's scale and g = lossGrad[i]:
//   in range:  ∂/∂s += g·(q − w/s) (as q − w·(1/s)), and V ← fround(V − lr·sign(g·s));
//   clamped:   ∂/∂s += g·(q − offset) (offset = fround(wmin_tmp·β)·(1/s) asym, 0 sym), ∂/∂wmin += g;
// both sums scaled by grad_scale = 2 / lossNorm (from the host), then the α/β gradients through the
// scale (zero when the floor replaced it) and p ← fround(p ∓ lr) by their signs. A zero gradient
// (an underflow included) leaves p alone, NaN moves it up, both as on the CPU.
extern "C" __global__ void __launch_bounds__(LQ_SR_THREADS) lq_signround_backward(
    const float* __restrict__ weight, float* __restrict__ value, float* __restrict__ min_scale, float* __restrict__ max_scale,
    const float* __restrict__ group_min, const float* __restrict__ group_max, const float* __restrict__ group_scale, const float* __restrict__ group_zero,
    const uint8_t* __restrict__ group_floored, const int16_t* __restrict__ rel_code, const uint8_t* __restrict__ in_range, const double* __restrict__ loss_grad,
    int64_t rows, int64_t in_features, int64_t group_size, int64_t groups_per_row, int bits, int sym, int tune_minmax,
    double lr_value, double lr_minmax, double grad_scale, uint32_t* __restrict__ status) {
  const int64_t gi = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (gi >= rows * groups_per_row) return;
  if (!lq_sr_shape_ok(bits, in_features, group_size)) {
    lq_report(status, LQ_STATUS_SHAPE);
    return;
  }
  const int64_t row = gi / groups_per_row, g = gi % groups_per_row;
  const int64_t begin = row * in_features + g * group_size;
  const int64_t end = row * in_features + min((g + 1) * group_size, in_features);
  const double s = (double)group_scale[gi];
  const double inv_s = __ddiv_rn(1.0, s);
  const float beta = min_scale[gi], alpha = max_scale[gi];  // clamped by lq_signround_fit
  const double clamped_offset = sym ? 0.0 : __dmul_rn((double)__fmul_rn(group_min[gi], beta), inv_s);
  double g_scale = 0.0, g_outside = 0.0;
  for (int64_t i = begin; i < end; i++) {
    const double grad = loss_grad[i];
    const double q = (double)rel_code[i];
    if (in_range[i]) {
      g_scale = __dadd_rn(g_scale, __dmul_rn(grad, __dsub_rn(q, __dmul_rn((double)weight[i], inv_s))));
      const double gv = __dmul_rn(grad, s);
      const int sign = (gv > 0.0) - (gv < 0.0);
      value[i] = __double2float_rn(__dsub_rn((double)value[i], __dmul_rn(lr_value, (double)sign)));
    } else {
      g_scale = __dadd_rn(g_scale, __dmul_rn(grad, __dsub_rn(q, clamped_offset)));
      g_outside = __dadd_rn(g_outside, grad);
    }
  }
  if (!tune_minmax) return;
  const double d_scale = group_floored[gi] ? 0.0 : __ddiv_rn(__dmul_rn(g_scale, grad_scale), sym ? (double)group_zero[gi] : (double)((1 << bits) - 1));
  const double wmin_tmp = (double)group_min[gi], wmax_tmp = (double)group_max[gi];
  double g_max, g_min;
  if (!sym) {
    g_max = __dmul_rn(d_scale, wmax_tmp);
    g_min = __dmul_rn(__dsub_rn(__dmul_rn(g_outside, grad_scale), d_scale), wmin_tmp);
  } else {
    // s = +b/maxq when b dominates, −a/maxq otherwise; a tie halves the gradient (torch.maximum).
    const float a = __fmul_rn(group_max[gi], alpha), b = -__fmul_rn(group_min[gi], beta);
    const double share = a == b ? 0.5 : 1.0;
    g_max = a >= b ? __dmul_rn(__dmul_rn(-d_scale, wmax_tmp), share) : 0.0;
    g_min = a <= b ? __dmul_rn(__dmul_rn(__dmul_rn(a < b ? -1.0 : 1.0, d_scale), wmin_tmp), share) : 0.0;
  }
  if (g_max != 0.0) max_scale[gi] = __double2float_rn(g_max > 0.0 ? __dsub_rn((double)alpha, lr_minmax) : __dadd_rn((double)alpha, lr_minmax));
  if (g_min != 0.0) min_scale[gi] = __double2float_rn(g_min > 0.0 ? __dsub_rn((double)beta, lr_minmax) : __dadd_rn((double)beta, lr_minmax));
}
