import { dtypeBytes, isConvertibleFloat, type DType, type FloatDType, type TargetFloatDType } from "../formats/dtype.js";
import { convertFloatBytes } from "../formats/dense/convert.js";
import type { TensorEntry } from "./checkpoint.js";
import { BufferRing } from "./io/buffer-ring.js";
import { DEFAULT_CHUNK_BYTES } from "./io/read-range.js";

/** Receives byte counts as a conversion streams; the CLI draws a progress bar from it. */
export interface ProgressSink {
  start(totalBytes: number): void;
  advance(bytes: number, label: string): void;
  finish(): void;
}

/**
 * The dtype a dense tensor is written in: the requested float dtype for float tensors;
 * integer, bool and fp8 tensors keep theirs (widening fp8 without its scales would be wrong).
 */
export function outputDtype(entry: TensorEntry, requested: TargetFloatDType | undefined): DType {
  return requested !== undefined && isConvertibleFloat(entry.dtype) ? requested : entry.dtype;
}

/** How many reads `prefetch` keeps ahead of the consumer. */
const PREFETCH_DEPTH = 1;

/**
 * Streams tensors for an export, chunk by chunk, with the next read in flight while a chunk is
 * converted and written, and with all chunk memory recycled (see io/buffer-ring.ts for why).
 *
 * The contract: a yielded chunk is valid until the consumer asks for the next one. Our writers
 * keep it: they hash and write a chunk (awaiting the write) before pulling the next. Reads use a
 * ring of 2 (the chunk in use, and the one prefetched), conversions a ring of 1 (the chunk in use).
 * One ChunkStream serves a whole export, so the buffers are faulted in once, not per tensor.
 */
export class ChunkStream {
  private readonly readRing = new BufferRing(PREFETCH_DEPTH + 1);
  private readonly convertRing = new BufferRing(1);

  constructor(private readonly progress?: ProgressSink, private readonly chunkBytes = DEFAULT_CHUNK_BYTES) {}

  async *chunks(entry: TensorEntry, to: DType): AsyncGenerator<Uint8Array> {
    const from = entry.dtype;
    for await (const chunk of prefetch(entry.readChunks(this.chunkBytes, this.readRing))) {
      this.progress?.advance(chunk.length, entry.name);
      if (to === from) {
        yield chunk;
      } else {
        const outBytes = (chunk.length / dtypeBytes(from)) * dtypeBytes(to);
        yield convertFloatBytes(chunk, from as FloatDType, to as FloatDType, this.convertRing.take(outBytes));
      }
    }
  }
}

/** Keeps one `next()` of `source` in flight while the consumer works on the current item. */
export async function* prefetch<T>(source: AsyncIterable<T>): AsyncGenerator<T> {
  const iterator = source[Symbol.asyncIterator]();
  // A read that fails while the consumer is still busy must not count as an unhandled
  // rejection (Node would exit): mark it handled now; awaiting it below still throws.
  const next = () => {
    const promise = iterator.next();
    promise.catch(() => undefined);
    return promise;
  };
  let pending = next();
  try {
    while (true) {
      const result = await pending;
      if (result.done === true) return;
      pending = next();
      yield result.value;
    }
  } finally {
    // On early exit, settle the read in flight (its error, if any, is no longer anyone's) and close the source.
    pending.then(() => iterator.return?.(), () => undefined);
  }
}

/**
 * config.json text for a conversion to `dtype`: the `dtype` / `torch_dtype` values are
 * replaced in place, so everything else (number spellings like 1e-05, key order, spacing)
 * stays byte for byte as the source wrote it. A config without either key gets `torch_dtype`.
 */
export function configTextWithDtype(text: string | undefined, dtype: TargetFloatDType | undefined): string | undefined {
  if (text === undefined || dtype === undefined) return text;
  const torchName = { F32: "float32", F16: "float16", BF16: "bfloat16" }[dtype];
  let replaced = false;
  const out = text.replace(/("(?:torch_)?dtype"\s*:\s*)"[^"\\]*"/g, (_match, key: string) => {
    replaced = true;
    return `${key}"${torchName}"`;
  });
  if (replaced) return out;
  return JSON.stringify({ ...(JSON.parse(text) as Record<string, unknown>), torch_dtype: torchName }, null, 2) + "\n";
}

/** Total bytes a conversion reads, for progress bars. */
export function totalSourceBytes(tensors: readonly TensorEntry[]): number {
  return tensors.reduce((sum, t) => sum + t.byteLength, 0);
}

/**
 * config.json for a dense export of a checkpoint whose packed tensors were dequantized: the
 * `quantization_config` must go (loaders would otherwise expect packed tensors), and the dtype
 * becomes what the tensors now are. Unquantized sources keep their text byte for byte.
 */
export function denseConfigText(text: string | undefined, dequantized: boolean, dtype: TargetFloatDType | undefined, packedDtype: TargetFloatDType | undefined): string | undefined {
  if (text === undefined || !dequantized) return configTextWithDtype(text, dtype);
  const { quantization_config: _dropped, ...rest } = JSON.parse(text) as Record<string, unknown>;
  return configTextWithDtype(JSON.stringify(rest, null, 2) + "\n", dtype ?? packedDtype);
}
