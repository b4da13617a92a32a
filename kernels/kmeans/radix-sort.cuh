// The stable LSD radix sort of kmeans.cu's mean update: (label, vector index) pairs sorted by
// label, so that each cluster's members are contiguous and in vector order (the order in which
// formats/vptq/kmeans.ts updateMeans sums them). Host side: lloyd-gpu.ts (sortByLabel), whose
// RADIX_TILE_VECTORS must equal KM_RADIX_TILE_VECTORS.
#pragma once
#include <stdint.h>

#define KM_RADIX_THREADS 256
#define KM_RADIX_ROUNDS 8
// Vectors (labels) per tile, one block each: every thread takes one per round.
#define KM_RADIX_TILE_VECTORS (KM_RADIX_THREADS * KM_RADIX_ROUNDS)
#define KM_SCAN_THREADS 1024

// Stable LSD radix sort of (label, vector) by label, 8 bits per pass: histogram per tile of
// KM_RADIX_TILE_VECTORS elements, one exclusive scan over [digit][tile], then a scatter in which each
// element's place follows (tile, round, warp, lane): the input order. After the passes every
// cluster's members are contiguous and in vector order.
extern "C" __global__ void __launch_bounds__(KM_RADIX_THREADS) km_radix_histogram(
    const int32_t* __restrict__ keys, int64_t count, int shift, uint32_t* __restrict__ histogram, int64_t tiles) {
  __shared__ uint32_t bins[256];
  bins[threadIdx.x] = 0;
  __syncthreads();
  const int64_t base = (int64_t)blockIdx.x * KM_RADIX_TILE_VECTORS;
  for (int r = 0; r < KM_RADIX_ROUNDS; r++) {
    const int64_t e = base + r * KM_RADIX_THREADS + threadIdx.x;
    if (e < count) atomicAdd(&bins[(keys[e] >> shift) & 255], 1u);
  }
  __syncthreads();
  histogram[(int64_t)threadIdx.x * tiles + blockIdx.x] = bins[threadIdx.x];
}

// Exclusive prefix sum in place, one block: each thread scans a contiguous range.
extern "C" __global__ void __launch_bounds__(KM_SCAN_THREADS) km_scan_exclusive(uint32_t* __restrict__ data, int64_t length) {
  __shared__ uint32_t sums[KM_SCAN_THREADS];
  const int64_t per_thread = (length + KM_SCAN_THREADS - 1) / KM_SCAN_THREADS;
  const int64_t from = min(length, (int64_t)threadIdx.x * per_thread);
  const int64_t to = min(length, from + per_thread);
  uint32_t total = 0;
  for (int64_t e = from; e < to; e++) total += data[e];
  sums[threadIdx.x] = total;
  __syncthreads();
  // Hillis–Steele inclusive scan of the per-thread totals.
  for (int offset = 1; offset < KM_SCAN_THREADS; offset <<= 1) {
    const uint32_t add = threadIdx.x >= offset ? sums[threadIdx.x - offset] : 0u;
    __syncthreads();
    sums[threadIdx.x] += add;
    __syncthreads();
  }
  uint32_t running = sums[threadIdx.x] - total;
  for (int64_t e = from; e < to; e++) {
    const uint32_t v = data[e];
    data[e] = running;
    running += v;
  }
}

extern "C" __global__ void __launch_bounds__(KM_RADIX_THREADS) km_radix_scatter(
    const int32_t* __restrict__ keys_in, const int32_t* __restrict__ values_in, int32_t* __restrict__ keys_out,
    int32_t* __restrict__ values_out, int64_t count, int shift, const uint32_t* __restrict__ offsets, int64_t tiles) {
  constexpr int WARPS = KM_RADIX_THREADS / 32;
  __shared__ uint32_t placed[256];
  __shared__ uint32_t warp_place[WARPS][256];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  placed[threadIdx.x] = offsets[(int64_t)threadIdx.x * tiles + blockIdx.x];
  const int64_t base = (int64_t)blockIdx.x * KM_RADIX_TILE_VECTORS;
  for (int r = 0; r < KM_RADIX_ROUNDS; r++) {
    for (int w = 0; w < WARPS; w++) warp_place[w][threadIdx.x] = 0;
    __syncthreads();
    const int64_t e = base + r * KM_RADIX_THREADS + threadIdx.x;
    const bool valid = e < count;
    const int32_t key = valid ? keys_in[e] : 0;
    const int digit = valid ? (key >> shift) & 255 : 256;  // 256: no element, grouped apart
    const unsigned peers = __match_any_sync(0xffffffffu, digit);
    const int rank = __popc(peers & ((1u << lane) - 1u));
    if (valid && rank == 0) warp_place[warp][digit] = __popc(peers);
    __syncthreads();
    // Digit threadIdx.x: turn the warps' counts into their first places, after the tile's earlier rounds.
    uint32_t next = placed[threadIdx.x];
    for (int w = 0; w < WARPS; w++) {
      const uint32_t c = warp_place[w][threadIdx.x];
      warp_place[w][threadIdx.x] = next;
      next += c;
    }
    placed[threadIdx.x] = next;
    __syncthreads();
    if (valid) {
      const uint32_t at = warp_place[warp][digit] + rank;
      keys_out[at] = key;
      values_out[at] = values_in == nullptr ? (int32_t)e : values_in[e];
    }
    __syncthreads();
  }
}
