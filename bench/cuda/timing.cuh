// Shared by the standalone CUDA benches (stream-ceiling.cu, gather-dsmem.cu): the time of one
// launch, as the median of 7 batches of 20 back-to-back launches between an event pair, after one
// warm-up launch. A launch error exits with its message (the benches have nothing to clean up).
#pragma once
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <algorithm>
#include <vector>

inline void bench_check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
  exit(1);
}

template <typename F> float time_launches(F launch) {
  cudaEvent_t a, b;
  bench_check(cudaEventCreate(&a), "cudaEventCreate");
  bench_check(cudaEventCreate(&b), "cudaEventCreate");
  launch();
  bench_check(cudaGetLastError(), "warm-up launch");
  bench_check(cudaDeviceSynchronize(), "warm-up launch");
  std::vector<float> times;
  for (int batch = 0; batch < 7; batch++) {
    cudaEventRecord(a);
    for (int k = 0; k < 20; k++) launch();
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    times.push_back(ms / 20);
  }
  bench_check(cudaGetLastError(), "timed launches");
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}
