import { KernelError } from "../../formats/errors.js";
import type { CudaContext, DevicePointer } from "./driver.js";

/** The bits of kernels/common/status.h. */
export const STATUS_BITS = { codeRange: 1 << 0, indexRange: 1 << 1, shape: 1 << 2 } as const;

/** Reads a kernel's status word; KernelError KERNEL_STATUS naming the format and shape when set. */
export function checkStatus(context: CudaContext, status: DevicePointer, what: { format: string; tensor?: string; shape: string }): void {
  const word = new Uint32Array(1);
  context.download(status, new Uint8Array(word.buffer));
  if (word[0] === 0) return;
  const bits = word[0]!;
  const reasons = [bits & STATUS_BITS.codeRange ? "a code wider than the format's bits" : "", bits & STATUS_BITS.indexRange ? "a group index or zero point out of range" : "", bits & STATUS_BITS.shape ? "an impossible shape" : ""].filter((r) => r !== "");
  throw new KernelError("KERNEL_STATUS", `${what.format} kernel on ${what.shape}: ${reasons.join(", ")} (status 0x${bits.toString(16)})`, { tensor: what.tensor, actual: bits });
}
