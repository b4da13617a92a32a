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

// The gather ceiling of VPTQ's rows (bench/gpu-dequant.ts): exactly the memory traffic of VPTQ
// dequant (kernels/vptq, v8 with a uint8 residual) and nothing else. Per vector of 8 weights: 3
// index bytes read as a stream (uint16 main, uint8 residual: the columns kernel's layout), one
// 16-byte gather from a table of table_mask + 1 16-byte entries (a power of two: the main
// codebook, 1 MiB for k 65536; served by L1/L2 as the kernel's are) at an index that depends on
// the bytes read, and
// 16 bytes written (fp16 weights), 32 written (float32) or 32 of reference read (verify). The
// residual codebook lives in shared memory in the kernel: no memory traffic, left out here.
//
// A thread owns items of 8 vectors, as the kernel's threads own 8 columns of one vector row: a
// 16- and an 8-byte index load, then its 8 gathers all issued before any use, then its stores
// (or reference loads, a piece of 4 vectors at a time with their 4 gathers, as the verify kernel
// loads them). Every index, store and reference instruction of a warp covers 256-512 contiguous
// bytes; the gather addresses are a hash of the vector's number XOR the index read, uniform over
// the table. Launched as such streams run fastest (bench/cuda/stream-ceiling.cu): a grid as large
// as the work for the weight outputs, a wave of resident blocks (LQ_STREAM_GATHER_VERIFY_BLOCKS
// per multiprocessor) for verify.
// `vectors`: a multiple of 256 (whole warps of items; the host rounds up and sizes the arrays).
#define LQ_STREAM_GATHER_VERIFY_BLOCKS 4

// The VPTQ kernel's own memory instructions (kernels/vptq/vptq.cuh): streamed loads that allocate
// no L1 line (so that L1 keeps codebook lines), and 16-byte stores that allocate none either.
__device__ __forceinline__ uint4 st_stream_load16(const void* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}
__device__ __forceinline__ uint2 st_stream_load8(const void* p) {
  uint2 v;
  asm("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
  return v;
}
__device__ __forceinline__ void st_store16(void* p, uint4 v) {
  asm volatile("st.global.L1::no_allocate.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w) : "memory");
}

// Index of vector v's gather: the hash of v XOR the 16-bit index read, inside the table.
__device__ __forceinline__ uint32_t st_gather_at(uint64_t v, uint32_t q, uint32_t table_mask) {
  return (((uint32_t)v * 0x9E3779B1u) >> 16 ^ q) & table_mask;
}

// Item `item`'s 8 indices (main in 16-bit halves, residual bytes folded into `salt`).
__device__ __forceinline__ void st_gather_indices(const uint8_t* __restrict__ indices, int64_t vectors, int64_t item, uint32_t (&q)[4], uint32_t& salt) {
  const uint4 main = st_stream_load16(reinterpret_cast<const uint4*>(indices) + item);
  const uint2 res = st_stream_load8(reinterpret_cast<const uint2*>(indices + 2 * vectors) + item);
  q[0] = main.x, q[1] = main.y, q[2] = main.z, q[3] = main.w;
  salt = res.x ^ res.y;
}

// Word `row / 2` of a gathered vector: what row `row` of its column contributes to a store.
__device__ __forceinline__ uint32_t st_row_word(uint4 v, int row) { return row / 2 == 0 ? v.x : row / 2 == 1 ? v.y : row / 2 == 2 ? v.z : v.w; }

// fp16 (OUT_VECTORS 1) or float32 (2) weights: 8 gathers, then 8 · OUT_VECTORS stores of 16
// bytes. As in the kernel, a store holds one row of several columns: all 8 gathers (fp16: 8
// columns of 2 bytes) or a piece's 4 (float32: 4 of 4 bytes), so each store waits on them (which
// also keeps ptxas from sinking the read-only gathers below earlier stores: sm_90 SASS).
template <int OUT_VECTORS>
__device__ __forceinline__ void st_gather_write(const uint8_t* __restrict__ indices, const uint4* __restrict__ table, uint32_t table_mask, uint4* __restrict__ dst, int64_t vectors) {
  const int64_t items = vectors / 8;
  for (int64_t item = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; item < items; item += (int64_t)gridDim.x * blockDim.x) {
    uint32_t q[4], salt;
    st_gather_indices(indices, vectors, item, q, salt);
    uint4 g[8];
#pragma unroll
    for (int c = 0; c < 8; c++) g[c] = __ldg(table + st_gather_at(item * 8 + c, (q[c / 2] >> (16 * (c % 2))) & 0xFFFFu, table_mask));
    // Store k of the item: 16-byte slot (warp's first item · 8 · OUT_VECTORS + k) · 32 + lane.
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
}

extern "C" __global__ void __launch_bounds__(256) lq_stream_gather_f16(const uint8_t* __restrict__ indices, const uint4* __restrict__ table, uint32_t table_mask,
                                                                      uint4* __restrict__ dst, int64_t vectors) {
  st_gather_write<1>(indices, table, table_mask, dst, vectors);
}

extern "C" __global__ void __launch_bounds__(256) lq_stream_gather_f32(const uint8_t* __restrict__ indices, const uint4* __restrict__ table, uint32_t table_mask,
                                                                      uint4* __restrict__ dst, int64_t vectors) {
  st_gather_write<2>(indices, table, table_mask, dst, vectors);
}

// Verify: per piece of 4 vectors, its 8 reference loads and 4 gathers issued before any use; the
// reference laid out as float32 weights are (16-byte slot (warp's first item · 16 + k) · 32 + lane).
extern "C" __global__ void __launch_bounds__(256, LQ_STREAM_GATHER_VERIFY_BLOCKS) lq_stream_gather_verify(const uint8_t* __restrict__ indices, const uint4* __restrict__ table,
                                                                                                        uint32_t table_mask, const uint4* __restrict__ reference,
                                                                                                        int64_t vectors, uint32_t* __restrict__ sink) {
  const int64_t items = vectors / 8;
  uint32_t acc = 0;
  for (int64_t item = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; item < items; item += (int64_t)gridDim.x * blockDim.x) {
    uint32_t q[4], salt;
    st_gather_indices(indices, vectors, item, q, salt);
    const uint4* from = reference + (item - item % 32) * 16 + item % 32;
#pragma unroll
    for (int piece = 0; piece < 2; piece++) {
      uint4 r[8], g[4];
#pragma unroll
      for (int k = 0; k < 8; k++) r[k] = st_stream_load16(from + 32 * (8 * piece + k));
#pragma unroll
      for (int c = 0; c < 4; c++) g[c] = __ldg(table + st_gather_at(item * 8 + 4 * piece + c, (q[2 * piece + c / 2] >> (16 * (c % 2))) & 0xFFFFu, table_mask));
#pragma unroll
      for (int k = 0; k < 8; k++) acc += (r[k].x ^ g[k / 2].y) + (r[k].y ^ g[k / 2].z) + (r[k].z ^ g[k / 2].w) + (r[k].w ^ g[k / 2].x);
    }
    acc ^= salt;
  }
  // Stored only if the impossible pattern shows up, so the loads stay live without adding traffic.
  if (acc == 0x9E3779B1u) sink[0] = acc;
}
