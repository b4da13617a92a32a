// The float32 filter of the nearest-centroid search (nearest-filter.cuh): which centroids a vector
// must measure exactly, and the lower bound it reports on the others. Nothing here decides a label:
// labels and distances come from km_distance (float64, the contract) over the centroids the filter
// lets through; the filter only has to let the right ones through. Why it does:
//
// Notation. x, c: the float64 coordinates (the active ones: a partial vector's first a).
// D = Σ (x_d − c_d)², exact real; d64 = km_distance(x, c), the contract's value. u = 2^-24.
// x̂, ĉ: float32 round-to-nearest of x, c. The filter value, in float32 FMAs (nearest-filter.cuh):
//   t = fma(−2x̂_{A−1}, ĉ_{A−1}, … fma(−2x̂_0, ĉ_0, base)),   base ≈ Σ_{d<A} c_d²  (A = DIM or a)
// so that t ≈ D − |x|². The bound needs every |x_d|, |c_d| ≤ 2^60 and finite ("good"): then no
// float32 value below overflows (|t| ≤ 3·16·2^120 < 2^126). Bad vectors and centroids take the
// exact path (below), so the bound is never applied to them.
//
// (1) float32 error. |x̂_d − x_d| ≤ u|x_d| + η, η = 2^-150 (half the subnormal step); -2x̂ is exact.
//     base is a float32 rounding of a float64 upper sum of c_d² (relative error ≤ 2^-48), or, for a
//     full vector in a block with partial vectors, fl(head + tail) of two such roundings: its
//     error is ≤ 2.0002u·|c|² + 3η. Each x̂_dĉ_d is within (2u + u²)|x_d||c_d| + η(|x_d| + 2|c_d|)
//     of x_d c_d. The FMA chain of A ≤ 16 steps adds ≤ γ_A(|base| + 2Σ|x̂_d ĉ_d|) + 1.01Aη, γ_A =
//     Au/(1 − Au) ≤ Au(1 + 2^-19) (the usual bound on a recursive sum with relative errors
//     (1 + ε), |ε| ≤ u, plus absolute η per subnormal result). Adding up, with Σ|x_d||c_d| ≤
//     |x||c| (Cauchy–Schwarz):
//        |t − (D − |x|²)| ≤ (A + 2.01)·u·(|c|² + 2|x||c|) + μ ≤ E,
//        E = (DIM + 4)·u·R·(R + 2·N) + μ,   μ = 2^-80,
//     where N ≥ |x| (per vector, once) and R ≥ |c| for every good centroid of the tile (per tile,
//     while staging). μ covers every absolute term: with |x_d|, |c_d| ≤ 2^60 and DIM ≤ 16 they
//     add up to < 2^67·η = 2^-83; float64 underflow adds < 2^-1060.
// (2) float64 rounding of the contract's own sum: d64 = Σ T_d(1 + θ_d) (+ < 2^-1060) with T_d the
//     exact squares and |θ_d| ≤ γ_18(2^-53) < 2^-48, so D ≤ d64·(1 + 2^-48) + μ and
//     d64 ≥ D·(1 − 2^-48) − μ.
// (3) Confirmation (the exact arg-min is always measured). While scanning a slice in index order,
//     let best = the smallest d64 measured so far (+inf at first) and Q ≤ |x|² (rounded down). A
//     centroid is measured when t ≤ T,  T ≥ best·(1 + 2^-48) + μ − Q + E,  computed as
//     A = ru(best·(1 + 2^-48) + μ − Q) when best changes and T = ru(A + E) per tile, every step
//     rounded up (__d*_ru, __f*_ru, __double2float_ru), so the float roundings of T only raise it.
//     For the arg-min j* (smallest d64 of the slice): t_j* ≤ D_j* − |x|² + E ≤ d64_j*(1 + 2^-48)
//     + μ − Q + E ≤ best·(1 + 2^-48) + μ − Q + E ≤ T, since d64_j* ≤ best. So j* is measured; the
//     measured centroids come in index order and replace the best only on a strict <, so the
//     result is the first index of the smallest d64: the exact search's answer, bit for bit. (The
//     brief's margin ≥ 2·err is the same argument with best's float32 value in place of its d64.)
// (4) Lower bound on the others (the second nearest, used only by km_bound_check's pruning). Each
//     centroid the filter looks at gets l = rd(t − E) ≤ D − |x|²; one it skips has t > G ≥
//     ru(m2 + E), so rd(t − E) ≥ m2. The two smallest l with their indices (m1, i1) ≤ (m2, i2) are
//     kept; every other centroid of the slice has l ≥ m2. So the smallest kept l whose index is not
//     the final label bounds every other centroid, and second = rd(rd(l + Q)·(1 − 2^-48) − μ),
//     clamped at 0, is ≤ its d64 by (2). It is looser than the exact second by about E, which the
//     bound check's own margin dwarfs; it changes how many vectors are searched, never a label.
// (5) Exact path. A vector with a bad active coordinate keeps t = base (x̂ := 0) and T = G = +inf:
//     every centroid is measured, as in km_nearest_partial, and its l are rd(d64) (float64 → float32
//     rounded down), still ≤ d64. A bad centroid is staged with ĉ = 0 and base = −inf, so every
//     vector measures it (t = −inf ≤ any threshold) and bounds it by l = −inf. t is never NaN
//     (finite or −inf). Slots past the list have G = −inf: they look only at bad centroids, and
//     write nothing.
#pragma once
#include <stdint.h>
#include "distance.cuh"

// Larger coordinates (or non-finite ones) take the exact path: see (1).
#define KM_FILTER_HUGE 0x1p60
#define KM_FILTER_MU 0x1p-80f
#define KM_FILTER_F64_REL 0x1p-48

// One vector's filter state (registers; V of them per thread, indexed by unrolled constants).
struct KmFilterVector {
  int64_t index;   // the vector (for reloading its float64 coordinates)
  int active;      // its real coordinates
  bool live;       // a listed slot
  bool exact;      // a bad coordinate: measure every centroid, (5)
  float full;      // 1 for a whole vector, 0 for a partial one (base = fma(full, tail, head))
  float q_low;     // Q ≤ |x|²
  float norm_up;   // N ≥ |x|
  float above;     // A: T = ru(A + E); +inf until the first measurement, and for exact vectors
  float error;     // E of the current tile
  float gate;      // G: look closer when t ≤ G
  float m1, m2;    // the two smallest lower bounds l ...
  int i1, i2;      // ... and their centroids
  double best;     // the smallest d64 measured
  int best_index;
};

// The vector's float64 coordinates again, for a measurement. A volatile load: otherwise nvcc keeps
// the first load's values live in registers through the whole scan (2·DIM registers per vector,
// which would halve the blocks per multiprocessor) for a path taken a few dozen times.
template <int DIM>
__device__ __forceinline__ void km_reload(double (&x)[DIM], const double* __restrict__ vectors, int64_t index) {
#pragma unroll
  for (int d = 0; d < DIM; d++) {
#ifdef __CUDA_ARCH__
    asm volatile("ld.global.nc.f64 %0, [%1];" : "=d"(x[d]) : "l"(vectors + index * DIM + d));
#else
    x[d] = vectors[index * DIM + d];  // a host build of this header (an emulation of the filter)
#endif
  }
}

// Loads slot's vector, its float32 multipliers m_d = −2x̂_d (0 past its real coordinates, and
// everywhere on the exact path) and its norm bounds. Q and N come from directed float64 sums.
template <int DIM>
__device__ __forceinline__ void km_filter_init(KmFilterVector& s, float (&m)[DIM], const double* __restrict__ vectors, int64_t index, bool live,
                                               int active, int first_centroid) {
  double x[DIM];
  km_load<DIM>(x, vectors, index, live);
  bool exact = false;
  double q_low = 0.0, q_up = 0.0;
#pragma unroll
  for (int d = 0; d < DIM; d++) {
    if (d < active) {
      exact |= !(fabs(x[d]) <= KM_FILTER_HUGE);  // NaN fails the test too
      q_low = __dadd_rd(q_low, __dmul_rd(x[d], x[d]));
      q_up = __dadd_ru(q_up, __dmul_ru(x[d], x[d]));
    }
  }
#pragma unroll
  for (int d = 0; d < DIM; d++) m[d] = d < active && !exact ? -2.0f * __double2float_rn(x[d]) : 0.0f;
  s.index = index;
  s.active = active;
  s.live = live;
  s.exact = exact;
  s.full = active == DIM ? 1.0f : 0.0f;
  s.q_low = exact ? 0.0f : __double2float_rd(q_low);
  s.norm_up = exact ? 0.0f : __double2float_ru(__dsqrt_ru(q_up));
  s.above = __int_as_float(0x7f800000);
  s.error = 0.0f;
  s.gate = __int_as_float(0xff800000);
  s.m1 = s.m2 = __int_as_float(0x7f800000);
  s.i1 = s.i2 = -1;
  s.best = __longlong_as_double(0x7ff0000000000000LL);
  s.best_index = first_centroid;
}

// G from A, m2 and the tile's E: the larger of the confirmation threshold T and the threshold
// under which l could enter the two smallest. −inf for an unlisted slot.
__device__ __forceinline__ void km_filter_gate(KmFilterVector& s) {
  const float confirm = __fadd_ru(s.above, s.error);
  s.gate = s.live ? fmaxf(confirm, __fadd_ru(s.m2, s.error)) : __int_as_float(0xff800000);
}

// A new tile whose good centroids all have |c| ≤ radius: E, then G. (DIM + 4)·u is exact in float32.
template <int DIM>
__device__ __forceinline__ void km_filter_tile(KmFilterVector& s, float radius) {
  const float span = __fmul_ru(radius, __fadd_ru(radius, 2.0f * s.norm_up));
  s.error = __fadd_ru(__fmul_ru((float)(DIM + 4) * 0x1p-24f, span), KM_FILTER_MU);
  km_filter_gate(s);
}

// The vector looks closer at centroid j (filter value t ≤ G): measure it exactly when t ≤ T, then
// record its lower bound l among the two smallest. c is the staged float64 centroid.
template <int DIM>
__device__ __forceinline__ void km_filter_look(KmFilterVector& s, float t, int j, const double* c, const double* __restrict__ vectors) {
  float l = __fsub_rd(t, s.error);
  if (t <= __fadd_ru(s.above, s.error)) {
    double x[DIM];
    km_reload<DIM>(x, vectors, s.index);
    const double d64 = km_distance<DIM>(x, c, s.active);
    // Index order and a strict <: the first of equal distances (the lower index) stays.
    if (d64 < s.best) {
      s.best = d64;
      s.best_index = j;
      if (!s.exact) {
        const double up = __dadd_ru(__dmul_ru(d64, 1.0 + KM_FILTER_F64_REL), (double)KM_FILTER_MU);
        s.above = __double2float_ru(__dsub_ru(up, (double)s.q_low));
      }
    }
    if (s.exact) l = __double2float_rd(d64);  // NaN (a NaN distance) is never recorded, as in the exact kernel
  }
  if (l < s.m1) {
    s.m2 = s.m1;
    s.i2 = s.i1;
    s.m1 = l;
    s.i1 = j;
  } else if (l < s.m2) {
    s.m2 = l;
    s.i2 = j;
  }
  km_filter_gate(s);
}

// The lower bound on the d64 of every centroid of the slice but the label, (4) and (5).
__device__ __forceinline__ double km_filter_second(const KmFilterVector& s) {
  const float l = s.i1 != s.best_index ? s.m1 : s.m2;
  if (s.exact) return (double)l;
  const double shifted = __dadd_rd((double)l, (double)s.q_low);
  return fmax(__dsub_rd(__dmul_rd(shifted, 1.0 - KM_FILTER_F64_REL), (double)KM_FILTER_MU), 0.0);
}
