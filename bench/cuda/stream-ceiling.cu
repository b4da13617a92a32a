// The streaming ceiling of a dequant kernel on this GPU: how fast can any kernel read R and
// write W bytes, interleaved as a dequant kernel interleaves them, against cudaMemcpy of the
// same bytes? Standalone (CUDA runtime, no Node), so it also runs where lmpack is not built:
//
//   nvcc -O3 -std=c++17 -arch=sm_90 -o /tmp/stream-ceiling bench/cuda/stream-ceiling.cu && /tmp/stream-ceiling
//
// Shapes per 16 bytes written: 0 (verify: reads only), 4, 8 or 16 bytes read (an f32 output of
// 8-bit codes reads 4, an fp16 output of 8-bit codes 8, ...). Variants: a persistent grid-stride
// wave or one vector per thread; plain stores or streaming stores (st.global.cs, evict-first).
// Timing: timing.cuh (the median of 7 batches of 20 back-to-back launches).
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdint.h>
#include <algorithm>
#include <vector>
#include "timing.cuh"

#define CHECK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e)); return 1; } } while (0)

template <int READ_BYTES, bool STREAMING>
__global__ void __launch_bounds__(256) mix(const uint8_t* __restrict__ src, uint4* __restrict__ dst, int64_t vectors, uint32_t* sink) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  uint32_t acc = 0;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < vectors; i += stride) {
    uint4 v;
    if constexpr (READ_BYTES == 16) { const uint4 r = __ldg(reinterpret_cast<const uint4*>(src) + i); v = make_uint4(r.x ^ 1u, r.y, r.z, r.w); }
    else if constexpr (READ_BYTES == 8) { const uint2 r = __ldg(reinterpret_cast<const uint2*>(src) + i); v = make_uint4(r.x, r.y, r.x ^ r.y, r.y + 1u); }
    else if constexpr (READ_BYTES == 4) { const uint32_t r = __ldg(reinterpret_cast<const uint32_t*>(src) + i); v = make_uint4(r, r + 1u, r + 2u, r + 3u); }
    else v = make_uint4((uint32_t)i, 1u, 2u, 3u);
    if constexpr (STREAMING) __stcs(dst + i, v); else dst[i] = v;
    acc ^= v.x;
  }
  if (acc == 0x9e3779b9u) sink[0] = acc;
}

// Reads only (verify): 16-byte loads, xor-reduced.
__global__ void __launch_bounds__(256) read_only(const uint4* __restrict__ src, int64_t vectors, uint32_t* sink) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  uint32_t acc = 0;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < vectors; i += stride) { const uint4 r = __ldg(src + i); acc ^= r.x ^ r.y ^ r.z ^ r.w; }
  if (acc == 0x9e3779b9u) sink[0] = acc;
}

int main() {
  cudaDeviceProp prop; CHECK(cudaGetDeviceProperties(&prop, 0));
  const int sms = prop.multiProcessorCount;
  const size_t big = size_t(1) << 30;
  uint8_t *src, *dst; uint32_t* sink;
  CHECK(cudaMalloc(&src, big)); CHECK(cudaMalloc(&dst, 4 * big)); CHECK(cudaMalloc(&sink, 64));
  CHECK(cudaMemset(src, 1, big)); CHECK(cudaMemset(dst, 0, 4 * big));
  const float copy_ms = time_launches([&] { cudaMemcpyAsync(dst, src, big, cudaMemcpyDeviceToDevice); });
  const double copy = 2.0 * big / (copy_ms / 1e3) / 1e9;
  printf("# streaming ceiling on %s (%d SMs); cudaMemcpy D2D of 1 GiB: %.0f GB/s (read + write)\n\n", prop.name, sms, copy);
  printf("| written MB | read per 16 B written | kernel | GB/s (read + write) | %% of 1 GiB copy | same-bytes cudaMemcpy GB/s |\n|---|---|---|---|---|---|\n");
  // 45 M weights (11008 × 4096): fp16 output 90 MB, f32 180 MB; and 1 GiB written.
  for (size_t written : {size_t(90177536), size_t(180355072), big}) {
    const int64_t vectors = written / 16;
    for (int read : {0, 4, 8, 16}) {
      const size_t moved = written + size_t(vectors) * read;
      const float same_ms = time_launches([&] { cudaMemcpyAsync(dst, src, std::min(moved / 2, big), cudaMemcpyDeviceToDevice); });
      const double same = 2.0 * std::min(moved / 2, big) / (same_ms / 1e3) / 1e9;
      struct V { const char* name; int grid; bool streaming; };
      for (V v : {V{"wave of 8 blocks/SM, st", sms * 8, false}, V{"wave of 8 blocks/SM, st.cs", sms * 8, true}, V{"block per 256 vectors, st", int((vectors + 255) / 256), false}, V{"block per 256 vectors, st.cs", int((vectors + 255) / 256), true}}) {
        float ms = 0;
        auto go = [&](auto kernel) { ms = time_launches([&] { kernel<<<v.grid, 256>>>(src, reinterpret_cast<uint4*>(dst), vectors, sink); }); };
        if (read == 0) v.streaming ? go(mix<0, true>) : go(mix<0, false>);
        if (read == 4) v.streaming ? go(mix<4, true>) : go(mix<4, false>);
        if (read == 8) v.streaming ? go(mix<8, true>) : go(mix<8, false>);
        if (read == 16) v.streaming ? go(mix<16, true>) : go(mix<16, false>);
        const double rate = moved / (ms / 1e3) / 1e9;
        printf("| %.0f | %d B | %s | %.0f | %.1f %% | %.0f |\n", written / 1e6, read, v.name, rate, 100 * rate / copy, same);
      }
    }
    // Reads only, the verify shape: the same byte count read.
    const int64_t read_vectors = written / 16;
    for (int grid : {sms * 8, int((read_vectors + 255) / 256)}) {
      const float ms = time_launches([&] { read_only<<<grid, 256>>>(reinterpret_cast<const uint4*>(src), std::min<int64_t>(read_vectors, big / 16), sink); });
      const double rate = std::min<int64_t>(read_vectors, big / 16) * 16.0 / (ms / 1e3) / 1e9;
      printf("| 0 (reads %.0f MB) | all | reads only, %s | %.0f | %.1f %% | |\n", std::min<double>(written, big) / 1e6, grid == sms * 8 ? "wave" : "block per 256 vectors", rate, 100 * rate / copy);
    }
  }
  CHECK(cudaGetLastError());
  return 0;
}
