// The streaming ceiling of the dequant benchmark (bench/gpu-dequant.ts): a kernel that moves a
// given number of bytes from DRAM and to DRAM with nothing else to do, in the proportions of
// one format's dequant or verify call. A format's kernel cannot beat this on the same bytes, so
// "% of ceiling" says how much of what is left is the format's own work, and "ceiling % of
// copy" how much of the copy bandwidth a read/write mix of that shape can reach at all on this
// GPU. Never used by the product.
//
// Traffic, in 16-byte vectors: reads of `src` (read_vectors) and writes of `dst` (write_vectors).
// The larger side drives a grid-stride loop; the smaller side is spread evenly over it (vector
// i of the driving side touches vector ⌊i·smaller/larger⌋ of the other), so reads and writes
// interleave through the whole run as they do in a dequant kernel: repeated touches of one
// smaller-side vector hit L1/L2, so DRAM sees each byte once. The index is scaled by a float64
// ratio (one multiply and one conversion): a 64-bit integer division per vector made an
// earlier version of this kernel bound by instruction issue, below the kernels it measured.
#include <stdint.h>

// What a read contributes to the stored value, so that no read can be optimised away.
__device__ __forceinline__ uint4 st_mix(uint4 a, uint4 b) { return make_uint4(a.x ^ b.y, a.y ^ b.z, a.z ^ b.w, a.w ^ b.x); }

extern "C" __global__ void __launch_bounds__(256) lq_stream_mix(const uint4* __restrict__ src, int64_t read_vectors, uint4* __restrict__ dst,
                                                               int64_t write_vectors, uint32_t* __restrict__ sink) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  const int64_t first = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  uint4 acc = make_uint4(0, 0, 0, 0);
  if (write_vectors >= read_vectors) {
    const double ratio = (double)read_vectors / (double)max(write_vectors, (int64_t)1);
    for (int64_t i = first; i < write_vectors; i += stride) {
      const uint4 v = read_vectors == 0 ? make_uint4((uint32_t)i, 0, 0, 0) : __ldg(src + min((int64_t)((double)i * ratio), read_vectors - 1));
      dst[i] = st_mix(v, make_uint4((uint32_t)i, 1u, 2u, 3u));
    }
  } else {
    const double ratio = (double)write_vectors / (double)read_vectors;
    for (int64_t i = first; i < read_vectors; i += stride) {
      acc = st_mix(acc, __ldg(src + i));
      // The last read vector that maps to a write vector stores it.
      const int64_t j = (int64_t)((double)i * ratio);
      if (write_vectors > 0 && (int64_t)((double)(i + 1) * ratio) != j && j < write_vectors) dst[j] = acc;
    }
    // A verify-like call writes nearly nothing: one word per thread only if the impossible
    // pattern shows up, so the reads stay live without adding traffic.
    if ((acc.x & acc.y & acc.z & acc.w) == 0xffffffffu) sink[0] = acc.x;
  }
}
