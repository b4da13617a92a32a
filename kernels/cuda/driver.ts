import { createRequire } from "node:module";
import { KernelError } from "../../formats/errors.js";

/**
 * The CUDA driver API (libcuda.so.1, which every NVIDIA driver installs) through koffi: no
 * compiled addon and no CUDA toolkit at run time. Only what the kernels need: the primary
 * context of one device, modules loaded from a fatbin image, device memory, copies, launches on
 * the default stream, and events for timing.
 *
 * koffi is chosen over a node-gyp addon because the driver API is a stable C ABI: an FFI call
 * costs ~100 ns, nothing has to be built for the user's Node version, and machines without a GPU
 * never load any of it (this module is imported lazily, see ../engine.ts).
 *
 * Every CUresult other than CUDA_SUCCESS becomes a KernelError naming the call and the code.
 */

/** A device pointer (CUdeviceptr, 64-bit). */
export type DevicePointer = bigint;

interface Koffi {
  load(path: string): KoffiLib;
  opaque(name: string): unknown;
  pointer(name: string, type: unknown): unknown;
}
interface KoffiLib {
  func(prototype: string): (...args: unknown[]) => unknown;
}

export const CUDA_SUCCESS = 0;
const CUDA_ERROR_OUT_OF_MEMORY = 2;
const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;
const CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16;
const CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR = 81;
const CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97;

export type Fn = (...args: unknown[]) => number;

/** The bound driver functions, by name. */
export interface Driver {
  cuInit: Fn;
  cuDeviceGetCount: Fn;
  cuDeviceGet: Fn;
  cuDeviceGetName: Fn;
  cuDeviceGetAttribute: Fn;
  cuDeviceTotalMem_v2: Fn;
  cuDevicePrimaryCtxRetain: Fn;
  cuDevicePrimaryCtxRelease_v2: Fn;
  cuCtxSetCurrent: Fn;
  cuCtxSynchronize: Fn;
  cuModuleLoadData: Fn;
  cuModuleUnload: Fn;
  cuModuleGetFunction: Fn;
  cuModuleGetGlobal_v2: Fn;
  cuFuncSetAttribute: Fn;
  cuFuncGetAttribute: Fn;
  cuOccupancyMaxActiveBlocksPerMultiprocessor: Fn;
  cuMemAlloc_v2: Fn;
  cuMemFree_v2: Fn;
  cuMemcpyHtoD_v2: Fn;
  cuMemcpyDtoH_v2: Fn;
  cuMemcpyDtoD_v2: Fn;
  cuMemsetD8_v2: Fn;
  cuLaunchKernel: Fn;
  cuEventCreate: Fn;
  cuEventRecord: Fn;
  cuEventSynchronize: Fn;
  cuEventElapsedTime: Fn;
  cuEventDestroy_v2: Fn;
  cuGetErrorName: Fn;
}

const PROTOTYPES: Record<keyof Driver, string> = {
  cuInit: "int cuInit(unsigned int flags)",
  cuDeviceGetCount: "int cuDeviceGetCount(_Out_ int *count)",
  cuDeviceGet: "int cuDeviceGet(_Out_ int *device, int ordinal)",
  cuDeviceGetName: "int cuDeviceGetName(_Out_ uint8_t *name, int length, int device)",
  cuDeviceGetAttribute: "int cuDeviceGetAttribute(_Out_ int *value, int attribute, int device)",
  cuDeviceTotalMem_v2: "int cuDeviceTotalMem_v2(_Out_ size_t *bytes, int device)",
  cuDevicePrimaryCtxRetain: "int cuDevicePrimaryCtxRetain(_Out_ CUctx_st **context, int device)",
  cuDevicePrimaryCtxRelease_v2: "int cuDevicePrimaryCtxRelease_v2(int device)",
  cuCtxSetCurrent: "int cuCtxSetCurrent(CUctx_st *context)",
  cuCtxSynchronize: "int cuCtxSynchronize()",
  cuModuleLoadData: "int cuModuleLoadData(_Out_ CUmod_st **module, const void *image)",
  cuModuleUnload: "int cuModuleUnload(CUmod_st *module)",
  cuModuleGetFunction: "int cuModuleGetFunction(_Out_ CUfunc_st **function, CUmod_st *module, const char *name)",
  cuModuleGetGlobal_v2: "int cuModuleGetGlobal_v2(_Out_ uint64_t *pointer, _Out_ size_t *bytes, CUmod_st *module, const char *name)",
  cuFuncSetAttribute: "int cuFuncSetAttribute(CUfunc_st *function, int attribute, int value)",
  cuFuncGetAttribute: "int cuFuncGetAttribute(_Out_ int *value, int attribute, CUfunc_st *function)",
  cuOccupancyMaxActiveBlocksPerMultiprocessor: "int cuOccupancyMaxActiveBlocksPerMultiprocessor(_Out_ int *blocks, CUfunc_st *function, int blockSize, size_t sharedBytes)",
  cuMemAlloc_v2: "int cuMemAlloc_v2(_Out_ uint64_t *pointer, size_t bytes)",
  cuMemFree_v2: "int cuMemFree_v2(uint64_t pointer)",
  cuMemcpyHtoD_v2: "int cuMemcpyHtoD_v2(uint64_t destination, const void *source, size_t bytes)",
  cuMemcpyDtoH_v2: "int cuMemcpyDtoH_v2(void *destination, uint64_t source, size_t bytes)",
  cuMemcpyDtoD_v2: "int cuMemcpyDtoD_v2(uint64_t destination, uint64_t source, size_t bytes)",
  cuMemsetD8_v2: "int cuMemsetD8_v2(uint64_t destination, uint8_t value, size_t bytes)",
  cuLaunchKernel:
    "int cuLaunchKernel(CUfunc_st *function, unsigned int gridX, unsigned int gridY, unsigned int gridZ, unsigned int blockX, unsigned int blockY, unsigned int blockZ, unsigned int sharedBytes, void *stream, void **parameters, void **extra)",
  cuEventCreate: "int cuEventCreate(_Out_ CUevent_st **event, unsigned int flags)",
  cuEventRecord: "int cuEventRecord(CUevent_st *event, void *stream)",
  cuEventSynchronize: "int cuEventSynchronize(CUevent_st *event)",
  cuEventElapsedTime: "int cuEventElapsedTime(_Out_ float *milliseconds, CUevent_st *start, CUevent_st *end)",
  cuEventDestroy_v2: "int cuEventDestroy_v2(CUevent_st *event)",
  cuGetErrorName: "int cuGetErrorName(int result, _Out_ const char **name)",
};

/** Why the driver could not be opened, or the bound functions. Loaded once per process. */
let loaded: Driver | KernelError | undefined;

export function driver(): Driver {
  if (loaded === undefined) loaded = loadDriver();
  if (loaded instanceof KernelError) throw loaded;
  return loaded;
}

function loadDriver(): Driver | KernelError {
  let koffi: Koffi;
  try {
    koffi = createRequire(import.meta.url)("koffi") as Koffi;
  } catch (cause) {
    return new KernelError("NO_DEVICE", `the koffi FFI package could not be loaded: ${(cause as Error).message}`, { cause });
  }
  let lib: KoffiLib;
  try {
    lib = koffi.load("libcuda.so.1");
  } catch (cause) {
    return new KernelError("NO_DEVICE", "no NVIDIA driver: libcuda.so.1 could not be loaded", { cause });
  }
  for (const name of ["CUctx_st", "CUmod_st", "CUfunc_st", "CUevent_st"]) koffi.opaque(name);
  const bound: Partial<Driver> = {};
  try {
    for (const [name, prototype] of Object.entries(PROTOTYPES)) bound[name as keyof Driver] = lib.func(prototype) as Fn;
  } catch (cause) {
    return new KernelError("NO_DEVICE", `libcuda.so.1 lacks a driver API function: ${(cause as Error).message}`, { cause });
  }
  const d = bound as Driver;
  const init = d.cuInit(0);
  if (init !== CUDA_SUCCESS) return new KernelError("NO_DEVICE", `cuInit failed with ${errorName(d, init)}: no usable GPU`, { actual: init });
  return d;
}

export function errorName(d: Driver, result: number): string {
  const name: (string | null)[] = [null];
  return d.cuGetErrorName(result, name) === CUDA_SUCCESS && name[0] !== null ? `${name[0]} (${result})` : `CUresult ${result}`;
}

/** Throws a KernelError when `result` is not CUDA_SUCCESS. */
export function check(call: string, result: number): void {
  if (result === CUDA_SUCCESS) return;
  const d = driver();
  const code = result === CUDA_ERROR_OUT_OF_MEMORY ? "OUT_OF_MEMORY" : "DRIVER_ERROR";
  throw new KernelError(code, `${call} failed with ${errorName(d, result)}`, { actual: result });
}

export interface DeviceInfo {
  ordinal: number;
  name: string;
  /** e.g. 90 for sm_90. */
  computeCapability: number;
  multiprocessors: number;
  /** Dynamic shared memory one block may have once its kernel opts in (cuFuncSetAttribute; 48 KiB without). */
  sharedBytesPerBlockOptin: number;
  /** Shared memory of one multiprocessor, for all its resident blocks together. */
  sharedBytesPerMultiprocessor: number;
  totalBytes: number;
}

/** Whether the driver and at least one device are usable; the reason when not. */
export function probeDevice(): { ok: true } | { ok: false; reason: string } {
  try {
    const count = [0];
    check("cuDeviceGetCount", driver().cuDeviceGetCount(count));
    return count[0]! > 0 ? { ok: true } : { ok: false, reason: "the NVIDIA driver reports no device" };
  } catch (error) {
    return { ok: false, reason: (error as Error).message };
  }
}

/**
 * One device's primary context, made current on this thread. Node runs JavaScript on one
 * thread, so the context stays current for every call below.
 *
 * The primary context, not one of cuCtxCreate's, because cuBLAS (cuda/cublas.ts) runs on the
 * CUDA runtime, which works in the device's primary context: with this one current, the runtime,
 * the kernels and the buffers allocated here all share one context, and device pointers pass
 * between them as they are.
 */
export class CudaContext {
  /**
   * Freed buffers kept for reuse, by exact size, up to POOL_LIMIT_BYTES in all: the launches of
   * one tensor after another allocate the same sizes again. Reuse also spares each call the first
   * touch of fresh device memory, which the H100 serves at about 15 GB/s, 200 times slower than a
   * warm buffer (bench/gpu-dequant.ts).
   */
  private readonly pool = new Map<number, DevicePointer[]>();
  private readonly sizes = new Map<DevicePointer, number>();
  private pooledBytes = 0;
  static readonly POOL_LIMIT_BYTES = 2 ** 32;

  private constructor(readonly info: DeviceInfo, private readonly context: unknown) {}

  static open(ordinal = 0): CudaContext {
    const d = driver();
    const device = [0];
    check("cuDeviceGet", d.cuDeviceGet(device, ordinal));
    const nameBytes = new Uint8Array(256);
    check("cuDeviceGetName", d.cuDeviceGetName(nameBytes, nameBytes.length, device[0]));
    const attribute = (id: number) => {
      const value = [0];
      check("cuDeviceGetAttribute", d.cuDeviceGetAttribute(value, id, device[0]));
      return value[0]!;
    };
    const total = [0];
    check("cuDeviceTotalMem", d.cuDeviceTotalMem_v2(total, device[0]));
    const context: unknown[] = [null];
    check("cuDevicePrimaryCtxRetain", d.cuDevicePrimaryCtxRetain(context, device[0]));
    check("cuCtxSetCurrent", d.cuCtxSetCurrent(context[0]));
    const name = new TextDecoder().decode(nameBytes.subarray(0, Math.max(0, nameBytes.indexOf(0))));
    const info = {
      ordinal,
      name,
      computeCapability: attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR) * 10 + attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR),
      multiprocessors: attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT),
      sharedBytesPerBlockOptin: attribute(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN),
      sharedBytesPerMultiprocessor: attribute(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR),
      totalBytes: Number(total[0]),
    };
    return new CudaContext(info, context[0]);
  }

  alloc(bytes: number): DevicePointer {
    const size = Math.max(1, bytes);
    const reused = this.pool.get(size)?.pop();
    if (reused !== undefined) {
      this.pooledBytes -= size;
      this.sizes.set(reused, size);
      return reused;
    }
    const pointer = [0n];
    check(`cuMemAlloc(${bytes} bytes)`, driver().cuMemAlloc_v2(pointer, size));
    const address = BigInt(pointer[0]!);
    this.sizes.set(address, size);
    return address;
  }

  /** Returns `pointer` to the reuse pool, or to the driver when the pool is full. */
  free(pointer: DevicePointer): void {
    const size = this.sizes.get(pointer);
    this.sizes.delete(pointer);
    if (size !== undefined && this.pooledBytes + size <= CudaContext.POOL_LIMIT_BYTES) {
      const list = this.pool.get(size) ?? [];
      list.push(pointer);
      this.pool.set(size, list);
      this.pooledBytes += size;
      return;
    }
    check("cuMemFree", driver().cuMemFree_v2(pointer));
  }

  /** Frees the pool and releases the device's primary context; the context is unusable afterwards. */
  close(): void {
    this.releasePool();
    check("cuDevicePrimaryCtxRelease", driver().cuDevicePrimaryCtxRelease_v2(this.info.ordinal));
  }

  /** Gives every pooled buffer back to the driver. */
  releasePool(): void {
    for (const list of this.pool.values()) for (const pointer of list) check("cuMemFree", driver().cuMemFree_v2(pointer));
    this.pool.clear();
    this.pooledBytes = 0;
  }

  /** Allocates and fills device memory with `bytes`. */
  upload(bytes: Uint8Array): DevicePointer {
    const pointer = this.alloc(bytes.byteLength);
    if (bytes.byteLength > 0) check("cuMemcpyHtoD", driver().cuMemcpyHtoD_v2(pointer, bytes, bytes.byteLength));
    return pointer;
  }

  /** Copies `bytes` into existing device memory at `pointer`. */
  uploadInto(pointer: DevicePointer, bytes: Uint8Array): void {
    if (bytes.byteLength > 0) check("cuMemcpyHtoD", driver().cuMemcpyHtoD_v2(pointer, bytes, bytes.byteLength));
  }

  download(pointer: DevicePointer, into: Uint8Array): Uint8Array {
    if (into.byteLength > 0) check("cuMemcpyDtoH", driver().cuMemcpyDtoH_v2(into, pointer, into.byteLength));
    return into;
  }

  copy(destination: DevicePointer, source: DevicePointer, bytes: number): void {
    check("cuMemcpyDtoD", driver().cuMemcpyDtoD_v2(destination, source, bytes));
  }

  zero(pointer: DevicePointer, bytes: number): void {
    check("cuMemsetD8", driver().cuMemsetD8_v2(pointer, 0, bytes));
  }

  synchronize(): void {
    check("cuCtxSynchronize", driver().cuCtxSynchronize());
  }

  /** Milliseconds `work` takes on the GPU (events around it on the default stream). */
  time(work: () => void): number {
    const d = driver();
    const start: unknown[] = [null];
    const end: unknown[] = [null];
    check("cuEventCreate", d.cuEventCreate(start, 0));
    check("cuEventCreate", d.cuEventCreate(end, 0));
    try {
      check("cuEventRecord", d.cuEventRecord(start[0], null));
      work();
      check("cuEventRecord", d.cuEventRecord(end[0], null));
      check("cuEventSynchronize", d.cuEventSynchronize(end[0]));
      const milliseconds = [0];
      check("cuEventElapsedTime", d.cuEventElapsedTime(milliseconds, start[0], end[0]));
      return milliseconds[0]!;
    } finally {
      d.cuEventDestroy_v2(start[0]);
      d.cuEventDestroy_v2(end[0]);
    }
  }
}
