import { KernelError } from "../../formats/errors.js";
import type { DeferredUpdates } from "../../formats/second-order/gptq-loop.js";

/**
 * `--device auto|cuda|cpu` for the second-order quantizers (GPTQ, SpQR, VPTQ): with a GPU, the
 * GPTQ loop's deferred updates run there (kernels/linalg/gptq-deferred.ts). The GPU engine is
 * imported only when a GPU is asked for or found.
 */
export type DeviceChoice = "auto" | "cuda" | "cpu";

export const DEVICE_CHOICES = ["auto", "cuda", "cpu"] as const;

export interface QuantizerDevice {
  /** "cpu", or the GPU's name. */
  description: string;
  deferred: DeferredUpdates | undefined;
  close(): void;
}

export async function openQuantizerDevice(choice: DeviceChoice): Promise<QuantizerDevice> {
  const cpu: QuantizerDevice = { description: "cpu", deferred: undefined, close: () => undefined };
  if (choice === "cpu") return cpu;
  const { GpuEngine, gpuAvailable } = await import("../../kernels/engine.js");
  const probe = await gpuAvailable();
  if (!probe.ok) {
    if (choice === "cuda") throw new KernelError("NO_DEVICE", `--device cuda: ${probe.reason}`);
    return cpu;
  }
  const engine = await GpuEngine.open();
  const { gpuDeferredUpdates } = await import("../../kernels/linalg/gptq-deferred.js");
  const deferred = gpuDeferredUpdates(engine);
  return {
    description: engine.describe(),
    deferred,
    close: () => {
      deferred.release();
      engine.close();
    },
  };
}
