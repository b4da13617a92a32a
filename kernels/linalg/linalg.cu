// Dense float64 linear algebra for the second-order engine (formats/second-order) on the GPU,
// one header per responsibility:
//   gemm.cuh      lq_gemm_f64_at_b_sub (GPTQ's deferred update) and lq_gemm_f64 (gemmF64's own product)
//   syrk.cuh      lq_syrk_f32_to_f64_add (calibration's H += XᵀX) and lq_narrow_f64_to_f32
//   cholesky.cuh  U = chol_upper(H⁻¹): blocked Cholesky, triangular solves and their updates
// Host side: dgemm.ts, gptq-deferred.ts, hessian-accumulate.ts, cholesky-gpu.ts.
#include "gemm.cuh"
#include "syrk.cuh"
#include "cholesky.cuh"
