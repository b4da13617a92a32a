// Weighted k-means++ seeding on the GPU with the semantics of formats/vptq/kmeans-init.ts
// kMeansPlusPlus, bit for bit: the same centres for the same random stream. The CPU prunes its
// distance evaluations with the triangle inequality, exactly; here every vector is measured
// against every new centre (a thread per vector), which gives the same nearest distances D².
//
// The sampler is the CPU's SumTree: leaves at [leaves + i] hold w_i·D²_i (w_i before the first
// centre), zero past `count`; every internal node is left + right of its two children. Both
// sides compute every node from its children, so any order of computing them gives the same
// bits. Per centre j:
//   km_pp_update (many blocks)  D² against centre j, the changed leaves, and each block's aligned
//                               subtree of `span` leaves up to its root, in shared memory;
//   km_pp_pick (one block)      the levels above those roots, then thread 0 draws centre j + 1
//                               (the CPU's descent, u = randoms[j + 1]) and writes its coordinates.
// Host side: kernels/kmeans/plus-plus-gpu.ts (checks every shape before a launch).

// Leaves per km_pp_update block (its threads; fewer when the tree has fewer leaves).
#define KM_PP_SPAN 256
// Threads of km_pp_pick's single block.
#define KM_PP_TOP_THREADS 1024

// The squared distance of vector i to centre c over its `active` real coordinates, in coordinate
// order (kmeans-init.ts squaredTo and the partial loop: Σ (x − c)², one rounding per operation).
__device__ __forceinline__ double km_pp_distance(const double* __restrict__ x, const double* __restrict__ c, int active) {
  double sum = 0.0;
  for (int d = 0; d < active; d++) {
    const double diff = __dsub_rn(x[d], c[d]);
    sum = __dadd_rn(sum, __dmul_rn(diff, diff));
  }
  return sum;
}

// Leaf i of the block's subtree: mode 0 sets w_i (before the first centre); mode 1 measures
// against `centre` and every full vector takes its distance (seedFirst); mode 2 takes it where it
// is smaller (addCentre: squared < own). Partial vectors (i ≥ partial_from) take it where
// !(squared ≥ D²), over their partial_dims coordinates, in every mode but 0. Then the subtree's
// internal nodes, level by level, as tree[node] = tree[2·node] + tree[2·node + 1].
extern "C" __global__ void __launch_bounds__(KM_PP_SPAN) km_pp_update(
    const double* __restrict__ vectors, const double* __restrict__ weights, const double* __restrict__ centre,
    double* __restrict__ nearest, double* __restrict__ tree, int64_t count, int dim, int64_t partial_from, int partial_dims,
    int64_t leaves, int mode) {
  extern __shared__ double subtree[];
  const int span = blockDim.x;
  const int64_t i = (int64_t)blockIdx.x * span + threadIdx.x;
  double leaf = 0.0;
  if (i < count) {
    leaf = tree[leaves + i];
    if (mode == 0) {
      leaf = weights[i];
      tree[leaves + i] = leaf;
    } else {
      const bool full = i < partial_from;
      const double squared = km_pp_distance(vectors + i * dim, centre, full ? dim : partial_dims);
      const double own = nearest[i];
      const bool take = full ? (mode == 1 || squared < own) : !(squared >= own);
      if (take) {
        nearest[i] = squared;
        leaf = __dmul_rn(weights[i], squared);
        tree[leaves + i] = leaf;
      }
    }
  }
  subtree[threadIdx.x] = leaf;
  __syncthreads();
  // Level by level: `width` nodes, the first at tree index (leaves + block's first leaf) >> level.
  int64_t first = leaves + (int64_t)blockIdx.x * span;
  for (int width = span / 2; width >= 1; width /= 2) {
    first >>= 1;
    double sum = 0.0;
    if ((int)threadIdx.x < width) sum = __dadd_rn(subtree[2 * threadIdx.x], subtree[2 * threadIdx.x + 1]);
    __syncthreads();
    if ((int)threadIdx.x < width) {
      subtree[threadIdx.x] = sum;
      tree[first + threadIdx.x] = sum;
    }
    __syncthreads();
  }
}

// The levels above km_pp_update's subtree roots (nodes roots … 2·roots − 1, roots = leaves/span),
// then the draw of centre `next` (kmeans-init.ts kMeansPlusPlus): u = randoms[next], the SumTree
// descent, or the CPU's fallback when the total is not positive (the first vector from *fallback
// on whose D² is not 0; else next mod count), and seedCentroid: the vector's coordinates, a
// partial vector's missing ones from `partial_means`. One block of KM_PP_TOP_THREADS threads.
extern "C" __global__ void __launch_bounds__(KM_PP_TOP_THREADS) km_pp_pick(
    double* __restrict__ tree, int64_t roots, int64_t leaves, const double* __restrict__ randoms, int64_t next,
    const double* __restrict__ vectors, const double* __restrict__ nearest, const double* __restrict__ partial_means,
    int64_t count, int dim, int64_t partial_from, int partial_dims, int64_t* __restrict__ fallback, double* __restrict__ centroids,
    int64_t* __restrict__ drawn_out) {
  for (int64_t width = roots / 2; width >= 1; width /= 2) {
    for (int64_t t = threadIdx.x; t < width; t += blockDim.x) tree[width + t] = __dadd_rn(tree[2 * (width + t)], tree[2 * (width + t) + 1]);
    __syncthreads();
  }
  if (threadIdx.x != 0) return;
  int64_t drawn = -1;
  if (tree[1] > 0.0) {
    double target = __dmul_rn(randoms[next], tree[1]);
    int64_t node = 1;
    while (node < leaves) {
      const double left = tree[2 * node];
      // Rounding can leave the target past a zero child: never descend into one (SumTree.sample).
      if ((target < left && left > 0.0) || !(tree[2 * node + 1] > 0.0)) {
        node = 2 * node;
      } else {
        target = __dsub_rn(target, left);
        node = 2 * node + 1;
      }
    }
    drawn = node - leaves;
  }
  if (drawn < 0) {
    int64_t f = *fallback;
    while (f < count && nearest[f] == 0.0) f++;
    *fallback = f;
    drawn = f < count ? f : next % count;
  }
  *drawn_out = drawn;
  double* c = centroids + next * dim;
  const bool partial = drawn >= partial_from && partial_dims != dim;
  for (int d = 0; d < dim; d++) c[d] = partial && d >= partial_dims ? partial_means[d] : vectors[drawn * dim + d];
}
