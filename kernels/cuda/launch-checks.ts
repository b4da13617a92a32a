import { KernelError } from "../../formats/errors.js";
import type { DevicePointer } from "./driver.js";

/** A device buffer and how many elements of its type it holds: what extents are checked against. */
export interface DeviceArray {
  pointer: DevicePointer;
  elements: number;
}

/**
 * The host-side checks every launch wrapper makes before a kernel sees a size or a buffer
 * (kernels/forward/launch.ts, kernels/block-grad/launch.ts): refusals are KernelError
 * LAUNCH_REFUSED naming `<subject> <kernel>`.
 */
export interface LaunchChecks {
  refuse(kernel: string, detail: string, expected: unknown, actual: unknown): KernelError;
  /** `value` is a safe integer ≥ `minimum`. */
  checkCount(kernel: string, name: string, value: number, minimum: number): void;
  /** The launch reads or writes elements offset … offset + needed − 1 of `array`, a non-null device pointer. */
  checkExtent(kernel: string, name: string, array: DeviceArray, needed: number, offset?: number): void;
}

/** The checks with refusals worded "`subject` `kernel`: …" (e.g. "forward lq_fwd_rope: …"). */
export function launchChecks(subject: string): LaunchChecks {
  const refuse = (kernel: string, detail: string, expected: unknown, actual: unknown): KernelError => new KernelError("LAUNCH_REFUSED", `${subject} ${kernel}: ${detail}`, { expected, actual });
  return {
    refuse,
    checkCount(kernel, name, value, minimum) {
      if (!(Number.isSafeInteger(value) && value >= minimum)) throw refuse(kernel, `${name} must be an integer ≥ ${minimum}`, `≥ ${minimum}`, value);
    },
    checkExtent(kernel, name, array, needed, offset = 0) {
      if (!(Number.isSafeInteger(offset) && offset >= 0)) throw refuse(kernel, `${name}: the offset must be an element count`, "≥ 0", offset);
      if (!Number.isSafeInteger(offset + needed)) throw refuse(kernel, `${name}: the extent is past the safe integers`, "< 2^53", offset + needed);
      if (!(typeof array.pointer === "bigint" && array.pointer > 0n)) throw refuse(kernel, `${name} must be a device pointer`, "a non-null CUdeviceptr", array.pointer);
      if (array.elements < offset + needed) throw refuse(kernel, `${name} holds fewer elements than the launch touches`, `≥ ${offset + needed}`, array.elements);
    },
  };
}
