// Can a thread-block cluster beat VPTQ's gather ceiling? VPTQ v8 k65536 gathers one random
// 16-byte codebook entry per 8 weights from a 1 MiB table, which no multiprocessor's shared memory
// holds, so today the gathers go to L1/L2 (kernels/stream lq_stream_gather_*: 63 % of the copy for
// fp16 output, 85 % for float32). A cluster of C blocks can hold the table split C ways in their
// shared memories (1 MiB / 8 = 128 KiB a block) and gather through distributed shared memory.
//
//   nvcc -O3 -std=c++17 -arch=sm_90 -o /tmp/gather-dsmem bench/cuda/gather-dsmem.cu && /tmp/gather-dsmem
//
// Same traffic as lq_stream_gather_f16/_f32: per 8 weights, 3 index bytes read as streams, one
// 16-byte gather, 16 (fp16) or 32 (float32) bytes written. % of cudaMemcpy of 1 GiB (read + write)
// counting index bytes + output bytes, as bench/gpu-dequant.ts counts them.
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdint.h>
#include <algorithm>
#include <vector>
#include "timing.cuh"
// The gather ceiling's own memory instructions and gather addresses (st_stream_load16/8,
// st_store16, st_gather_at, st_row_word), so that both measure the same traffic.
#include "../../kernels/stream/stream.cu"

#define CHECK(x) bench_check((x), #x)

static constexpr uint32_t TABLE_ENTRIES = 65536;  // 16-byte entries: 1 MiB (table_mask + 1 of lq_stream_gather_*)

__device__ __forceinline__ uint32_t cluster_rank() { uint32_t r; asm("mov.u32 %0, %%cluster_ctarank;" : "=r"(r)); return r; }
__device__ __forceinline__ void cluster_sync() { asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::: "memory"); }
__device__ __forceinline__ uint32_t mapa(uint32_t shared_addr, uint32_t rank) { uint32_t r; asm("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(r) : "r"(shared_addr), "r"(rank)); return r; }
__device__ __forceinline__ uint4 ld_cluster16(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared::cluster.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(addr));
  return v;
}

// MODE 0: global table through L1/L2 (__ldg). MODE C > 0: the table split over a cluster of C.
template <int OUT_VECTORS, int MODE>
__global__ void gather_write(const uint8_t* __restrict__ indices, const uint4* __restrict__ table, uint4* __restrict__ dst, int64_t vectors) {
  extern __shared__ uint4 slice[];
  constexpr uint32_t SLICE = MODE > 0 ? TABLE_ENTRIES / MODE : 1;
  uint32_t slice_base = 0;
  if constexpr (MODE > 0) {
    const uint32_t rank = cluster_rank();
    for (uint32_t e = threadIdx.x; e < SLICE; e += blockDim.x) slice[e] = table[rank * SLICE + e];
    slice_base = (uint32_t)__cvta_generic_to_shared(slice);
    cluster_sync();
  }
  const int64_t items = vectors / 8;
  for (int64_t item = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; item < items; item += (int64_t)gridDim.x * blockDim.x) {
    const uint4 main = st_stream_load16(reinterpret_cast<const uint4*>(indices) + item);
    const uint2 res = st_stream_load8(reinterpret_cast<const uint2*>(indices + 2 * vectors) + item);
    const uint32_t q[4] = {main.x, main.y, main.z, main.w};
    const uint32_t salt = res.x ^ res.y;
    uint4 g[8];
#pragma unroll
    for (int c = 0; c < 8; c++) {
      const uint32_t at = st_gather_at(item * 8 + c, (q[c / 2] >> (16 * (c % 2))) & 0xFFFFu, TABLE_ENTRIES - 1);
      if constexpr (MODE == 0) g[c] = __ldg(table + at);
      else g[c] = ld_cluster16(mapa(slice_base + (at % SLICE) * 16, at / SLICE));
    }
    uint4* to = dst + (item - item % 32) * 8 * OUT_VECTORS + item % 32;
#pragma unroll
    for (int k = 0; k < 8 * OUT_VECTORS; k++) {
      const int row = k / OUT_VECTORS, first = OUT_VECTORS == 1 ? 0 : 4 * (k % 2);
      uint32_t w[4];
#pragma unroll
      for (int m = 0; m < 4; m++) w[m] = OUT_VECTORS == 1 ? st_row_word(g[2 * m], row) ^ st_row_word(g[2 * m + 1], row) : st_row_word(g[first + m], row);
      st_store16(to + 32 * k, make_uint4(w[0] ^ salt, w[1], w[2], w[3] ^ (uint32_t)k));
    }
  }
  // No block may leave while others of its cluster may still read its slice.
  if constexpr (MODE > 0) cluster_sync();
}

template <int OUT_VECTORS, int MODE>
void run(const char* name, const uint8_t* indices, const uint4* table, uint4* dst, int64_t vectors, int threads, int blocksPerSm, double copyGBs, int sms) {
  auto kernel = gather_write<OUT_VECTORS, MODE>;
  const size_t smem = MODE > 0 ? (size_t)TABLE_ENTRIES / MODE * 16 : 0;
  if (smem > 0) CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  if (MODE > 8) CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  int grid = 0;
  if (MODE > 0) {
    cudaLaunchConfig_t probe = {};
    cudaLaunchAttribute attr;
    attr.id = cudaLaunchAttributeClusterDimension;
    attr.val.clusterDim.x = MODE; attr.val.clusterDim.y = 1; attr.val.clusterDim.z = 1;
    probe.gridDim = dim3(MODE); probe.blockDim = dim3(threads); probe.dynamicSmemBytes = smem; probe.attrs = &attr; probe.numAttrs = 1;
    int clusters = 0;
    cudaError_t e = cudaOccupancyMaxActiveClusters(&clusters, kernel, &probe);
    if (e != cudaSuccess || clusters == 0) { printf("%-34s threads %4d: no cluster fits (%s)\n", name, threads, cudaGetErrorString(e)); cudaGetLastError(); return; }
    grid = clusters * MODE;
  } else {
    int perSm = 0;
    CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&perSm, kernel, threads, 0));
    grid = std::min(perSm, blocksPerSm) * sms;
  }
  cudaLaunchAttribute attr;
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = MODE > 0 ? MODE : 1; attr.val.clusterDim.y = 1; attr.val.clusterDim.z = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(grid); config.blockDim = dim3(threads); config.dynamicSmemBytes = smem;
  config.attrs = &attr; config.numAttrs = MODE > 0 ? 1 : 0;
  const float ms = time_launches([&] { cudaLaunchKernelEx(&config, kernel, indices, table, dst, vectors); });
  const double bytes = (double)vectors * (3 + 16 * OUT_VECTORS);
  const double gbs = bytes / (ms * 1e-3) / 1e9;
  printf("%-34s threads %4d grid %4d: %7.3f ms  %6.0f GB/s  %5.1f %% of copy\n", name, threads, grid, ms, gbs, 100 * gbs / copyGBs);
}

int main() {
  int sms = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  printf("%s, %d SMs\n", prop.name, sms);
  const size_t copyBytes = (size_t)1 << 30;
  void *a, *b;
  CHECK(cudaMalloc(&a, copyBytes)); CHECK(cudaMalloc(&b, copyBytes));
  CHECK(cudaMemset(a, 1, copyBytes));
  const float copyMs = time_launches([&] { cudaMemcpyAsync(b, a, copyBytes, cudaMemcpyDeviceToDevice); });
  const double copyGBs = 2.0 * copyBytes / (copyMs * 1e-3) / 1e9;
  printf("cudaMemcpy 1 GiB: %.3f ms, %.0f GB/s (read + write)\n", copyMs, copyGBs);
  CHECK(cudaFree(a)); CHECK(cudaFree(b));

  const int64_t vectors = (int64_t)11008 * 4096 / 8;  // 11008x4096 weights in vectors of 8
  uint8_t* indices; uint4* table; uint4* dst;
  CHECK(cudaMalloc(&indices, vectors * 3));
  CHECK(cudaMalloc(&table, TABLE_ENTRIES * 16));
  CHECK(cudaMalloc(&dst, vectors * 32));
  std::vector<uint8_t> host(vectors * 3);
  uint32_t s = 12345;
  for (auto& x : host) { s = s * 1664525u + 1013904223u; x = (uint8_t)(s >> 24); }
  CHECK(cudaMemcpy(indices, host.data(), host.size(), cudaMemcpyHostToDevice));
  CHECK(cudaMemset(table, 7, TABLE_ENTRIES * 16));

  for (int threads : {256, 512, 1024}) {
    run<1, 0>("fp16, global table (L1/L2)", indices, table, dst, vectors, threads, 2048 / threads, copyGBs, sms);
    run<1, 8>("fp16, cluster of 8 (128 KiB each)", indices, table, dst, vectors, threads, 1, copyGBs, sms);
    run<1, 16>("fp16, cluster of 16 (64 KiB each)", indices, table, dst, vectors, threads, 1, copyGBs, sms);
    run<2, 0>("f32, global table (L1/L2)", indices, table, dst, vectors, threads, 2048 / threads, copyGBs, sms);
    run<2, 8>("f32, cluster of 8", indices, table, dst, vectors, threads, 1, copyGBs, sms);
    run<2, 16>("f32, cluster of 16", indices, table, dst, vectors, threads, 1, copyGBs, sms);
  }
  return 0;
}
