// The GPTQ column loop's per-column work on the device (formats/second-order/gptq-loop.ts), so that
// the weight never leaves the GPU between columns: a column's take (its quantized values in, its
// scaled errors out), the error's propagation to the rest of the block, and the block's column
// losses. The deferred product after each block is kernels/linalg's lq_gemm_f64_at_b_sub.
// Host side: launch.ts (extents checked before every launch), resident-loop.ts, vptq-columns-gpu.ts,
// int-columns-gpu.ts. GPTQ's int-group grids and take are in int-columns.cuh, included at the end.
//
// Bit for bit the CPU loop's arithmetic: float64 with one explicit __d*_rn per operation (nvcc would
// otherwise contract w − u·e into an FMA, which rounds once where JavaScript rounds twice), in the
// CPU's order. No kernel prints or asserts: a label out of range is clamped (so a bug can never read
// out of bounds) and reported in the status word (../common/status.h).
#include <stdint.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include "../common/status.h"

// 256 threads (8 warps) per block for every kernel: a column of 4096 rows is 16 blocks.
#define SO_THREADS 256
// Columns one thread of so_propagate_in_block updates with the error it loaded once. Even, so that
// every thread's first column starts one of gptq-loop.ts's pairs (the pairs decide the skips).
#define SO_PROPAGATE_COLUMNS 8
static_assert(SO_PROPAGATE_COLUMNS % 2 == 0, "a thread's columns must start on a pair boundary");

// formats/vptq/types.ts VptqFloat, as the host passes it.
#define SO_DTYPE_F16 0
#define SO_DTYPE_BF16 1

// value(round(x)) in the 16-bit dtype (types.ts floatCodec): one correct round-to-nearest-even from
// float64, overflow to ±inf. cvt.rn.f16.f64 rounds once; __double2bfloat16 rounds once on sm_90 and
// goes through float32 rounded to odd below it, which is float-bits.ts f64ToBf16Bit's own route
// (binary32 has enough bits for the second rounding to be correct). Widening back is exact.
__device__ __forceinline__ double so_round_to_dtype(double x, int dtype) {
  if (dtype == SO_DTYPE_BF16) return (double)__bfloat162float(__double2bfloat16(x));
  return (double)__half2float(__double2half(x));
}

// labels[v] within 0 … k−1. Labels come from our own search kernels; a bad one is clamped and
// reported rather than used as an address.
__device__ __forceinline__ int64_t so_label(const int32_t* __restrict__ labels, int64_t v, int k, uint32_t* __restrict__ status) {
  const int32_t label = labels[v];
  if (label >= 0 && label < k) return label;
  lq_report(status, LQ_STATUS_INDEX_RANGE);
  return label < 0 ? 0 : k - 1;
}

// VPTQ's take of one column (formats/vptq/codebook.ts vectorColumns, then gptq-loop.ts
// takeQuantized): row n is coordinate n % vector_len of vector n / vector_len (the last vector may
// be partial: its rows are simply fewer). q = the main centroid's coordinate, or with a residual
// codebook h(main + res): the float64 sum of two 16-bit values is exact, then one rounding to the
// dtype (the decoder's 16-bit add). errors[n] = (w − q) / diagonal, column[n] = q.
// Thread ↔ row; res_labels null: no residual codebook.
extern "C" __global__ void __launch_bounds__(SO_THREADS) so_take_vptq_column(
    double* __restrict__ column, int64_t rows, int vector_len,
    const int32_t* __restrict__ main_labels, const double* __restrict__ main_values, int main_k,
    const int32_t* __restrict__ res_labels, const double* __restrict__ res_values, int res_k, int dtype,
    double diagonal, double* __restrict__ errors, uint32_t* __restrict__ status) {
  const int64_t n = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= rows) return;
  if (vector_len < 1 || main_k < 1 || (res_labels != nullptr && res_k < 1)) {
    lq_report(status, LQ_STATUS_SHAPE);
    return;
  }
  const int64_t v = n / vector_len;
  const int64_t t = n - v * vector_len;
  double q = main_values[so_label(main_labels, v, main_k, status) * vector_len + t];
  if (res_labels != nullptr) {
    const double r = res_values[so_label(res_labels, v, res_k, status) * vector_len + t];
    q = so_round_to_dtype(__dadd_rn(q, r), dtype);
  }
  const double w = column[n];
  errors[n] = __ddiv_rn(__dsub_rn(w, q), diagonal);
  column[n] = q;
}

// gptq-loop.ts propagateInBlock for column c: columns first … end−1 (first = c + 1) of the
// [size][rows] weight −= u_row[j] · errors, u_row = U[c, ·]. The CPU walks the columns in pairs
// (first, first+1), (first+2, first+3), … and skips a pair whose two U entries are both 0, then a
// trailing single column whose entry is 0. Skipping is observable (w = −0 − (0·e) with e < 0 is
// +0; 0·inf is NaN), so the same pairs are skipped here. Thread ↔ (row, SO_PROPAGATE_COLUMNS
// consecutive columns): the error is loaded once, the U entries are broadcasts.
extern "C" __global__ void __launch_bounds__(SO_THREADS) so_propagate_in_block(
    double* __restrict__ weight, int64_t rows, const double* __restrict__ u_row, int64_t first, int64_t end,
    const double* __restrict__ errors) {
  const int64_t n = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  const int64_t j0 = first + (int64_t)blockIdx.y * SO_PROPAGATE_COLUMNS;
  if (n >= rows || j0 >= end) return;
  const double e = errors[n];
#pragma unroll
  for (int p = 0; p < SO_PROPAGATE_COLUMNS; p += 2) {
    const int64_t j = j0 + p;
    if (j >= end) break;
    const double u0 = u_row[j];
    double* w0 = weight + j * rows + n;
    if (j + 1 < end) {
      const double u1 = u_row[j + 1];
      if (u0 == 0.0 && u1 == 0.0) continue;
      double* w1 = w0 + rows;
      *w0 = __dsub_rn(*w0, __dmul_rn(u0, e));
      *w1 = __dsub_rn(*w1, __dmul_rn(u1, e));
    } else if (u0 != 0.0) {
      *w0 = __dsub_rn(*w0, __dmul_rn(u0, e));
    }
  }
}

// Σ e² of each of `columns` consecutive error rows ([columns][rows], one block's), summed from row 0
// up, one rounding per operation: gptq-loop.ts takeQuantized's loss, bit for bit. Thread ↔ column;
// the sum is sequential by definition, so it is one thread's, and a block's columns run side by side.
extern "C" __global__ void __launch_bounds__(SO_THREADS) so_column_loss(
    const double* __restrict__ errors, int64_t rows, int64_t columns, double* __restrict__ loss) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= columns) return;
  const double* e = errors + i * rows;
  double sum = 0.0;
  for (int64_t n = 0; n < rows; n++) sum = __dadd_rn(sum, __dmul_rn(e[n], e[n]));
  loss[i] = sum;
}

// GPTQ's int-group column quantizer (so_fit_int_grids, so_take_int_column).
#include "int-columns.cuh"
