// Asynchronous global → shared copies (cp.async, sm_80 and later: every architecture the
// fatbin holds). A thread's copies go in flight without holding registers until they land, so a
// kernel can keep a whole next batch of input in flight while it works on the current one.
// Usage: issue copies, lq_cp_async_commit() closes a group, lq_cp_async_wait<N>() waits until at
// most N of this thread's groups are pending; then a block barrier makes every thread's landed
// copies visible to the others.
#pragma once
#include <stdint.h>

// Both addresses aligned to the size (4, 8 or 16 bytes).
template <int BYTES>
__device__ __forceinline__ void lq_cp_async(void* shared, const void* global) {
  static_assert(BYTES == 4 || BYTES == 8 || BYTES == 16, "cp.async moves 4, 8 or 16 bytes");
  const uint32_t to = (uint32_t)__cvta_generic_to_shared(shared);
  // .cg (L2 only) exists for 16 bytes; the smaller copies go through L1 (.ca).
  if constexpr (BYTES == 16) asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(to), "l"(global) : "memory");
  else asm volatile("cp.async.ca.shared.global [%0], [%1], %2;" ::"r"(to), "l"(global), "n"(BYTES) : "memory");
}

__device__ __forceinline__ void lq_cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }

template <int PENDING>
__device__ __forceinline__ void lq_cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(PENDING) : "memory");
}
