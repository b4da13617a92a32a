import { KernelError } from "../../formats/errors.js";
import { check, driver, type CudaContext, type DevicePointer } from "./driver.js";

/**
 * Kernel timing for benchmarks. CudaContext.time records its first event before the host makes
 * the launch call, so each time includes the host's launch latency (tens of µs through koffi and
 * the argument marshalling), on kernels of about 0.1 ms. Here one event is recorded, `launches`
 * calls are enqueued back to back, a second event is recorded, and the time between the events
 * is divided by the count: the GPU runs the launches one after another while the host is still
 * enqueuing, so what is left of the host's share is its pace, which a batch only shows when it
 * is slower than the kernel (`hostMilliseconds` says so).
 *
 * Each batch is led by as many untimed launches, enqueued before its first event: the GPU works
 * through them while the host enqueues the timed ones, so a host stall shorter than their run
 * (a garbage collection, a slow FFI call) leaves no idle gap between the events. Without the lead,
 * benches on the H100 (issue 9, 2026-11-24) now and then read a kernel at a third of its speed in
 * every batch of a row (int-group 8-bit f32 at 32.2 %, marked host-bound, against 91.4 %; SpQR f32
 * at 31.4 % against 84.6 %).
 */

/** Batches of back-to-back launches: `batches` measurements of `launchesPerBatch` launches each. */
export interface BatchTiming {
  batches: number;
  launchesPerBatch: number;
}

export interface BatchTimes {
  /** Per batch, GPU milliseconds between the events divided by launchesPerBatch. */
  milliseconds: number[];
  /** Per batch, host milliseconds spent enqueuing, divided by launchesPerBatch. */
  hostMilliseconds: number[];
}

/** Mean time per launch of `enqueue` (asynchronous work on the default stream), batch by batch. */
export function timeBatches(enqueue: () => void, timing: BatchTiming): BatchTimes {
  const { batches, launchesPerBatch } = timing;
  if (!(Number.isSafeInteger(batches) && batches >= 1 && Number.isSafeInteger(launchesPerBatch) && launchesPerBatch >= 1)) {
    throw new KernelError("LAUNCH_REFUSED", "batch timing needs whole numbers of batches and launches, each ≥ 1", { expected: "≥ 1", actual: [batches, launchesPerBatch] });
  }
  const d = driver();
  const start: unknown[] = [null];
  const end: unknown[] = [null];
  check("cuEventCreate", d.cuEventCreate(start, 0));
  try {
    check("cuEventCreate", d.cuEventCreate(end, 0));
    try {
      const times: BatchTimes = { milliseconds: [], hostMilliseconds: [] };
      for (let batch = 0; batch < batches; batch++) {
        for (let launch = 0; launch < launchesPerBatch; launch++) enqueue();
        const started = performance.now();
        check("cuEventRecord", d.cuEventRecord(start[0], null));
        for (let launch = 0; launch < launchesPerBatch; launch++) enqueue();
        check("cuEventRecord", d.cuEventRecord(end[0], null));
        times.hostMilliseconds.push((performance.now() - started) / launchesPerBatch);
        check("cuEventSynchronize", d.cuEventSynchronize(end[0]));
        const milliseconds = [0];
        check("cuEventElapsedTime", d.cuEventElapsedTime(milliseconds, start[0], end[0]));
        times.milliseconds.push(milliseconds[0]! / launchesPerBatch);
      }
      return times;
    } finally {
      d.cuEventDestroy_v2(end[0]);
    }
  } finally {
    d.cuEventDestroy_v2(start[0]);
  }
}

/** The `launches` and `batchTiming` options every kernels/<format>/launch.ts takes. */
export interface LaunchTimingOptions {
  /**
   * Launches on the same buffers, each timed alone with its status word zeroed first (the first
   * also pays for the first touch of freshly allocated output memory); default 1. Results are
   * those of the last launch.
   */
  launches?: number;
  /** After those, batches of back-to-back launches timed as timeBatches does (benchmarks). */
  batchTiming?: BatchTiming;
}

export interface LaunchTimes {
  /** Kernel time of every launch of `launches` (CudaContext.time: host launch latency included). */
  launchMilliseconds: number[];
  /** With `batchTiming`: timeBatches's result. */
  batchTimes?: BatchTimes;
}

/**
 * The launch loop of the launch.ts files: `launches` single timed launches, each after zeroing
 * the status word, then the batches, whose launches leave the status word as it is (every launch
 * is the same, so any bit it sets is one the single launches set too; zeroing between them would
 * put a memset into the timed stream).
 */
export function runLaunches(context: CudaContext, status: DevicePointer, enqueue: () => void, options: LaunchTimingOptions): LaunchTimes {
  const launchMilliseconds: number[] = [];
  for (let launch = 0; launch < Math.max(1, options.launches ?? 1); launch++) {
    context.zero(status, 4);
    launchMilliseconds.push(context.time(enqueue));
  }
  return options.batchTiming === undefined ? { launchMilliseconds } : { launchMilliseconds, batchTimes: timeBatches(enqueue, options.batchTiming) };
}

/** The median of `values` (the upper one of an even count). */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}
