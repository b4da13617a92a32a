// Weighted k-means (Lloyd) and exact nearest-centroid searches for VPTQ codebooks, with the
// semantics of formats/vptq/kmeans.ts and kd-tree.ts, bit for bit:
//  - a distance is Σ_d (x_d − c_d)² over the vector's real coordinates, in coordinate order, one
//    rounding per operation (explicit __d*_rn: nvcc would contract the sum into FMAs);
//  - the nearest centroid is the arg-min of those values, ties to the lower index;
//  - a mean is Σ w·x / Σ w over the cluster's members in vector order (a stable sort by label
//    gives that order), coordinate by coordinate, over the vectors that have the coordinate;
//  - the objective is summed in chunks of KM_OBJECTIVE_CHUNK vectors (kmeans.ts objectiveSum).
// Two searches give that arg-min: km_nearest_partial here, every distance in float64, and
// km_nearest_filtered (nearest-filter.cuh), a float32 filter that measures in float64 only the
// centroids that could be the answer (filter-bound.cuh proves it); nearest.ts picks one.
// Host side: nearest.ts, lloyd-gpu.ts and search-gpu.ts. No kernel prints or asserts; the host
// checks every shape, and labels/members are produced here, never read from a file.
#include <stdint.h>
#include "radix-sort.cuh"
#include "plus-plus.cuh"

#define KM_THREADS 128
// Centroids staged in shared memory per step: 128 × 16 doubles = 16 KiB at the largest dim.
#define KM_TILE 128
#define KM_OBJECTIVE_CHUNK 4096

#include "distance.cuh"
#include "nearest-filter.cuh"

// Nearest and second-nearest centroid of each listed vector within one slice of the centroids,
// every distance in float64 (the exact path: small codebooks, and the reference for the filter).
// Thread ↔ vector (slot); blockIdx.y ↔ slice of `slice_len` centroids, so that a short list
// still fills the GPU. Centroids pass through shared memory KM_TILE at a time; every thread of
// a warp reads the same one (a broadcast). The vector list is `todo[0 … *todo_count)` or, with
// todo null, 0 … count. Partial results go to [slot][slice]; km_nearest_reduce merges them.
template <int DIM>
__device__ void km_nearest_partial(const double* __restrict__ vectors, int64_t count, int64_t partial_from, int partial_dims,
                                   const double* __restrict__ centroids, int k, int slice_len, const int32_t* __restrict__ todo,
                                   const uint32_t* __restrict__ todo_count, double* __restrict__ part_best, int32_t* __restrict__ part_index,
                                   double* __restrict__ part_second) {
  __shared__ double tile[KM_TILE * DIM];
  const int64_t n = todo == nullptr ? count : (int64_t)*todo_count;
  const int64_t first_slot = (int64_t)blockIdx.x * blockDim.x;
  if (first_slot >= n) return;  // the whole block: no thread is left to share tiles with
  const int64_t slot = first_slot + threadIdx.x;
  const bool live = slot < n;
  const int64_t i = !live ? 0 : todo == nullptr ? slot : (int64_t)todo[slot];
  const int active = i < partial_from ? DIM : partial_dims;
  double x[DIM];
  km_load<DIM>(x, vectors, i, live);
  const int begin = blockIdx.y * slice_len;
  const int end = min(k, begin + slice_len);
  double best = __longlong_as_double(0x7ff0000000000000LL), second = best;
  int best_index = begin;
  for (int base = begin; base < end; base += KM_TILE) {
    const int in_tile = min(KM_TILE, end - base);
    __syncthreads();
    for (int e = threadIdx.x; e < in_tile * DIM; e += blockDim.x) tile[e] = centroids[(int64_t)base * DIM + e];
    __syncthreads();
    for (int j = 0; j < in_tile; j++) {
      const double s = km_distance<DIM>(x, &tile[j * DIM], active);
      // Ascending index order and a strict <: the first of equal distances (the lower index) stays.
      if (s < best) {
        second = best;
        best = s;
        best_index = base + j;
      } else if (s < second) {
        second = s;
      }
    }
  }
  if (!live) return;
  const int64_t at = slot * gridDim.y + blockIdx.y;
  part_best[at] = best;
  part_index[at] = best_index;
  part_second[at] = second;
}

// Merges the slices of each listed vector in slice order (so ties still go to the lower index)
// into its label, squared distance and lower bound on the distance to every other centroid.
// A slice's second is the exact second-smallest d64 (km_nearest_partial) or only a lower bound on
// the d64 of every centroid of the slice but its best, possibly below that best
// (km_nearest_filtered: filter-bound.cuh (4)). The merge needs no more: every centroid of a slice
// is ≥ the slice's best and every one but the best is ≥ its second, so the merged second still
// bounds every centroid but the label from below, for either kernel.
extern "C" __global__ void __launch_bounds__(KM_THREADS) km_nearest_reduce(
    int64_t count, const int32_t* __restrict__ todo, const uint32_t* __restrict__ todo_count, int slices,
    const double* __restrict__ part_best, const int32_t* __restrict__ part_index, const double* __restrict__ part_second,
    int32_t* __restrict__ labels, double* __restrict__ dist2, double* __restrict__ lower) {
  const int64_t n = todo == nullptr ? count : (int64_t)*todo_count;
  const int64_t slot = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (slot >= n) return;
  const int64_t i = todo == nullptr ? slot : (int64_t)todo[slot];
  double best = part_best[slot * slices], second = part_second[slot * slices];
  int32_t best_index = part_index[slot * slices];
  for (int s = 1; s < slices; s++) {
    const double b = part_best[slot * slices + s], c = part_second[slot * slices + s];
    if (b < best) {
      second = fmin(best, c);
      best = b;
      best_index = part_index[slot * slices + s];
    } else {
      second = fmin(second, b);
    }
  }
  labels[i] = best_index;
  dist2[i] = best;
  if (lower != nullptr) lower[i] = sqrt(second);
}

// After a mean update: can each vector keep its label without a search? Its distance to its own
// centroid is measured; every other centroid is at least lower − largest_other away (triangle
// inequality; lower bounds them before the update), except the listed movers, which moved more
// and are measured. A vector that cannot be proven to keep its label goes on the todo list.
// The margin keeps float64 rounding in the bound from ever skipping a search that could change
// the answer. Skipping changes the cost, never the labels. `lower` needs only to be a lower bound
// on the other centroids' distances, so the filtered search's looser second (filter-bound.cuh
// (4): below the exact one by about the float32 error bound) is as valid; it only clears fewer.
template <int DIM>
__device__ void km_bound_check(const double* __restrict__ vectors, int64_t count, int64_t partial_from, int partial_dims,
                               const double* __restrict__ centroids, const int32_t* __restrict__ movers, int mover_count, double largest_other,
                               const int32_t* __restrict__ labels, double* __restrict__ dist2, double* __restrict__ lower,
                               int32_t* __restrict__ todo, uint32_t* __restrict__ todo_count) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= count) return;
  const int active = i < partial_from ? DIM : partial_dims;
  double x[DIM];
  km_load<DIM>(x, vectors, i, true);
  const int label = labels[i];
  const double own = km_distance<DIM>(x, centroids + (int64_t)label * DIM, active);
  double mover = __longlong_as_double(0x7ff0000000000000LL);
  int mover_index = 0x7fffffff;
  for (int u = 0; u < mover_count; u++) {
    const int j = movers[u];
    if (j == label) continue;
    const double s = km_distance<DIM>(x, centroids + (int64_t)j * DIM, active);
    if (s < mover || (s == mover && j < mover_index)) {
      mover = s;
      mover_index = j;
    }
  }
  const double previous = lower[i];
  const bool no_others = isinf(previous) && previous > 0;  // k = 1: nothing else to beat
  const double bound = no_others ? previous : previous - largest_other;
  const bool bound_holds = no_others || sqrt(own) < bound - 1e-12 * (fabs(previous) + largest_other);
  const bool beats_movers = own < mover || (own == mover && label < mover_index);
  if (bound_holds && beats_movers) {
    dist2[i] = own;
    lower[i] = fmin(bound, sqrt(mover));
  } else {
    todo[atomicAdd(todo_count, 1u)] = (int32_t)i;
  }
}

#define KM_DIM_KERNELS(D)                                                                                                    \
  extern "C" __global__ void __launch_bounds__(KM_THREADS) km_nearest_partial_d##D(                                        \
      const double* vectors, int64_t count, int64_t partial_from, int partial_dims, const double* centroids, int k,         \
      int slice_len, const int32_t* todo, const uint32_t* todo_count, double* part_best, int32_t* part_index,               \
      double* part_second) {                                                                                                \
    km_nearest_partial<D>(vectors, count, partial_from, partial_dims, centroids, k, slice_len, todo, todo_count, part_best, \
                          part_index, part_second);                                                                         \
  }                                                                                                                         \
  extern "C" __global__ void __launch_bounds__(KM_THREADS, KM_FILTER_MIN_BLOCKS(D)) km_nearest_filtered_d##D(              \
      const double* vectors, int64_t count, int64_t partial_from, int partial_dims, const double* centroids, int k,         \
      int slice_len, const int32_t* todo, const uint32_t* todo_count, double* part_best, int32_t* part_index,               \
      double* part_second) {                                                                                                \
    km_nearest_filtered<D, KM_FILTER_VECTORS>(vectors, count, partial_from, partial_dims, centroids, k, slice_len, todo,   \
                                              todo_count, part_best, part_index, part_second);                              \
  }                                                                                                                         \
  extern "C" __global__ void __launch_bounds__(KM_THREADS) km_bound_check_d##D(                                            \
      const double* vectors, int64_t count, int64_t partial_from, int partial_dims, const double* centroids,                \
      const int32_t* movers, int mover_count, double largest_other, const int32_t* labels, double* dist2, double* lower,    \
      int32_t* todo, uint32_t* todo_count) {                                                                                \
    km_bound_check<D>(vectors, count, partial_from, partial_dims, centroids, movers, mover_count, largest_other, labels,    \
                      dist2, lower, todo, todo_count);                                                                      \
  }
KM_DIM_KERNELS(1)
KM_DIM_KERNELS(2)
KM_DIM_KERNELS(3)
KM_DIM_KERNELS(4)
KM_DIM_KERNELS(5)
KM_DIM_KERNELS(6)
KM_DIM_KERNELS(7)
KM_DIM_KERNELS(8)
KM_DIM_KERNELS(9)
KM_DIM_KERNELS(10)
KM_DIM_KERNELS(11)
KM_DIM_KERNELS(12)
KM_DIM_KERNELS(13)
KM_DIM_KERNELS(14)
KM_DIM_KERNELS(15)
KM_DIM_KERNELS(16)

// (v − main centroid) of each vector over its real coordinates, 0 beyond: the residual codebook's
// queries (codebook.ts cpuCodebookSearch). Thread ↔ coordinate.
extern "C" __global__ void __launch_bounds__(KM_THREADS) km_residual_queries(
    const double* __restrict__ queries, int64_t count, int dim, int64_t partial_from, int partial_dims,
    const double* __restrict__ centroids, const int32_t* __restrict__ labels, double* __restrict__ out) {
  const int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= count * dim) return;
  const int64_t v = e / dim;
  const int d = (int)(e % dim);
  const int active = v < partial_from ? dim : partial_dims;
  out[e] = d < active ? __dsub_rn(queries[e], centroids[(int64_t)labels[v] * dim + d]) : 0.0;
}

// One partial objective per chunk: Σ w·d² in vector order, a thread per chunk (kmeans.ts objectiveSum).
extern "C" __global__ void __launch_bounds__(KM_THREADS) km_objective_chunks(
    const double* __restrict__ weights, const double* __restrict__ dist2, int64_t count, double* __restrict__ chunk_sums) {
  const int64_t chunk = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  const int64_t from = chunk * KM_OBJECTIVE_CHUNK;
  if (from >= count) return;
  const int64_t to = min(count, from + KM_OBJECTIVE_CHUNK);
  double sum = 0.0;
  for (int64_t i = from; i < to; i++) sum = __dadd_rn(sum, __dmul_rn(weights[i], dist2[i]));
  chunk_sums[chunk] = sum;
}

// Cluster sizes (integer atomics: the same counts whatever the order).
extern "C" __global__ void __launch_bounds__(KM_THREADS) km_count(const int32_t* __restrict__ labels, int64_t count, uint32_t* __restrict__ counts) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < count) atomicAdd(&counts[labels[i]], 1u);
}

// New centroid coordinates: thread ↔ (cluster, coordinate), summing the cluster's members in
// vector order exactly as kmeans.ts updateMeans. A coordinate with no weight keeps its value.
extern "C" __global__ void __launch_bounds__(KM_THREADS) km_means(
    const double* __restrict__ vectors, const double* __restrict__ weights, int dim, int64_t partial_from, int partial_dims,
    const int32_t* __restrict__ members, const uint32_t* __restrict__ offsets, const uint32_t* __restrict__ counts, int k,
    double* __restrict__ centroids) {
  const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= (int64_t)k * dim) return;
  const int j = (int)(t / dim), d = (int)(t % dim);
  double sum = 0.0, weight_sum = 0.0;
  const uint32_t from = offsets[j], to = from + counts[j];
  for (uint32_t m = from; m < to; m++) {
    const int64_t i = members[m];
    const int active = i < partial_from ? dim : partial_dims;
    if (d >= active) continue;
    const double w = weights[i];
    sum = __dadd_rn(sum, __dmul_rn(w, vectors[i * dim + d]));
    weight_sum = __dadd_rn(weight_sum, w);
  }
  if (weight_sum > 0.0) centroids[t] = __ddiv_rn(sum, weight_sum);
}

// How far each centroid moved in the update (the bounds' input only).
extern "C" __global__ void __launch_bounds__(KM_THREADS) km_moves(
    const double* __restrict__ before, const double* __restrict__ after, int k, int dim, double* __restrict__ moves) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= k) return;
  double sum = 0.0;
  for (int d = 0; d < dim; d++) {
    const double diff = after[(int64_t)j * dim + d] - before[(int64_t)j * dim + d];
    sum += diff * diff;
  }
  moves[j] = sqrt(sum);
}
