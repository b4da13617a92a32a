import { KernelError } from "../../formats/errors.js";
import type { DeferredUpdates } from "../../formats/second-order/gptq-loop.js";
import type { PrepareOptions } from "../../formats/second-order/prepare.js";
import type { HessianProducts } from "../../converters/hessians/calibrate.js";
import type { SignRoundBackendFactory } from "../../formats/int-group/quantizers/signround-grad.js";
import type { CodebookSearch } from "../../formats/vptq/codebook.js";
import type { KMeansBackend } from "../../formats/vptq/kmeans.js";
import type { VptqResidentLoop } from "../../formats/vptq/resident.js";
import type { GptqResidentLoop } from "../../formats/int-group/quantizers/gptq-resident.js";
import type { GpuEngine } from "../../kernels/engine.js";
import type { LayerEnergyBackend } from "../../converters/int-group/layer-errors.js";

/**
 * `--device auto|cuda|cpu` for the second-order quantizers (GPTQ, SpQR, VPTQ) and SignRound: with
 * a GPU, the GPTQ loop's deferred updates (kernels/linalg/gptq-deferred.ts) and SignRound's tuning
 * steps (kernels/signround/signround-gpu.ts) run there. The GPU engine is imported only when a
 * GPU is asked for or found.
 */
export type DeviceChoice = "auto" | "cuda" | "cpu";

export const DEVICE_CHOICES = ["auto", "cuda", "cpu"] as const;

export interface QuantizerDevice {
  /** "cpu", or the GPU's name. */
  description: string;
  deferred: DeferredUpdates | undefined;
  /** GPTQ's U = chol(H⁻¹)ᵀ on the GPU (kernels/linalg/cholesky-gpu.ts); the CPU's when undefined. */
  factorize: PrepareOptions["factorize"];
  /** SignRound's iterations on the GPU; the CPU's SignRoundLayer when undefined. */
  signround: SignRoundBackendFactory | undefined;
  /** VPTQ's k-means (Lloyd) and codebook searches on the GPU (kernels/kmeans); the CPU's when undefined. */
  kmeans: KMeansBackend | undefined;
  codebookSearch: CodebookSearch | undefined;
  /** VPTQ's whole GPTQ loop on the GPU (kernels/second-order/vptq-columns-gpu.ts); the host loop with the pieces above when undefined. */
  vptqLoop: VptqResidentLoop | undefined;
  /** GPTQ's whole column loop on the GPU (kernels/second-order/int-columns-gpu.ts); the host loop with `deferred` when undefined. */
  gptqLoop: GptqResidentLoop | undefined;
  /** The per-layer report's tr(ΔW H ΔWᵀ) / tr(W H Wᵀ) on the GPU (kernels/linalg/energies-gpu.ts); the CPU's when undefined. */
  energies: LayerEnergyBackend | undefined;
  /** The GPU itself (sequential calibration runs its forward there); undefined on the CPU. */
  engine: GpuEngine | undefined;
  close(): void;
}

export async function openQuantizerDevice(choice: DeviceChoice): Promise<QuantizerDevice> {
  const cpu: QuantizerDevice = { description: "cpu", deferred: undefined, factorize: undefined, signround: undefined, kmeans: undefined, codebookSearch: undefined, vptqLoop: undefined, gptqLoop: undefined, energies: undefined, engine: undefined, close: () => undefined };
  if (choice === "cpu") return cpu;
  const { GpuEngine, gpuAvailable } = await import("../../kernels/engine.js");
  const probe = await gpuAvailable();
  if (!probe.ok) {
    if (choice === "cuda") throw new KernelError("NO_DEVICE", `--device cuda: ${probe.reason}`);
    return cpu;
  }
  const engine = await GpuEngine.open();
  const { gpuDeferredUpdates } = await import("../../kernels/linalg/gptq-deferred.js");
  const { gpuFactorize } = await import("../../kernels/linalg/cholesky-gpu.js");
  const { gpuSignRound } = await import("../../kernels/signround/signround-gpu.js");
  const { gpuLloyd } = await import("../../kernels/kmeans/lloyd-gpu.js");
  const { gpuCodebookSearch } = await import("../../kernels/kmeans/search-gpu.js");
  const { gpuVptqLoop } = await import("../../kernels/second-order/vptq-columns-gpu.js");
  const { gpuLayerEnergies } = await import("../../kernels/linalg/energies-gpu.js");
  const { gpuGptqLoop } = await import("../../kernels/second-order/int-columns-gpu.js");
  const deferred = gpuDeferredUpdates(engine);
  const codebookSearch = gpuCodebookSearch(engine);
  return {
    description: engine.describe(),
    deferred,
    factorize: gpuFactorize(engine),
    signround: gpuSignRound(engine),
    kmeans: gpuLloyd(engine),
    codebookSearch,
    vptqLoop: gpuVptqLoop(engine),
    gptqLoop: gpuGptqLoop(engine),
    energies: gpuLayerEnergies(engine),
    engine,
    close: () => {
      deferred.release();
      codebookSearch.release();
      engine.close();
    },
  };
}

/**
 * `--device` for `lmpack calibrate`: with a GPU, H += XᵀX runs there, one H per layer input on
 * the device (kernels/linalg/hessian-accumulate.ts, X rounded to float32); otherwise in host
 * memory, float64 throughout.
 */
export interface CalibrationDevice {
  /** "cpu", or the GPU's name. */
  description: string;
  products: HessianProducts | undefined;
  /** The GPU, where the forward runs too (kernels/forward); undefined on the CPU. */
  engine: GpuEngine | undefined;
  close(): void;
}

export async function openCalibrationDevice(choice: DeviceChoice): Promise<CalibrationDevice> {
  const cpu: CalibrationDevice = { description: "cpu", products: undefined, engine: undefined, close: () => undefined };
  if (choice === "cpu") return cpu;
  const { GpuEngine, gpuAvailable } = await import("../../kernels/engine.js");
  const probe = await gpuAvailable();
  if (!probe.ok) {
    if (choice === "cuda") throw new KernelError("NO_DEVICE", `--device cuda: ${probe.reason}`);
    return cpu;
  }
  const engine = await GpuEngine.open();
  const { GpuHessians } = await import("../../kernels/linalg/hessian-accumulate.js");
  const products = new GpuHessians(engine);
  return {
    description: engine.describe(),
    products,
    engine,
    close: () => {
      products.release();
      engine.close();
    },
  };
}
