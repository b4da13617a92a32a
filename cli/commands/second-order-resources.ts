import type { ArgumentsCamelCase } from "yargs";
import { openCheckpoint } from "../../converters/open.js";
import type { HessianSource } from "../../formats/second-order/hessian.js";
import { openQuantizerDevice, type QuantizerDevice } from "./device.js";
import { hessianSource, type QuantizeArgs } from "./quantize.js";

export type OpenedCheckpoint = Awaited<ReturnType<typeof openCheckpoint>>;

/**
 * `quantize --method spqr|vptq`'s resources, opened in order (the device first: --device cuda
 * without a GPU fails before anything is opened; then the checkpoint; then the Hessians) and
 * closed in reverse order whichever step throws (a missing checkpoint, a bad --hessians, an
 * existing --out). `banner` says on stderr what runs where, unless --json.
 */
export async function withSecondOrderResources(args: ArgumentsCamelCase<QuantizeArgs>, banner: (device: QuantizerDevice) => string, run: (device: QuantizerDevice, checkpoint: OpenedCheckpoint, store: HessianSource) => Promise<number>): Promise<number> {
  const device = await openQuantizerDevice(args.device);
  try {
    if (!args.json) console.error(banner(device));
    const checkpoint = await openCheckpoint(args.src);
    try {
      const store = await hessianSource(args.hessians, checkpoint, args, device.engine);
      try {
        // The callers refuse a missing --hessians before anything is opened.
        return await run(device, checkpoint, store!);
      } finally {
        await store?.close?.();
      }
    } finally {
      await checkpoint.close();
    }
  } finally {
    device.close();
  }
}
