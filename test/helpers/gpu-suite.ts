import { suite, type Test } from "uvu";
import { GpuEngine, gpuAvailable } from "../../kernels/engine.js";

/** What every GPU suite's tests receive: the engine, plus what the suite's own hooks add. */
export type GpuContext<Extra extends object> = { engine: GpuEngine } & Extra;

/**
 * A uvu suite for GPU tests. With a device, the engine is opened before the first test (its
 * description printed with `describeDevice`) and closed after the last, which frees the pooled
 * device memory and releases the context (so `compute-sanitizer --leak-check full` stays clean);
 * `available` is true and the caller registers its tests. Without one, the suite holds a single
 * test that prints why the GPU tests skip, so CI's output says so. The caller runs the suite.
 *
 *   const { gpu, available } = await gpuSuite("kernels/x: GPU = CPU");
 *   if (available) gpu("…", ({ engine }) => { … });
 *   gpu.run();
 *
 * Further before hooks a suite registers run after the engine is open (uvu runs hooks in order).
 */
export async function gpuSuite<Extra extends object = Record<never, never>>(
  name: string,
  options: { describeDevice?: boolean } = {},
): Promise<{ gpu: Test<GpuContext<Extra>>; available: boolean }> {
  const probe = await gpuAvailable();
  const gpu = suite(name, {} as GpuContext<Extra>);
  if (!probe.ok) {
    gpu("GPU tests skipped", () => console.log(`  skipped: no GPU (${probe.reason})`));
    return { gpu, available: false };
  }
  gpu.before(async (context) => {
    context.engine = await GpuEngine.open();
    if (options.describeDevice === true) console.log(`  device: ${context.engine.describe()}`);
  });
  // A failed open leaves no engine to close.
  gpu.after((context) => (context as Partial<GpuContext<Extra>>).engine?.close());
  return { gpu, available: true };
}
