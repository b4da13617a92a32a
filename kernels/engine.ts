import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { KernelError } from "../formats/errors.js";
import { openCublas, type CublasAvailability } from "./cuda/cublas.js";
import type { CudaContext } from "./cuda/driver.js";
import { CudaModule } from "./cuda/module.js";

/**
 * The GPU engine: one CUDA context and the kernel modules loaded from dist/kernels/<format>.fatbin
 * (kernels/build.mjs). The driver binding (cuda/driver.ts, koffi) is imported only when a GPU
 * is asked for, so users without one never load it.
 */

/** Kernel folders (kernels/<name>/<name>.cu): the formats, and linalg for the quantizers' products. */
export type KernelFormat = "int-group" | "fpx" | "spqr" | "vptq" | "ggml" | "linalg" | "kmeans" | "signround" | "forward" | "forward-bf16" | "block-grad" | "second-order" | "stream";

const FATBIN_DIR = join(dirname(fileURLToPath(import.meta.url)));

export class GpuEngine {
  private readonly modules = new Map<KernelFormat, CudaModule>();
  /** cuBLAS for this engine's context, or why there is none; looked for on the first large product. */
  private blas: CublasAvailability | undefined;

  private constructor(readonly context: CudaContext) {}

  /** Opens device `ordinal`; KernelError NO_DEVICE when there is no usable GPU. */
  static async open(ordinal = 0): Promise<GpuEngine> {
    const { CudaContext, probeDevice } = await import("./cuda/driver.js");
    const probe = probeDevice();
    if (!probe.ok) throw new KernelError("NO_DEVICE", probe.reason);
    return new GpuEngine(CudaContext.open(ordinal));
  }

  /** The module of `format`, loaded from its fatbin on first use. */
  module(format: KernelFormat): CudaModule {
    let module = this.modules.get(format);
    if (module === undefined) {
      const path = join(FATBIN_DIR, `${format}.fatbin`);
      if (!existsSync(path)) throw new KernelError("MODULE_MISSING", `no kernel image ${path}: build with nvcc present (npm run build)`, { file: path });
      module = CudaModule.load(this.context, readFileSync(path));
      this.modules.set(format, module);
    }
    return module;
  }

  /**
   * The engine's cuBLAS handle, created on first use in this engine's context (cuda/cublas.ts:
   * where the library is searched for, and LMPACK_CUBLAS), or why there is none. Decided once
   * per engine.
   */
  cublas(): CublasAvailability {
    if (this.blas === undefined) this.blas = openCublas(this.context);
    return this.blas;
  }

  /** Destroys the cuBLAS handle, unloads the modules, frees pooled device memory and releases the context. */
  close(): void {
    // The handle's workspace lives in the context: free it while the context is still current.
    const blas = this.blas;
    this.blas = undefined;
    try {
      if (blas?.ok === true) blas.handle.destroy();
    } finally {
      for (const module of this.modules.values()) module.unload();
      this.modules.clear();
      this.context.close();
    }
  }

  /** "NVIDIA H100 80GB HBM3 (sm_90)". */
  describe(): string {
    return `${this.context.info.name} (sm_${this.context.info.computeCapability})`;
  }
}

/** Whether a GPU engine can be opened here, and why not. */
export async function gpuAvailable(): Promise<{ ok: true } | { ok: false; reason: string }> {
  try {
    const { probeDevice } = await import("./cuda/driver.js");
    return probeDevice();
  } catch (error) {
    return { ok: false, reason: (error as Error).message };
  }
}
