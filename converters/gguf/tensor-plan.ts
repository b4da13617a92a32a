import { UsageError } from "../../formats/errors.js";
import { ggmlCodecByName } from "../../formats/ggml/registry.js";
import type { GgmlTypeCodec } from "../../formats/ggml/types.js";

/**
 * Which ggml type each tensor of a llama export gets (the "recipe"):
 *  - 1-D tensors (norms, biases): F32, as convert_hf_to_gguf writes them;
 *  - the output matrix (lm_head, or token_embd when the embedding is tied and doubles as it):
 *    Q6_K when the main type is a lower-precision quantization, as llama-quantize does, since
 *    the head's error reaches every logit directly;
 *  - every other 2-D weight: the main type;
 *  - a row length the type's blocks do not divide falls back as llama-quantize falls back
 *    (Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, lower K/IQ types → Q4_0 here, since lmpack has no
 *    IQ4_NL encoder), then to F16. Every fallback is reported.
 */

/** Types lmpack can write (they have an encoder). */
export const WRITABLE_TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "TQ1_0", "TQ2_0"] as const;

/** Lower precision than Q6_K: the output matrix is kept at Q6_K (llama-quantize's rule). */
const BELOW_Q6K = new Set(["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "TQ1_0", "TQ2_0"]);

const FALLBACK: Record<string, string> = { Q2_K: "Q4_0", Q3_K: "Q4_0", Q4_K: "Q5_0", Q5_K: "Q5_1", Q6_K: "Q8_0", TQ1_0: "Q4_0", TQ2_0: "Q4_0", Q4_0: "F16", Q4_1: "F16", Q5_0: "F16", Q5_1: "F16", Q8_0: "F16" };

export interface TensorTypeChoice {
  codec: GgmlTypeCodec;
  /** Why it is not the main type, when it is not. */
  reason: string | undefined;
}

export interface RecipeOptions {
  mainType: string;
  /** Override for the output matrix (lm_head, or the tied embedding). */
  outputType?: string;
  /** Override for token_embd when it is not the output matrix. */
  embeddingType?: string;
}

export function writableCodec(name: string): GgmlTypeCodec {
  const upper = name.toUpperCase();
  const codec = ggmlCodecByName(upper);
  if (codec === undefined || !(WRITABLE_TYPES as readonly string[]).includes(upper)) {
    throw new UsageError("BAD_ARGUMENT", `GGUF export cannot write type ${name}`, { actual: name, expected: WRITABLE_TYPES.join(", ") });
  }
  return codec;
}

/** The type of one tensor: `ggufName` with `shape` (row-major; the last dim is the row), in a model whose embedding is `tied` or not. */
export function chooseTensorType(ggufName: string, shape: readonly number[], tied: boolean, options: RecipeOptions): TensorTypeChoice {
  if (shape.length < 2) return { codec: writableCodec("F32"), reason: undefined };
  const isOutput = ggufName === "output.weight" || (tied && ggufName === "token_embd.weight");
  let wanted = options.mainType.toUpperCase();
  let reason: string | undefined;
  if (isOutput) {
    if (options.outputType !== undefined) wanted = options.outputType.toUpperCase();
    else if (BELOW_Q6K.has(wanted)) [wanted, reason] = ["Q6_K", "output matrix kept at Q6_K"];
  } else if (ggufName === "token_embd.weight" && options.embeddingType !== undefined) {
    wanted = options.embeddingType.toUpperCase();
  }
  const row = shape[shape.length - 1]!;
  let codec = writableCodec(wanted);
  while (row % codec.blockSize !== 0) {
    const next = FALLBACK[codec.name] ?? "F16";
    reason = `rows of ${row} are not whole ${codec.name} blocks of ${codec.blockSize}: ${next}`;
    codec = writableCodec(next);
  }
  return { codec, reason };
}
