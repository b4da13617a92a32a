import { hessianStore } from "../../../converters/hessians/store.js";
import { BufferSource } from "../../../converters/io/random-access.js";
import { SafetensorsFile } from "../../../converters/safetensors/reader.js";
import { typedErrorsOnly } from "../harness.js";

/**
 * safetensors: the header (length prefix, strict JSON, entries, offsets, tiling) and every tensor's
 * bytes read back in chunks; then the same file as a Hessian store (metadata JSON, aliases, each
 * square F32/F64 tensor as a Hessian), the one reader that interprets safetensors metadata.
 */
export async function fuzz(data: Buffer): Promise<void> {
  await typedErrorsOnly(data, async () => {
    const file = await SafetensorsFile.fromSource(new BufferSource(data, "fuzz.safetensors"));
    for (const t of file.tensors) for await (const _chunk of file.readChunks(t.name, 4096));
    const store = await hessianStore(file);
    try {
      for (const t of file.tensors) await store.get(t.name, t.shape[0] ?? 0);
    } finally {
      await store.close();
    }
  });
}
