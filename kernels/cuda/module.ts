import { KernelError } from "../../formats/errors.js";
import { check, CUDA_SUCCESS, driver, errorName, type CudaContext, type DevicePointer } from "./driver.js";

/**
 * A loaded kernel image (a fatbin from kernels/build.mjs) and its launches: functions looked up
 * by name once, arguments marshalled as cuLaunchKernel wants them (an array of pointers, one to
 * each argument's value; koffi turns a JS array of typed arrays into exactly that).
 */

/** A kernel argument: a device pointer, or a scalar of the kernel's C type. */
export type KernelArgument = { pointer: DevicePointer } | { i64: number | bigint } | { i32: number } | { u32: number } | { f32: number } | { f64: number };

export interface LaunchShape {
  grid: readonly [number, number?, number?];
  block: readonly [number, number?, number?];
  sharedBytes?: number;
}

/** Dynamic shared memory every kernel may have per block without opting in. */
export const DEFAULT_SHARED_LIMIT_BYTES = 48 * 1024;
const CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 0;
const CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;

export class CudaModule {
  private readonly functions = new Map<string, unknown>();
  /** The dynamic shared memory each kernel has been opted in to, where above the default. */
  private readonly optedIn = new Map<string, number>();
  /** residentBlocks' answers by kernel, threads and shared bytes (the driver computes each the same every time). */
  private readonly resident = new Map<string, number>();
  /** maxThreadsPerBlock's answers by kernel. */
  private readonly threadLimits = new Map<string, number>();
  /** constantWords' arrays by symbol. */
  private readonly constants = new Map<string, Uint32Array>();

  private constructor(private readonly module: unknown) {}

  /** Loads a fatbin/cubin/PTX image into `context` (current on this thread). */
  static load(context: CudaContext, image: Uint8Array): CudaModule {
    const out: unknown[] = [null];
    const result = driver().cuModuleLoadData(out, image);
    if (result !== CUDA_SUCCESS) throw new KernelError("MODULE_MISSING", `cuModuleLoadData failed with ${errorName(driver(), result)}: the kernel image has no code for ${context.info.name} (sm_${context.info.computeCapability})`, { actual: result });
    return new CudaModule(out[0]);
  }

  /** Launches `name` on the default stream (asynchronous: synchronize or download to wait). */
  launch(name: string, shape: LaunchShape, args: readonly KernelArgument[]): void {
    const d = driver();
    const fn = this.function(name);
    const sharedBytes = shape.sharedBytes ?? 0;
    if (sharedBytes > DEFAULT_SHARED_LIMIT_BYTES) this.optIn(name, fn, sharedBytes);
    // cuLaunchKernel takes an array of pointers, one to each argument's value.
    const values = args.map((a) =>
      "pointer" in a ? new BigUint64Array([a.pointer])
      : "i64" in a ? new BigInt64Array([BigInt(a.i64)])
      : "i32" in a ? new Int32Array([a.i32])
      : "u32" in a ? new Uint32Array([a.u32])
      : "f64" in a ? new Float64Array([a.f64])
      : new Float32Array([a.f32]),
    );
    const [gx, gy = 1, gz = 1] = shape.grid;
    const [bx, by = 1, bz = 1] = shape.block;
    check(`cuLaunchKernel(${name}, grid ${gx}×${gy}×${gz}, block ${bx}×${by}×${bz})`, d.cuLaunchKernel(fn, gx, gy, gz, bx, by, bz, sharedBytes, null, values, null));
  }

  /**
   * Blocks of `name` that one multiprocessor holds at once with `threads` threads and
   * `sharedBytes` of dynamic shared memory each (its registers, shared memory and launch bounds
   * decide; 0 when one block does not fit). Opts the kernel in to that much shared memory first.
   */
  residentBlocks(name: string, threads: number, sharedBytes: number): number {
    const key = `${name}/${threads}/${sharedBytes}`;
    const known = this.resident.get(key);
    if (known !== undefined) return known;
    const fn = this.function(name);
    if (sharedBytes > DEFAULT_SHARED_LIMIT_BYTES) this.optIn(name, fn, sharedBytes);
    const blocks = [0];
    check(`cuOccupancyMaxActiveBlocksPerMultiprocessor(${name}, ${threads} threads, ${sharedBytes} B shared)`, driver().cuOccupancyMaxActiveBlocksPerMultiprocessor(blocks, fn, threads, sharedBytes));
    this.resident.set(key, blocks[0]!);
    return blocks[0]!;
  }

  /**
   * The most threads a block of `name` may have: its `__launch_bounds__` where it declares them
   * (a kernel that checks blockDim against its bounds thus tells the host its block size), else
   * what its registers allow on this device.
   */
  maxThreadsPerBlock(name: string): number {
    let threads = this.threadLimits.get(name);
    if (threads === undefined) {
      const value = [0];
      check(`cuFuncGetAttribute(${name}, max threads per block)`, driver().cuFuncGetAttribute(value, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, this.function(name)));
      threads = value[0]!;
      this.threadLimits.set(name, threads);
    }
    return threads;
  }

  /**
   * The words of the image's `extern "C" __constant__ uint32_t name[]`: how a kernel source
   * declares a number the host needs too (a size, a launch constant) once. Read from the device
   * once per module; MODULE_MISSING when the image lacks the symbol.
   */
  constantWords(name: string): Uint32Array {
    let words = this.constants.get(name);
    if (words === undefined) {
      const d = driver();
      const pointer = [0n];
      const bytes = [0];
      const result = d.cuModuleGetGlobal_v2(pointer, bytes, this.module, name);
      if (result !== CUDA_SUCCESS) throw new KernelError("MODULE_MISSING", `constant ${name} is not in the loaded image (${errorName(d, result)})`, { actual: result });
      const size = Number(bytes[0]);
      if (size % 4 !== 0) throw new KernelError("MODULE_MISSING", `constant ${name} is ${size} bytes, not whole 32-bit words`, { expected: "a multiple of 4", actual: size });
      words = new Uint32Array(size / 4);
      check(`cuMemcpyDtoH(${name}, ${size} B)`, d.cuMemcpyDtoH_v2(words, BigInt(pointer[0]!), size));
      this.constants.set(name, words);
    }
    return words;
  }

  private function(name: string): unknown {
    let fn = this.functions.get(name);
    if (fn === undefined) {
      const out: unknown[] = [null];
      const d = driver();
      const result = d.cuModuleGetFunction(out, this.module, name);
      if (result !== CUDA_SUCCESS) throw new KernelError("MODULE_MISSING", `kernel ${name} is not in the loaded image (${errorName(d, result)})`, { actual: result });
      fn = out[0];
      this.functions.set(name, fn);
    }
    return fn;
  }

  /** Above 48 KiB of dynamic shared memory a kernel must opt in (once; the largest asked so far stays). */
  private optIn(name: string, fn: unknown, sharedBytes: number): void {
    if ((this.optedIn.get(name) ?? 0) >= sharedBytes) return;
    check(`cuFuncSetAttribute(${name}, max dynamic shared memory ${sharedBytes} B)`, driver().cuFuncSetAttribute(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, sharedBytes));
    this.optedIn.set(name, sharedBytes);
  }

  unload(): void {
    driver().cuModuleUnload(this.module);
  }
}
