// Status bits a kernel ORs into its uint32 status word (device memory the host zeroes before the
// launch and reads after it). Kernels never printf, exit or assert: a bad element is reported
// here and skipped, and the host turns the word into a KernelError (kernels/cuda/status.ts).
// The host validates every index before a launch as well; these bits are the second line.
#pragma once
#include <stdint.h>

#define LQ_STATUS_OK 0u
// a code is wider than the format's bits
#define LQ_STATUS_CODE_RANGE (1u << 0)
// a group index (g_idx) or zero point is out of range
#define LQ_STATUS_INDEX_RANGE (1u << 1)
// a shape argument is impossible (zero or negative sizes, group size 0)
#define LQ_STATUS_SHAPE (1u << 2)

__device__ __forceinline__ void lq_report(uint32_t* status, uint32_t bits) {
  atomicOr(status, bits);
}
