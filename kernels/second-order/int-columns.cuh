// GPTQ's int-group column quantizer on the device (formats/int-group/quantizers/gptq.ts
// currentGroupQuantizer / staticGroupQuantizer), for the resident loop (resident-loop.ts,
// int-columns-gpu.ts): a group's per-row grids fitted over its current columns, and a column's
// take on those grids (codes, q = scale·(code − zero) into the column, (w − q)/U[c,c] into the
// errors). Included once, by second-order.cu.
//
// Bit for bit the CPU's arithmetic. The weights are float64 (the loop's), so where grid.ts writes
// Math.fround(w / scale) that is a float64 division rounded to float32 (__ddiv_rn, then
// __double2float_rn), not a float32 division; fitGrid's own float32 steps are signround.cuh's
// lq_fit_grid (the same operation for operation port of grid.ts, α = β = 1). Grid tables are
// [group][row] float32: every scale and zero grid.ts produces is a float32 value (a zero is an
// integer rounded from one), so nothing is lost in them. Uses second-order.cu's SO_THREADS.
#pragma once
#include <stdint.h>
#include "../common/status.h"
#include "../signround/signround.cuh"

__device__ __forceinline__ bool so_int_bits_ok(int bits) {
  return bits >= 2 && bits <= 8;
}

// gptq.ts fitGroupGrids for one group, then fitGrid per row: thread ↔ row n, the row's extremes over
// the group's `width` columns (column j at j·rows), each compared as the CPU does (w < min, w > max
// from ±inf: a NaN never replaces an extreme), then Math.min(min, 0) and Math.max(max, 0), which for
// a non-NaN x are exactly x ≤ 0 ? x : 0 and x > 0 ? x : 0 (−0 stays −0 in the first, as in JS).
// The order of the comparisons does not matter: only ±0 could tell, and min(·, 0)/max(·, 0) and the
// zero's rounding make the grid the same for either. fround(x·1) of fitGrid is __double2float_rn(x).
extern "C" __global__ void __launch_bounds__(SO_THREADS) so_fit_int_grids(
    const double* __restrict__ columns, int64_t rows, int64_t width, int bits, int sym, int scale_dtype, float thresh,
    float* __restrict__ scale, float* __restrict__ zero, uint32_t* __restrict__ status) {
  const int64_t n = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= rows) return;
  if (!so_int_bits_ok(bits) || width < 1) {
    lq_report(status, LQ_STATUS_SHAPE);
    return;
  }
  const double inf = __longlong_as_double(0x7ff0000000000000ll);
  double row_min = inf, row_max = -inf;
  const double* w = columns + n;
#pragma unroll 4
  for (int64_t j = 0; j < width; j++) {
    const double x = w[j * rows];
    if (x < row_min) row_min = x;
    if (x > row_max) row_max = x;
  }
  const double wmin_tmp = row_min <= 0.0 ? row_min : 0.0;
  const double wmax_tmp = row_max > 0.0 ? row_max : 0.0;
  const lq_grid_fit fit = lq_fit_grid(__double2float_rn(wmin_tmp), __double2float_rn(wmax_tmp), 1.0f, 1.0f, bits, sym != 0, scale_dtype, thresh);
  scale[n] = fit.scale;
  zero[n] = fit.zero;
}

// gptq.ts quantizeOnGrids (grid.ts quantizeCode at v = 0, dequantizeCode), then gptq-loop.ts
// takeQuantized, for one column: thread ↔ row n, grid (scale[n], zero[n]).
//   r = roundHalfEven(fround(fround(w / s) + 0))   (+0 only turns −0 into +0, which rounding does too)
//   sym:  code = clamp(r, −z, z − 1) + z       asym: code = clamp(r + z, 0, 2^bits − 1)
//   q = fround(s · (code − z)),  errors[n] = (w − q) / U[c,c],  column[n] = q
// Clamps are the CPU's ternaries, so a NaN passes them as it does there; the code byte is then 0
// (a Uint8Array stores NaN as 0) while q is computed from the NaN, as the CPU computes it from
// quantizeCode's number, not the stored byte. A code outside 0 … 255 (only from a corrupt grid
// table) is stored as 0 and reported.
extern "C" __global__ void __launch_bounds__(SO_THREADS) so_take_int_column(
    double* __restrict__ column, int64_t rows, const float* __restrict__ scale, const float* __restrict__ zero, int bits, int sym,
    double diagonal, uint8_t* __restrict__ codes, double* __restrict__ errors, uint32_t* __restrict__ status) {
  const int64_t n = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= rows) return;
  if (!so_int_bits_ok(bits)) {
    lq_report(status, LQ_STATUS_SHAPE);
    return;
  }
  const double s = (double)scale[n];
  const double z = (double)zero[n];
  const double w = column[n];
  const double r = lq_round_half_even((double)__double2float_rn(__ddiv_rn(w, s)));
  double code;
  if (sym) {
    code = __dadd_rn(r < -z ? -z : (r > __dsub_rn(z, 1.0) ? __dsub_rn(z, 1.0) : r), z);
  } else {
    const double maxq = (double)((1 << bits) - 1);
    const double q = __dadd_rn(r, z);
    code = q < 0.0 ? 0.0 : (q > maxq ? maxq : q);
  }
  uint8_t byte = 0;
  if (code >= 0.0 && code <= 255.0) byte = (uint8_t)code;
  else if (code == code) lq_report(status, LQ_STATUS_CODE_RANGE);
  codes[n] = byte;
  const double q = (double)__double2float_rn(__dmul_rn(s, __dsub_rn(code, z)));
  errors[n] = __ddiv_rn(__dsub_rn(w, q), diagonal);
  column[n] = q;
}
