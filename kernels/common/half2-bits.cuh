// Two fp16 values in one 32-bit word, and back: bit copies (memcpy, which compiles to no
// instruction), for kernels that build or store fp16 pairs with integer operations.
#pragma once
#include <stdint.h>
#include <string.h>
#include <cuda_fp16.h>

__device__ __forceinline__ __half2 lq_bits_as_half2(uint32_t bits) {
  __half2 h;
  memcpy(&h, &bits, sizeof h);
  return h;
}

__device__ __forceinline__ uint32_t lq_half2_as_bits(__half2 h) {
  uint32_t bits;
  memcpy(&bits, &h, sizeof bits);
  return bits;
}
