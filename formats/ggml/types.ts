/**
 * ggml tensor types (the element encodings of GGUF tensors): one codec per type, registered by
 * its ggml type id (formats/ggml/registry.ts). A codec works on whole rows: a row of `n`
 * elements (n a multiple of `blockSize`) occupies n / blockSize · typeSize bytes, the blocks back
 * to back, exactly the byte image a GGUF tensor with ne[0] = n stores.
 *
 * Block byte layouts follow ggml's src/ggml-common.h structs (../shared/ref/gguf-onnx.md §1.3),
 * each declared once, in the type's own module.
 */

export interface GgmlTypeCodec {
  /** ggml type id (GGMLQuantizationType). */
  readonly id: number;
  /** gguf-py's name: "F32", "Q4_0", "Q4_K", "IQ2_XXS", ... */
  readonly name: string;
  /** Elements per block (1 for F32/F16/BF16). */
  readonly blockSize: number;
  /** Bytes per block. */
  readonly typeSize: number;
  /**
   * Decodes `blocks` whole blocks from `src` (at byteOffset 0 of the view) into `out`
   * (blocks · blockSize elements), bit for bit as gguf-py's `dequantize` (float32 results).
   */
  dequantize(src: Uint8Array, blocks: number, out: Float32Array): void;
  /**
   * Encodes `x` (blocks · blockSize elements) into `out` (blocks · typeSize bytes), bit for bit as
   * gguf-py's `quantize` where gguf-py has one, else as ggml's reference `quantize_row_*_ref`.
   * Absent for types lmpack only reads.
   */
  quantize?(x: Float32Array, blocks: number, out: Uint8Array): void;
}

/** Bytes of a row of `elements` elements of `codec`. Throws RangeError when not whole blocks. */
export function rowBytes(codec: GgmlTypeCodec, elements: number): number {
  if (!Number.isSafeInteger(elements) || elements < 0 || elements % codec.blockSize !== 0) {
    throw new RangeError(`${codec.name}: a row of ${elements} elements is not a whole number of ${codec.blockSize}-element blocks`);
  }
  return (elements / codec.blockSize) * codec.typeSize;
}
