import { ggufCheckpoint } from "../../../converters/gguf/import.js";
import { GgufFile } from "../../../converters/gguf/reader.js";
import { BufferSource } from "../../../converters/io/random-access.js";
import { isLmpackError } from "../../../formats/errors.js";
import { consumeCheckpoint, typedErrorsOnly } from "../harness.js";

/**
 * GGUF: the header (KVs of every type, nested arrays, tensor infos, alignment, data ranges), then
 * the file as a checkpoint (llama config from the KVs, HF names, Q/K un-permutation, kept packed
 * tensors, Q4_0/Q8_0 as integer groups) with every tensor dequantized by its ggml codec.
 */
export async function fuzz(data: Buffer): Promise<void> {
  await typedErrorsOnly(data, async () => {
    const file = await GgufFile.fromSource(new BufferSource(data, "fuzz.gguf"));
    const checkpoint = await ggufCheckpoint(file);
    for (const t of file.tensors) {
      try {
        await checkpoint.readGgufTensor(t.name);
      } catch (error) {
        if (!isLmpackError(error)) throw error;
      }
    }
    await consumeCheckpoint(checkpoint);
  });
}
