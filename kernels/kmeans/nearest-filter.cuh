// The filtered nearest-centroid search: km_nearest_partial's contract (kmeans.cu) and its exact
// answer, bit for bit, with most distances taken in float32. Per (vector, centroid) a float32 value
// t ≈ D − |x|² costs DIM FMAs (no subtraction: −2x̂ is in registers, |c|² is staged); only the
// centroids whose t passes the vector's gate are measured in float64 (filter-bound.cuh says why
// that always includes the exact answer, and what the reported second distance bounds).
//
// Why this shape. The exact kernel spends 3·DIM + 1 float64 operations a pair, at the H100's
// float64 rate (half the float32 one), and reads each centroid coordinate from shared memory as a
// float64 (a broadcast load returns one register per lane per cycle). Here a thread holds
// KM_FILTER_VECTORS vectors, so one staged float32 row (DIM coordinates and the three norms) feeds
// that many FMA chains: per pair DIM FFMA + 1 FSETP, and the row's LDS.128s and the branch shared
// by the thread's vectors (sm_90 SASS at dim 8: 87 instructions per KM_FILTER_STEP × V = 8 pairs,
// 64 of them FFMA, against 50 a pair, 26 of them float64, in km_nearest_partial). The gate is
// rarely passed: a vector looks closer about 2·ln(slice) times in a slice (the running two
// smallest) plus the near ties, and measures a dozen of 65,536 Gaussian centroids (a host
// emulation of this code); a warp diverges only then.
#pragma once
#include <stdint.h>
#include "distance.cuh"
#include "filter-bound.cuh"

#define KM_FILTER_VECTORS 4
// Blocks per multiprocessor the filtered kernels are compiled for. Up to dim 8, four (≤ 128
// registers): the few values this spills are the vectors' indices and norms, reloaded once per
// tile, never in the scan. Above, the V·DIM multipliers alone take 64+ registers and a cap would
// spill inside the scan, so ptxas picks (2 to 3 blocks).
#define KM_FILTER_MIN_BLOCKS(D) ((D) <= 8 ? 4 : 1)
// Centroids per step of the scan; a tile is padded to a multiple of it with rows that never pass.
#define KM_FILTER_STEP 2

// A staged centroid in float32: ĉ_0 … ĉ_{DIM−1}, then base for a whole vector (|c|²), for a partial
// one (|c_head|², its first partial_dims coordinates) and the rest (|c_tail|²), padded to 16 bytes
// so a row is QUADS LDS.128.
template <int DIM>
struct KmRow {
  static constexpr int FULL = DIM, HEAD = DIM + 1, TAIL = DIM + 2;
  static constexpr int QUADS = (DIM + 3 + 3) / 4;
};

// Thread j ↔ centroid base + j: its float64 coordinates into `tile` (for the exact measurements)
// and its float32 row; returns the float bits of an upper bound on its norm (0 for a bad one,
// which is staged to be measured by every vector: filter-bound.cuh (5)).
template <int DIM>
__device__ __forceinline__ unsigned km_stage_centroid(const double* __restrict__ c, int partial_dims, double* tile, float4* row) {
  double v[DIM];
  bool good = true;
  double head = 0.0, tail = 0.0;
#pragma unroll
  for (int d = 0; d < DIM; d++) {
    v[d] = c[d];
    tile[d] = v[d];
    good &= fabs(v[d]) <= KM_FILTER_HUGE;
    const double square = __dmul_ru(v[d], v[d]);
    if (d < partial_dims) head = __dadd_ru(head, square);
    else tail = __dadd_ru(tail, square);
  }
  const double full = __dadd_ru(head, tail);
  float f[KmRow<DIM>::QUADS * 4];
#pragma unroll
  for (int e = 0; e < KmRow<DIM>::QUADS * 4; e++) f[e] = 0.0f;
  const float minus_infinity = __int_as_float(0xff800000);
#pragma unroll
  for (int d = 0; d < DIM; d++) f[d] = good ? __double2float_rn(v[d]) : 0.0f;
  f[KmRow<DIM>::FULL] = good ? __double2float_rn(full) : minus_infinity;
  f[KmRow<DIM>::HEAD] = good ? __double2float_rn(head) : minus_infinity;
  f[KmRow<DIM>::TAIL] = good ? __double2float_rn(tail) : 0.0f;
#pragma unroll
  for (int q = 0; q < KmRow<DIM>::QUADS; q++) row[q] = make_float4(f[4 * q], f[4 * q + 1], f[4 * q + 2], f[4 * q + 3]);
  return good ? __float_as_uint(__double2float_ru(__dsqrt_ru(full))) : 0u;
}

// The filter values t of staged row `row` for the thread's V vectors; whether any passes its gate
// (a padding row, all NaN, never does). PARTIAL: the block holds a partial vector, so each vector
// picks its base (fma(full, tail, head)); otherwise every base is the row's |c|².
template <int DIM, int V, bool PARTIAL>
__device__ __forceinline__ bool km_filter_values(const KmFilterVector (&s)[V], const float (&m)[V][DIM], const float4* row, float (&t)[V]) {
  constexpr int QUADS = KmRow<DIM>::QUADS;
  float c[QUADS * 4];
#pragma unroll
  for (int q = 0; q < QUADS; q++) {
    const float4 r = row[q];
    c[4 * q] = r.x, c[4 * q + 1] = r.y, c[4 * q + 2] = r.z, c[4 * q + 3] = r.w;
  }
  bool look = false;
#pragma unroll
  for (int v = 0; v < V; v++) {
    float a = PARTIAL ? fmaf(s[v].full, c[KmRow<DIM>::TAIL], c[KmRow<DIM>::HEAD]) : c[KmRow<DIM>::FULL];
#pragma unroll
    for (int d = 0; d < DIM; d++) a = fmaf(m[v][d], c[d], a);
    t[v] = a;
    look |= a <= s[v].gate;
  }
  return look;
}

// One staged tile (in_tile centroids, padded to a multiple of KM_FILTER_STEP) against the thread's
// V vectors, KM_FILTER_STEP centroids a step: one branch per step, and the inner loop leaves at the
// first step in which some vector looks closer, so nothing the looks change is carried (and
// copied between registers) through it. A centroid no vector looks at changes no state, so testing
// a step's centroids against the gates as they stood before it is exact; after a look, each is
// tested again, in index order, against the gates as they stand.
template <int DIM, int V, bool PARTIAL>
__device__ __forceinline__ void km_scan_tile(KmFilterVector (&s)[V], const float (&m)[V][DIM], const float4* rows, const double* tile,
                                             int in_tile, int first, const double* __restrict__ vectors) {
  constexpr int QUADS = KmRow<DIM>::QUADS;
  int j = 0;
  while (true) {
    float t[KM_FILTER_STEP][V];
    bool look = false;
    for (; j < in_tile; j += KM_FILTER_STEP) {
#pragma unroll
      for (int u = 0; u < KM_FILTER_STEP; u++) look |= km_filter_values<DIM, V, PARTIAL>(s, m, &rows[(j + u) * QUADS], t[u]);
      // Warp-uniform: the lanes that do not look wait anyway, and a uniform branch needs no
      // reconvergence bookkeeping in the loop.
      look = __any_sync(0xffffffffu, look);
      if (look) break;
    }
    if (!look) return;
#pragma unroll
    for (int u = 0; u < KM_FILTER_STEP; u++) {
      // !(t > G), the same test as t ≤ G for a real row (t is never NaN there); spelt differently
      // so that nvcc recomputes it here instead of keeping V predicates alive through the loop.
#pragma unroll
      for (int v = 0; v < V; v++)
        if (j + u < in_tile && !(t[u][v] > s[v].gate)) km_filter_look<DIM>(s[v], t[u][v], first + j + u, &tile[(j + u) * DIM], vectors);
    }
    j += KM_FILTER_STEP;
  }
}

// km_nearest_partial's arguments and outputs; slot ↔ (block, v, thread) as blockIdx.x·V·blockDim.x
// + v·blockDim.x + threadIdx.x, so each of the V loads of a warp is coalesced. The host launches
// ⌈n / (V·KM_THREADS)⌉ blocks per slice.
template <int DIM, int V>
__device__ void km_nearest_filtered(const double* __restrict__ vectors, int64_t count, int64_t partial_from, int partial_dims,
                                    const double* __restrict__ centroids, int k, int slice_len, const int32_t* __restrict__ todo,
                                    const uint32_t* __restrict__ todo_count, double* __restrict__ part_best, int32_t* __restrict__ part_index,
                                    double* __restrict__ part_second) {
  static_assert(KM_TILE == KM_THREADS && KM_TILE % KM_FILTER_STEP == 0, "a thread stages one centroid (or padding row) of the tile");
  __shared__ float4 rows[KM_TILE * KmRow<DIM>::QUADS];
  __shared__ double tile[KM_TILE * DIM];
  __shared__ unsigned warp_radius[KM_THREADS / 32];
  const int64_t n = todo == nullptr ? count : (int64_t)*todo_count;
  const int64_t first_slot = (int64_t)blockIdx.x * V * blockDim.x;
  if (first_slot >= n) return;  // the whole block: no thread is left to share tiles with
  const int begin = blockIdx.y * slice_len;
  const int end = min(k, begin + slice_len);
  KmFilterVector s[V];
  float m[V][DIM];
  bool partial = false;
#pragma unroll
  for (int v = 0; v < V; v++) {
    const int64_t slot = first_slot + v * blockDim.x + threadIdx.x;
    const bool live = slot < n;
    const int64_t i = !live ? 0 : todo == nullptr ? slot : (int64_t)todo[slot];
    const int active = i < partial_from ? DIM : partial_dims;
    km_filter_init<DIM>(s[v], m[v], vectors, i, live, active, begin);
    partial |= live && active < DIM;
  }
  const bool block_partial = __syncthreads_or(partial);
  for (int base = begin; base < end; base += KM_TILE) {
    const int in_tile = min(KM_TILE, end - base);
    __syncthreads();
    unsigned radius = 0;
    if ((int)threadIdx.x < in_tile) {
      radius = km_stage_centroid<DIM>(centroids + (int64_t)(base + threadIdx.x) * DIM, partial_dims, &tile[threadIdx.x * DIM],
                                      &rows[threadIdx.x * KmRow<DIM>::QUADS]);
    } else if ((int)threadIdx.x < (in_tile + KM_FILTER_STEP - 1) / KM_FILTER_STEP * KM_FILTER_STEP) {
      const float nan = __int_as_float(0x7fffffff);
#pragma unroll
      for (int q = 0; q < KmRow<DIM>::QUADS; q++) rows[threadIdx.x * KmRow<DIM>::QUADS + q] = make_float4(nan, nan, nan, nan);
    }
    // Non-negative floats order as their bits: the tile's largest norm bound, R of filter-bound.cuh.
    radius = __reduce_max_sync(0xffffffffu, radius);
    if (threadIdx.x % 32 == 0) warp_radius[threadIdx.x / 32] = radius;
    __syncthreads();
#pragma unroll
    for (int w = 0; w < KM_THREADS / 32; w++) radius = max(radius, warp_radius[w]);
#pragma unroll
    for (int v = 0; v < V; v++) km_filter_tile<DIM>(s[v], __uint_as_float(radius));
    if (block_partial) km_scan_tile<DIM, V, true>(s, m, rows, tile, in_tile, base, vectors);
    else km_scan_tile<DIM, V, false>(s, m, rows, tile, in_tile, base, vectors);
  }
#pragma unroll
  for (int v = 0; v < V; v++) {
    if (!s[v].live) continue;
    const int64_t at = (first_slot + v * blockDim.x + threadIdx.x) * gridDim.y + blockIdx.y;
    part_best[at] = s[v].best;
    part_index[at] = s[v].best_index;
    part_second[at] = km_filter_second(s[v]);
  }
}
