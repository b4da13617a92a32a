/**
 * Hermetic byte builder for safetensors files, for hostile-input tests: takes the header as
 * a raw JSON string (so tests can write duplicates, bad numbers, bad UTF-8 via `headerBytes`)
 * and the data section as bytes, and lets a test override the 8-byte length prefix.
 */
export interface BuildOptions {
  header?: string;
  headerBytes?: Uint8Array;
  data?: Uint8Array;
  /** Value written into the 8-byte length prefix instead of the real header length. */
  lengthPrefix?: bigint;
}

export function buildSafetensors(options: BuildOptions): Uint8Array {
  const header = options.headerBytes ?? new TextEncoder().encode(options.header ?? "{}");
  const data = options.data ?? new Uint8Array(0);
  const out = new Uint8Array(8 + header.length + data.length);
  new DataView(out.buffer).setBigUint64(0, options.lengthPrefix ?? BigInt(header.length), true);
  out.set(header, 8);
  out.set(data, 8 + header.length);
  return out;
}

/** A valid header JSON for tensors laid out back to back (name, dtype, shape). */
export function contiguousHeader(tensors: { name: string; dtype: string; shape: number[]; bytesPerElement: number }[]): { header: string; dataBytes: number } {
  const entries: Record<string, unknown> = {};
  let offset = 0;
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1) * t.bytesPerElement;
    entries[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + n] };
    offset += n;
  }
  return { header: JSON.stringify(entries), dataBytes: offset };
}
