import { readQuipHessianFile } from "../../../converters/hessians/quip-import.js";
import { BufferSource } from "../../../converters/io/random-access.js";
import { typedErrorsOnly } from "../harness.js";

/**
 * QuIP# / VPTQ Hessian files (torch.save): the ZIP directory and entries, the restricted pickle
 * machine (it never executes code: unknown globals and opcodes are typed errors), tensor geometry
 * against storages, and flatH / mu / n / ct into a K×K Hessian.
 */
export async function fuzz(data: Buffer): Promise<void> {
  await typedErrorsOnly(data, async () => {
    await readQuipHessianFile(new BufferSource(data, "0_qkv.pt"));
  });
}
