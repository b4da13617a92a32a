/**
 * Quantizers of the K-quant types Q2_K … Q6_K, bit for bit as ggml's reference C code
 * `quantize_row_q{2,3,4,5,6}_K_ref` (src/ggml-quants.c at llama.cpp c392e509), the path
 * `llama-quantize` takes without an importance matrix. gguf-py has no K-quant quantizer.
 *
 * Each writes whole 256-element super-blocks in ggml's block byte layout (src/ggml-common.h,
 * ../shared/ref/gguf-onnx.md §1.3), the layout the codecs in q2_k.ts … q6_k.ts decode. The
 * block writers live in k-quantize-affine.ts (Q2_K, Q4_K, Q5_K: scale and min per sub-block)
 * and k-quantize-symmetric.ts (Q3_K, Q6_K), the scale searches in k-quantize-scales.ts.
 *
 * Every scale is searched in float32, quantized against the block's fp16 super-scale, and the
 * codes are then recomputed from the stored fp16 and integer scales, so that decoding sees
 * exactly the scale the codes were fitted to. Bit-exact for finite inputs (golden vectors and
 * how they were made: test/fixtures/ggml-k/README.md). NaN inputs give in-range codes whose
 * bits may differ from C's, which depend on the hardware's NaN payloads.
 */

import { quantizeQ2K, quantizeQ4K, quantizeQ5K, Q2_K_BYTES, Q4_K_BYTES, Q5_K_BYTES } from "./k-quantize-affine.js";
import { QK } from "./k-quantize-scales.js";
import { quantizeQ3K, quantizeQ6K, Q3_K_BYTES, Q6_K_BYTES } from "./k-quantize-symmetric.js";

export type KQuantName = "Q2_K" | "Q3_K" | "Q4_K" | "Q5_K" | "Q6_K";
/** Encodes `blocks` super-blocks of `x` (blocks · 256 elements) into `out` (blocks · type size bytes). */
export type KQuantizer = (x: Float32Array, blocks: number, out: Uint8Array) => void;

/** Bytes per super-block. */
export const K_TYPE_SIZE: Readonly<Record<KQuantName, number>> = Object.freeze({
  Q2_K: Q2_K_BYTES,
  Q3_K: Q3_K_BYTES,
  Q4_K: Q4_K_BYTES,
  Q5_K: Q5_K_BYTES,
  Q6_K: Q6_K_BYTES,
});

/**
 * Entry check: a whole non-negative block count, enough input and room for the output. Longer
 * buffers are allowed; only the first blocks · 256 elements are read and the first
 * blocks · type size bytes written.
 */
function checked(name: KQuantName, quantize: KQuantizer): KQuantizer {
  const typeSize = K_TYPE_SIZE[name];
  return (x, blocks, out) => {
    if (!Number.isSafeInteger(blocks) || blocks < 0) {
      throw new RangeError(`${name}: block count must be a non-negative integer, got ${blocks}`);
    }
    if (x.length < blocks * QK) {
      throw new RangeError(`${name}: ${blocks} blocks need ${blocks * QK} input elements, got ${x.length}`);
    }
    if (out.length < blocks * typeSize) {
      throw new RangeError(`${name}: ${blocks} blocks need room for ${blocks * typeSize} output bytes, got ${out.length}`);
    }
    quantize(x, blocks, out);
  };
}

/** The K-quant quantizers by gguf-py type name; each validates its lengths (RangeError). */
export const K_QUANTIZERS: Readonly<Record<KQuantName, KQuantizer>> = Object.freeze({
  Q2_K: checked("Q2_K", quantizeQ2K),
  Q3_K: checked("Q3_K", quantizeQ3K),
  Q4_K: checked("Q4_K", quantizeQ4K),
  Q5_K: checked("Q5_K", quantizeQ5K),
  Q6_K: checked("Q6_K", quantizeQ6K),
});
