import { checkDequantize } from "./block-math.js";
import type { GgmlTypeCodec } from "./types.js";

/**
 * ggml's plain element types I8, I16, I32, I64 and F64 (ids 24–28, ggml.h): one element per
 * "block", little-endian. llama.cpp models do not use them for weights; GGUF files carry them
 * for index and auxiliary tensors, and lmpack's `--keep-packed` GGUF stores packed arrays in them
 * (converters/gguf/keep-packed.ts). Dequantization is the value as float32 (rounded where the
 * integer or double does not fit), for inspection only; `quantize` is absent: these tensors are
 * written from their bytes.
 */

function raw(id: number, name: string, typeSize: number, read: (view: DataView, at: number) => number): GgmlTypeCodec {
  const codec: GgmlTypeCodec = {
    id,
    name,
    blockSize: 1,
    typeSize,
    dequantize(src, blocks, out) {
      checkDequantize(codec, src, blocks, out);
      const view = new DataView(src.buffer, src.byteOffset, src.byteLength);
      for (let i = 0; i < blocks; i++) out[i] = read(view, i * typeSize);
    },
  };
  return codec;
}

export const RAW_TYPES: readonly GgmlTypeCodec[] = [
  raw(24, "I8", 1, (v, at) => v.getInt8(at)),
  raw(25, "I16", 2, (v, at) => v.getInt16(at, true)),
  raw(26, "I32", 4, (v, at) => v.getInt32(at, true)),
  raw(27, "I64", 8, (v, at) => Number(v.getBigInt64(at, true))),
  raw(28, "F64", 8, (v, at) => v.getFloat64(at, true)),
];
